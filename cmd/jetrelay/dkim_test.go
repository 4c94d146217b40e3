package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/jetrelay/jetrelay/dkim"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/miekg/dns"
)

// runCmd runs jetrelay with args and returns the exit code and both streams.
func runCmd(t *testing.T, args ...string) (rc int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	rc = run(args, stdio{strings.NewReader(""), &out, &errb})
	return rc, out.String(), errb.String()
}

// keygen runs `jetrelay dkim keygen` into dir and returns the key file and the printed line.
func keygen(t *testing.T, dir, selector string, extra ...string) (keyFile, line string) {
	t.Helper()
	keyFile = filepath.Join(dir, selector+".pem")
	args := []string{"dkim", "keygen", "--domain", "example.com", "--selector", selector, "--out", keyFile}
	args = append(args, extra...)
	rc, out, errOut := runCmd(t, args...)
	if rc != 0 {
		t.Fatalf("keygen rc=%d: %s", rc, errOut)
	}
	return keyFile, strings.TrimSuffix(out, "\n")
}

// writeConfig writes a config whose resolver is dnsAddr and returns its path.
func writeConfig(t *testing.T, dir, dnsAddr string, keys ...string) string {
	t.Helper()
	cfg := fmt.Sprintf("delivery:\n  dns: {servers: [%q], timeout: 2s}\ndkim:\n  keys:\n", dnsAddr)
	for _, k := range keys {
		cfg += "    - " + k + "\n"
	}
	p := filepath.Join(dir, "jetrelay.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The keygen output, served by a DNS server, verifies signatures made with
// the key file it wrote: RSA and Ed25519, dual-signed.
func TestDKIMKeygenSignVerify(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rsaFile, rsaLine := keygen(t, dir, "rsa2026")
	edFile, edLine := keygen(t, dir, "ed2026", "--algo", "ed25519")
	for _, f := range []string{rsaFile, edFile} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", f, fi.Mode(), err)
		}
	}
	if !strings.HasPrefix(rsaLine, `rsa2026._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=`) ||
		!strings.HasPrefix(edLine, `ed2026._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=`) {
		t.Fatalf("lines:\n%s\n%s", rsaLine, edLine)
	}
	fake := relaytest.NewZone()
	fake.AddLine(t, rsaLine)
	fake.AddLine(t, edLine)
	s, err := dkim.NewSigner([]dkim.KeySpec{
		{Domain: "example.com", Selector: "rsa2026", KeyFile: rsaFile, Sign: true},
		{Domain: "example.com", Selector: "ed2026", KeyFile: edFile, Sign: true},
	}, dkim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n")
	sigs, result, err := s.Sign(msg)
	if err != nil || result != "d=example.com s=rsa2026,ed2026" {
		t.Fatalf("Sign: %q %v", result, err)
	}
	signed := bytes.NewReader(append(sigs, msg...))
	vs, err := msgauth.VerifyWithOptions(signed, &msgauth.VerifyOptions{LookupTXT: fake.LookupTXT})
	if err != nil || len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil {
		t.Fatalf("verify: %v %+v", err, vs)
	}
}

func TestDKIMKeygenRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	existing, _ := keygen(t, dir, "s1", "--algo", "ed25519")
	before, _ := os.ReadFile(existing)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"overwrite", []string{"--domain", "example.com", "--selector", "s1", "--out", existing}, "refusing to overwrite"},
		{"no out", []string{"--domain", "example.com", "--selector", "s2"}, "required"},
		{"bits for ed25519", []string{"--domain", "example.com", "--selector", "s2",
			"--algo", "ed25519", "--bits", "4096", "--out", filepath.Join(dir, "x")}, "rsa keys only"},
		{"weak RSA", []string{"--domain", "example.com", "--selector", "s2",
			"--bits", "512", "--out", filepath.Join(dir, "y")}, "out of range"},
		{"bad algo", []string{"--domain", "example.com", "--selector", "s2",
			"--algo", "dsa", "--out", filepath.Join(dir, "z")}, "unknown key algorithm"},
		{"bad selector", []string{"--domain", "example.com", "--selector", "a b",
			"--out", filepath.Join(dir, "w")}, "bad selector"},
	}
	for _, tc := range cases {
		rc, _, errOut := runCmd(t, append([]string{"dkim", "keygen"}, tc.args...)...)
		if rc != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: rc=%d stderr=%q, want 2 and %q", tc.name, rc, errOut, tc.want)
		}
	}
	if after, _ := os.ReadFile(existing); !bytes.Equal(before, after) {
		t.Error("existing key file was changed")
	}
	for _, f := range []string{"x", "y", "z", "w"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("refused keygen left %s behind", f)
		}
	}
}

