package submit

import (
	"crypto/tls"
	"strings"
	"testing"
)

func TestTLSNamesMatchCryptoTLS(t *testing.T) {
	ids := []uint16{0x0000, 0x1234, 0xffff} // unknown: crypto/tls's "0x1234" form
	for _, c := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		ids = append(ids, c.ID)
	}
	for _, id := range ids {
		if got, want := cipherSuiteName(id), tls.CipherSuiteName(id); got != want {
			t.Errorf("cipherSuiteName(%#04x) = %q, want %q", id, got, want)
		}
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12, tls.VersionTLS13, 0x0305} {
		if got, want := tlsVersionName(v), strings.ReplaceAll(tls.VersionName(v), " ", ""); got != want {
			t.Errorf("tlsVersionName(%#04x) = %q, want %q", v, got, want)
		}
	}
	if got := tlsVersionName(tls.VersionTLS13); got != "TLS1.3" {
		t.Errorf("tlsVersionName(TLS 1.3) = %q", got)
	}
}
