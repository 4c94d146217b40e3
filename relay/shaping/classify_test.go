package shaping

import (
	"context"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	set := Settings{Providers: []Provider{
		{Name: "google", MX: []string{".google.com", ".googlemail.com"}},
		{Name: "exact", MX: []string{"mx.exact.example."}},
		{Name: "ms", MX: []string{"*.protection.outlook.com"}},
		{Name: "shadowed", MX: []string{".google.com"}},
	}}
	s := &Shaper{}
	s.set.Store(compile(set, 1))
	cases := []struct {
		name, dest string
		mx         []string
		want       Class
	}{
		{"gmail", "gmail.com", []string{"gmail-smtp-in.l.google.com"}, Class{"google", "google"}},
		{"googlemail", "googlemail.com", []string{"gmail-smtp-in.l.google.com."}, Class{"google", "google"}},
		{"workspace aspmx", "shop.example", []string{"ASPMX.L.GOOGLE.COM.", "alt1.aspmx.l.google.com"}, Class{"google", "google"}},
		{"suffix itself", "google.com", []string{"google.com"}, Class{"google", "google"}},
		{"later host matches", "mixed.example", []string{"mx.other.example", "alt2.aspmx.l.google.com"}, Class{"google", "google"}},
		{"suffix needs a dot", "evil.example", []string{"mx.evilgoogle.com"}, Class{"", "dest:evil.example"}},
		{"exact name", "exact.example", []string{"MX.Exact.Example"}, Class{"exact", "exact"}},
		{"exact is not a suffix", "sub.example", []string{"a.mx.exact.example"}, Class{"", "dest:sub.example"}},
		{"star pattern", "contoso.example", []string{"contoso-example.mail.protection.outlook.com"}, Class{"ms", "ms"}},
		{"no provider", "example.org", []string{"mx.example.org"}, Class{"", "dest:example.org"}},
		{"no mx", "example.net", nil, Class{"", "dest:example.net"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.Classify(tc.dest, tc.mx); got != tc.want {
				t.Fatalf("Classify(%s, %v) = %+v, want %+v", tc.dest, tc.mx, got, tc.want)
			}
		})
	}
}

func TestRateText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rate
	}{{"", Rate{}}, {"60/m", Rate{60, 60e9}}, {"10/s", Rate{10, 1e9}}, {"5/h", Rate{5, 3600e9}}, {"3/90s", Rate{3, 90e9}}} {
		var r Rate
		if err := r.UnmarshalText([]byte(tc.in)); err != nil || r != tc.want {
			t.Fatalf("UnmarshalText(%q) = %v, %v; want %v", tc.in, r, err, tc.want)
		}
		if tc.in != "" && r.String() != tc.in && tc.in != "3/90s" {
			t.Fatalf("String() = %q, want %q", r.String(), tc.in)
		}
	}
	for _, bad := range []string{"x", "5", "-1/m", "5/fortnight"} {
		var r Rate
		if r.UnmarshalText([]byte(bad)) == nil {
			t.Fatalf("UnmarshalText(%q) accepted", bad)
		}
	}
	if b := (Rate{60, 60e9}).Burst(); b != 3 {
		t.Fatalf("Burst of 60/m = %d, want 3", b)
	}
}

func TestKeyPart(t *testing.T) {
	for _, s := range []string{"google", "yahoo-aol", "dest:example.com", "a.b", "", "=x", "Ä"} {
		p := kp(s)
		back, ok := unkp(p)
		if s != "" && (!ok || back != s) {
			t.Fatalf("kp(%q) = %q reverses to %q, %v", s, p, back, ok)
		}
		if !keyTokenOK(p) {
			t.Fatalf("kp(%q) = %q is no KV key token", s, p)
		}
	}
}

// keyTokenOK: a KV key token without dots or wildcards.
func keyTokenOK(p string) bool {
	for _, r := range p {
		if !(r == '-' || r == '_' || r == '=' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Idle default destinations are forgotten; their waiters are woken.
func TestForgetIdle(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := &Shaper{classes: map[string]*class{}, held: map[*Conn]struct{}{}, now: func() time.Time { return now }}
	s.set.Store(compile(Settings{Default: Limits{Connections: 1}}, 1))
	busy, idle := s.Classify("busy.example", nil), s.Classify("idle.example", nil)
	conn, _, ok := s.Connect(context.Background(), busy, "")
	c2, _, ok2 := s.Connect(context.Background(), idle, "")
	if !ok || !ok2 {
		t.Fatal("connect refused")
	}
	c2.Release()
	woke := s.Changed(idle)
	now = now.Add(idleAfter + time.Second)
	s.forgetIdle()
	select {
	case <-woke:
	default:
		t.Fatal("waiter of a forgotten class not woken")
	}
	if len(s.classes) != 1 || s.classes[busy.Key] == nil {
		t.Fatalf("classes left: %v", s.classes)
	}
	if _, _, ok := s.Connect(context.Background(), idle, ""); !ok {
		t.Fatal("forgotten class refuses a connection")
	}
	conn.Release()
}