func TestDKIMHelp(t *testing.T) {
	t.Parallel()
	helps := [][]string{
		{"dkim", "--help"}, {"dkim", "keygen", "--help"}, {"dkim", "dns", "--help"}, {"dkim", "check", "--help"},
	}
	for _, args := range helps {
		rc, out, _ := runCmd(t, args...)
		if rc != 0 || !strings.Contains(out, "Usage: jetrelay dkim") {
			t.Errorf("%v: rc=%d out=%q", args, rc, out)
		}
	}
	if rc, _, _ := runCmd(t, "dkim", "rotate"); rc != 2 {
		t.Errorf("unknown subcommand: rc=%d", rc)
	}
}

func TestDKIMDNSPrintsConfiguredRecords(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	k1, line1 := keygen(t, dir, "s1", "--algo", "ed25519")
	k2, line2 := keygen(t, dir, "s0", "--algo", "ed25519")
	cfg := writeConfig(t, dir, "127.0.0.1",
		fmt.Sprintf("{domain: example.com, selector: s1, key: %s}", k1),
		fmt.Sprintf("{domain: example.com, selector: s0, key: %s, sign: false}", k2))
	rc, out, errOut := runCmd(t, "dkim", "dns", "--config", cfg, "--domain", "Example.com")
	if rc != 0 {
		t.Fatalf("rc=%d %s", rc, errOut)
	}
	want := line1 + "\n" + line2 + " ; sign: false (published, not signing)\n"
	if out != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out, want)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if _, err := dns.NewRR(l); err != nil {
			t.Errorf("%q: %v", l, err)
		}
	}
	if rc, _, _ := runCmd(t, "dkim", "dns", "--config", cfg, "--domain", "example.org"); rc != 1 {
		t.Errorf("no keys for domain: rc=%d, want 1", rc)
	}
}

func TestDKIMCheckAgainstDNS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile, line := keygen(t, dir, "s1", "--algo", "ed25519")
	_, otherLine := keygen(t, dir, "other", "--algo", "ed25519")
	fake, addr := relaytest.ServeZone(t)
	cfg := writeConfig(t, dir, addr, fmt.Sprintf("{domain: example.com, selector: s1, key: %s}", keyFile))
	cases := []struct {
		name   string
		record string // zone line served; "" = nothing
		rc     int
		want   string
	}{
		{"match", line, 0, "s1._domainkey.example.com: OK: matches the ed25519 key"},
		{"other key", strings.Replace(otherLine, "other._domainkey", "s1._domainkey", 1), 1,
			"MISMATCH: p= is a different public key"},
		{"missing", "", 1, "MISSING: not published"},
	}
	for _, tc := range cases { // sequential: they share the fake DNS
		fake.Reset()
		if tc.record != "" {
			fake.AddLine(t, tc.record)
		}
		rc, out, errOut := runCmd(t, "dkim", "check", "--config", cfg, "--domain", "example.com")
		if rc != tc.rc || !strings.Contains(out, tc.want) {
			t.Errorf("%s: rc=%d out=%q err=%q; want rc=%d and %q", tc.name, rc, out, errOut, tc.rc, tc.want)
		}
		if tc.rc != 0 && !strings.Contains(out, line) {
			t.Errorf("%s: the record to publish is not shown: %q", tc.name, out)
		}
	}
}

