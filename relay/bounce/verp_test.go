package bounce

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
)

func verpFixture(t *testing.T) *fixture {
	t.Helper()
	cfg := testConfig(t)
	cfg.Bounces.VERPDomain = "bounces.relay.test"
	return newFixture(t, cfg)
}

func TestVERPRoundTrip(t *testing.T) {
	t.Parallel()
	f := verpFixture(t)
	ctx := context.Background()
	env := origEnv()
	addr := verpOf(t, f.b, env, "Bob@Example.org")
	local := addr[:strings.IndexByte(addr, '@')]
	if !strings.HasPrefix(addr, "b+") || !strings.HasSuffix(addr, "@bounces.relay.test") || len(local) > 64 {
		t.Fatalf("VERP sender %q: want b+<token>@bounces.relay.test with a local part of at most 64 octets "+
			"(RFC 5321 §4.5.3.1.1)", addr)
	}
	if again := verpOf(t, f.b, env, "bob@example.org"); again != addr {
		t.Errorf("not deterministic: %q then %q", addr, again)
	}
	for _, in := range []string{addr, "<" + addr + ">", strings.ToUpper(addr)} {
		qid, rcpt, ok := f.b.ParseVERP(ctx, in)
		if !ok || qid != env.ID || rcpt != "bob@example.org" {
			t.Errorf("ParseVERP(%q) = %q, %q, %v; want %s, bob@example.org, true", in, qid, rcpt, ok, env.ID)
		}
	}
	other := verpOf(t, f.b, env, "carol@example.org")
	if _, rcpt, _ := f.b.ParseVERP(ctx, other); rcpt != "carol@example.org" || other == addr {
		t.Errorf("second recipient: %q → %q", other, rcpt)
	}
}

// TestVERPForged: every single-character change of a token, other
// domains, other keys and malformed addresses are refused.
func TestVERPForged(t *testing.T) {
	t.Parallel()
	f := verpFixture(t)
	ctx := context.Background()
	addr := verpOf(t, f.b, origEnv(), "bob@example.org")
	at := strings.IndexByte(addr, '@')
	for i := len("b+"); i < at; i++ {
		c := byte('0')
		if addr[i] == '0' {
			c = '1'
		}
		forged := addr[:i] + string(c) + addr[i+1:]
		if _, _, ok := f.b.ParseVERP(ctx, forged); ok {
			t.Errorf("tampered token accepted: %s", forged)
		}
	}
	bad := []string{
		strings.Replace(addr, "bounces.relay.test", "evil.test", 1),
		strings.Replace(addr, "b+", "x+", 1),
		addr[:at-1] + addr[at:], "b+@bounces.relay.test", "", "postmaster@bounces.relay.test",
		"b+" + strings.Repeat("z", verpTokenLen) + "@bounces.relay.test",
	}
	for _, a := range bad {
		if _, _, ok := f.b.ParseVERP(ctx, a); ok {
			t.Errorf("accepted %q", a)
		}
	}
	g := verpFixture(t) // another key
	if _, _, ok := g.b.ParseVERP(ctx, addr); ok {
		t.Error("token of another key accepted")
	}
}

func TestVERPOffAndNullSender(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	env := origEnv()
	if got := verpOf(t, f.b, env, "bob@example.org"); got != env.From {
		t.Errorf("VERP off: %q, want %q", got, env.From)
	}
	g := verpFixture(t)
	env.From = ""
	if got := verpOf(t, g.b, env, "bob@example.org"); got != "" {
		t.Errorf("null sender became %q", got)
	}
}

// TestVERPRecordMissing: a genuine, current token whose record is gone
// still authenticates (for the event), and the hash identifies the
// recipient among candidates.
func TestVERPRecordMissing(t *testing.T) {
	t.Parallel()
	f := verpFixture(t)
	ctx := context.Background()
	env := origEnv()
	addr := verpOf(t, f.b, env, "bob@example.org")
	tok, _ := f.b.verifyVERP(addr)
	h := tok.h
	if err := f.b.kv.Purge(ctx, verpRecordKey(env.ID, h)); err != nil {
		t.Fatal(err)
	}
	qid, rcpt, ok := f.b.ParseVERP(ctx, addr)
	if !ok || qid != env.ID || rcpt != "" {
		t.Fatalf("ParseVERP = %q, %q, %v; want %s, \"\", true", qid, rcpt, ok, env.ID)
	}
	bn := Bounce{Rcpts: []BouncedRcpt{{Addr: "carol@example.org"}, {Addr: "BOB@example.org"}}}
	if r, ok := matchBounce(bn, "", h); !ok || r.Addr != "BOB@example.org" {
		t.Errorf("hash match = %+v, %v", r, ok)
	}
}

func TestKeyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, err %v; want 0600", st.Mode().Perm(), err)
	}
	k2, err := LoadOrCreateKey(dir)
	if err != nil || !bytes.Equal(k1, k2) || len(k1) != keyBytes {
		t.Fatalf("second load: %x vs %x, err %v", k2, k1, err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyFileName), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(dir); err == nil {
		t.Error("bad key file accepted")
	}
}

// FuzzVERP: no address makes the token check panic, and no input other
// than a minted token authenticates.
func FuzzVERP(f *testing.F) {
	cfg := config.Default()
	cfg.Bounces.VERPDomain = "bounces.relay.test"
	b := &Bouncer{now: func() time.Time { return t0 }}
	b.st.Store(&state{set: settingsOf(cfg), key: bytes.Repeat([]byte{7}, keyBytes)})
	h := rcptHash("bob@example.org")
	tok := "01jrtest0000000000000a" + encodeHours(t0) + b32.EncodeToString(h) +
		b32.EncodeToString(verpMAC(b.state().key, "01JRTEST0000000000000A", encodeHours(t0), h))
	f.Add("b+" + tok + "@bounces.relay.test")
	f.Add("<B+" + strings.ToUpper(tok) + "@Bounces.Relay.Test>")
	f.Add("b+" + tok[:22] + tok[27:] + "@bounces.relay.test")
	f.Add("b+@bounces.relay.test")
	f.Add("@")
	f.Fuzz(func(t *testing.T, addr string) {
		vt, ok := b.verifyVERP(addr)
		if !ok {
			return
		}
		if !strings.Contains(strings.ToLower(addr), tok[22:]) && !strings.Contains(strings.ToLower(addr), tok[27:]) {
			t.Fatalf("%q authenticated without a minted MAC", addr)
		}
		_ = b.expired(vt)
	})
}
