package proxyproto

import (
	"errors"
	"testing"
)

// FuzzHeader: Parse never panics, never takes more than the bound, asks
// for more only below the bound, depends on no byte after the header, and
// what it returns encodes back to the same header.
func FuzzHeader(f *testing.F) {
	h4 := Header{Version: 2, Transport: TCP4, Source: ap("192.0.2.10:40000"), Destination: ap("198.51.100.1:587")}
	h6 := Header{Version: 2, Transport: TCP6, Source: ap("[2001:db8::10]:1"), Destination: ap("[::1]:465")}
	for _, s := range []string{
		"PROXY TCP4 192.0.2.10 198.51.100.1 40000 587\r\nEHLO x\r\n",
		"PROXY TCP6 2001:db8::10 ::1 1 465\r\n",
		"PROXY UNKNOWN\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
		string(AppendV2(nil, h4, []byte{0x04, 0, 1, 'x'})),
		string(AppendV2(nil, h6, nil)),
		string(AppendV2(nil, Header{Version: 2, Command: Local}, nil)),
		string(v2(0x21, 0x00, nil)),
		"EHLO client.test\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		if errors.Is(err, ErrIncomplete) {
			if len(b) >= MaxHeader {
				t.Fatalf("ErrIncomplete for %d bytes", len(b))
			}
			return
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if n <= 0 || n > len(b) || n > MaxHeader || (h.Version == 1 && n > MaxV1Line) {
			t.Fatalf("took %d of %d bytes (version %d)", n, len(b), h.Version)
		}
		if h2, n2, err := Parse(b[:n]); err != nil || h2 != h || n2 != n {
			t.Fatalf("header alone: %+v %d %v, with what follows: %+v %d", h2, n2, err, h, n)
		}
		var enc []byte
		if h.Version == 1 {
			enc = AppendV1(nil, h)
		} else {
			enc = AppendV2(nil, h, nil)
		}
		if h2, n2, err := Parse(enc); err != nil || h2 != h || n2 != len(enc) {
			t.Fatalf("re-encoded %q: %+v %d %v, want %+v", enc, h2, n2, err, h)
		}
	})
}