// `jetrelay check` reports weak, refused, exposed and missing key files
// with their YAML lines.
func TestCheckReportsDKIMKeyProblems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeKey := func(name string, pemBytes []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pemBytes, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	k1024, err := dkim.GenerateKey(dkim.RSA, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pem1024, _ := dkim.MarshalKey(k1024)
	pem512, err := os.ReadFile("../../dkim/testdata/rsa512.pem")
	if err != nil {
		t.Fatal(err)
	}
	edFile, _ := keygen(t, dir, "ed", "--algo", "ed25519")
	edPEM, _ := os.ReadFile(edFile)
	cfg := writeConfig(t, dir, "127.0.0.1",
		"{domain: example.com, selector: weak, key: "+writeKey("1024.pem", pem1024, 0o600)+"}", // line 5
		"{domain: example.com, selector: tiny, key: "+writeKey("512.pem", pem512, 0o600)+"}",   // line 6
		"{domain: example.com, selector: open, key: "+writeKey("open.pem", edPEM, 0o644)+"}",   // line 7
		"{domain: example.com, selector: gone, key: "+filepath.Join(dir, "gone.pem")+"}",       // line 8
		"{domain: example.com, selector: ed, key: "+edFile+"}")                                 // line 9
	rc, out, _ := runCmd(t, "check", "--config", cfg)
	if rc != 1 {
		t.Errorf("rc=%d, want 1", rc)
	}
	wants := []string{
		"warning: line 5: dkim.keys[0].key: " + filepath.Join(dir, "1024.pem") +
			": 1024-bit RSA key; RFC 8301 §3.1 recommends 2048 bits",
		"line 6: dkim.keys[1].key: refused: " + filepath.Join(dir, "512.pem") + ": 512-bit RSA key is shorter than 1024 bits",
		"warning: line 7: dkim.keys[2].key: key file " + filepath.Join(dir, "open.pem") +
			" is accessible by group or others (mode 0644)",
		"line 8: dkim.keys[3].key: file " + filepath.Join(dir, "gone.pem") + " does not exist",
	}
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if n := strings.Count(out, "gone.pem"); n != 1 {
		t.Errorf("missing file reported %d times, want once:\n%s", n, out)
	}
	if strings.Contains(out, "dkim.keys[4]") {
		t.Errorf("a good key was reported:\n%s", out)
	}
}

// serve builds its signer from the config: parent_domains, lifetime and
// sign: false carry over, and a bad key stops the start.
func TestNewDKIMSignerFromConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile, _ := keygen(t, dir, "s1", "--algo", "ed25519")
	oldFile, _ := keygen(t, dir, "old", "--algo", "ed25519")
	path := writeConfig(t, dir, "127.0.0.1",
		"{domain: example.com, selector: s1, key: "+keyFile+"}",
		"{domain: example.com, selector: old, key: "+oldFile+", sign: false}")
	extra := "  parent_domains: true\n  lifetime: 1h\n"
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append(data, extra...), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newDKIMSigner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sigs, result, err := s.Sign([]byte("From: a@mail.example.com\r\n\r\nx\r\n"))
	if err != nil || result != "d=example.com s=s1" || !bytes.Contains(sigs, []byte(" x=")) {
		t.Fatalf("Sign: %q %v\n%s", result, err, sigs)
	}
	if err := os.WriteFile(oldFile, []byte("broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newDKIMSigner(cfg); err == nil {
		t.Fatal("a broken sign: false key did not stop the start")
	}
}

// dkim check's TXT lookups go through relay/dnsclient: strings of one
// record concatenated, a missing name is dkim.ErrNoRecord.
func TestDKIMLookupTXTThroughDNSClient(t *testing.T) {
	t.Parallel()
	_, addr := relaytest.ServeZone(t, `s1._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; " "p=abc"`)
	c, err := dnsclient.New(dnsclient.Options{Servers: []string{addr}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r := dnsTXT{c}
	got, err := r.LookupTXT(context.Background(), "S1._domainkey.example.com.")
	if err != nil || len(got) != 1 || got[0] != "v=DKIM1; k=ed25519; p=abc" {
		t.Fatalf("LookupTXT = %q, %v", got, err)
	}
	if _, err := r.LookupTXT(context.Background(), "s2._domainkey.example.com."); !errors.Is(err, dkim.ErrNoRecord) {
		t.Errorf("missing name: %v, want ErrNoRecord", err)
	}
}

// dkim dns and dkim check list their keys as JSON with --json.
func TestDKIMListsAsJSON(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile, line := keygen(t, dir, "s1", "--algo", "ed25519")
	_, addr := relaytest.ServeZone(t, line)
	cfg := writeConfig(t, dir, addr, fmt.Sprintf("{domain: example.com, selector: s1, key: %s}", keyFile))
	rc, out, errOut := runCmd(t, "dkim", "dns", "--config", cfg, "--json")
	var recs []dnsRecord
	if err := json.Unmarshal([]byte(out), &recs); rc != 0 || err != nil || len(recs) != 1 || recs[0].Zone != line ||
		recs[0].Name != "s1._domainkey.example.com." || !recs[0].Sign {
		t.Fatalf("dkim dns --json rc=%d %v %s\n%s", rc, err, errOut, out)
	}
	rc, out, errOut = runCmd(t, "dkim", "check", "--config", cfg, "--json")
	var checks []dkim.PublishedCheck
	err := json.Unmarshal([]byte(out), &checks)
	if rc != 0 || err != nil || len(checks) != 1 || checks[0].State != dkim.Published {
		t.Fatalf("dkim check --json rc=%d %v %s\n%s", rc, err, errOut, out)
	}
}
