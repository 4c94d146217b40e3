package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestOneRunReportsEveryLayer: schema problems (a misspelt key, a bad
// duration, a bad rate) do not hide semantic ones (a missing certificate
// file, a misspelt enum value); each names its line, and misspellings get
// the nearest valid word.
func TestOneRunReportsEveryLayer(t *testing.T) {
	src := strings.Join([]string{
		"hostname: relay.example.com", // 1
		"submission:",                 // 2
		"  max_recipents: 10",         // 3
		"  tls:",                      // 4
		"    cert: /nonexistent/jetrelay/cert.pem",               // 5
		"    key: /nonexistent/jetrelay/key.pem",                 // 6
		"  users:",                                               // 7
		"    - name: app",                                        // 8
		"      password_hash: \"$2a$10$abcdefghijklmnopqrstuv\"", // 9
		"      allowed_from: [example.com]",                      // 10
		"      rate: 600/minute",                                 // 11
		"delivery:",                                              // 12
		"  timeouts: {connect: 30 seconds}",                      // 13
		"  routes:",                                              // 14
		"    - {domains: [\"*\"], host: \"smarthost.example:587\", tls: startls}", // 15
	}, "\n") + "\n"
	c, err := Parse([]byte(src))
	if err == nil || c == nil {
		t.Fatalf("config %v, error %v; want both", c, err)
	}
	want := []string{
		`line 3: submission.max_recipents: unknown key; did you mean "max_recipients"?`,
		`line 5: submission.tls.cert: file /nonexistent/jetrelay/cert.pem does not exist`,
		`line 6: submission.tls.key: file /nonexistent/jetrelay/key.pem does not exist`,
		`line 11: submission.users[0].rate: bad rate "600/minute": unit must be s, m, h or d; did you mean "600/m"?`,
		`line 13: delivery.timeouts.connect: bad duration "30 seconds"`,
		`line 15: delivery.routes[0].tls: "startls" is not one of starttls, implicit, none; did you mean "starttls"?`,
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(lines), len(want), err)
	}
	for i, w := range want {
		if i >= len(lines) || !strings.HasPrefix(lines[i], w) {
			t.Errorf("problem %d does not start with %q:\n%s", i, w, err)
		}
	}
	if c.Delivery.Timeouts.Connect != Default().Delivery.Timeouts.Connect {
		t.Errorf("bad duration changed the value to %v", c.Delivery.Timeouts.Connect)
	}
}

// TestBadListEntryKeepsIndexes: a bad entry in a list of durations is
// reported where it is, and the entries after it keep their own indexes
// and lines (yaml.v3 would otherwise drop it and shift the rest).
func TestBadListEntryKeepsIndexes(t *testing.T) {
	_, err := Parse([]byte("delivery:\n  retry:\n    schedule:\n      - 1m\n      - x\n      - 0\n"))
	want := "line 5: delivery.retry.schedule[1]: bad duration \"x\" (use Go durations such as 90s, 5m, 48h)\n" +
		"line 6: delivery.retry.schedule[2]: must be positive"
	if err == nil || err.Error() != want {
		t.Fatalf("error %v\nwant %s", err, want)
	}
}

// TestAliasBombBounded: a document that would expand exponentially through
// aliases (10^12 leaves) is answered at once: neither the decoder nor the
// schema walk expands a value that does not fit its setting's type.
func TestAliasBombBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 12; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n",
			i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	b.WriteString("submission: {trusted_networks: *a11}\ndelivery: {retry: {schedule: *a11}, tls: {domains: *a11}}\n")
	_, err := Parse([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "cannot unmarshal !!seq into string") {
		t.Fatalf("error %v; want the misfitting values reported", err)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n > 100 {
		t.Fatalf("%d problems: the aliases were expanded", n)
	}
}

// TestUnknownKeyWithoutNearMatchListsKeys: a key nothing resembles gets the
// list of keys valid at its path instead of a guess.
func TestUnknownKeyWithoutNearMatchListsKeys(t *testing.T) {
	_, err := Parse([]byte("log:\n  colour: blue\n"))
	want := `line 2: log.colour: unknown key (valid keys here: format, level)`
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
}

func TestDurationHint(t *testing.T) {
	for in, want := range map[string]string{
		"5 minutes": "5m", "2days": "48h", "30 seconds": "30s", "1 week": "168h", "3hrs": "3h",
		"90": "90s", "5 fortnights": "", "1.5h": "",
	} {
		if got := durationHint(in); got != want {
			t.Errorf("durationHint(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSuggest(t *testing.T) {
	cases := []struct {
		in, want string
		from     []string
	}{
		{"startls", "starttls", routeTLS},
		{"STARTTLS", "starttls", routeTLS},
		{"opportunistc", "opportunistic", tlsPolicies},
		{"hsotname", "hostname", []string{"hostname", "data_dir"}},
		{"ssl", "", listenerTLS},
		{"", "", listenerTLS},
		{"x", "", []string{"xy", "ab"}},
		{"warning", "warn", logLevels},
		{"opp", "opportunistic", tlsPolicies},
		{"max", "max_per_user", []string{"max_per_user", "window"}},
		{"max_", "", []string{"max_a", "max_b"}},
	}
	for _, tc := range cases {
		if got := suggest(tc.in, tc.from); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestHostnameWarnings: a bare or address host name is a warning (with
// its line), not a problem; a fully qualified name is neither.
func TestHostnameWarnings(t *testing.T) {
	for host, want := range map[string]string{
		"vm":                 `line 2: hostname: "vm" is not a fully qualified domain name`,
		"192.0.2.7":          `line 2: hostname: "192.0.2.7" is an address`,
		"relay.example.com":  "",
		"relay.example.com.": "",
	} {
		c, err := Parse([]byte("log: {level: info}\nhostname: " + host + "\n"))
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		ws := c.Warnings()
		switch {
		case want == "" && len(ws) != 0:
			t.Errorf("%s: unexpected warnings %v", host, ws)
		case want != "" && (len(ws) != 1 || !strings.HasPrefix(ws[0].Error(), want)):
			t.Errorf("%s: warnings %v, want one starting %q", host, ws, want)
		}
	}
}

// TestEffectiveYAMLRoundTrip: the effective configuration parses back to
// itself, with implied defaults written out and no secret in the text.
func TestEffectiveYAMLRoundTrip(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "dkim.pem")
	if err := os.WriteFile(key, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JETRELAY_TEST_ROUTE_PW", "pw")
	const hash = "$2a$10$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP"
	src := "hostname: relay.example.com\n" +
		"nats: {url: \"nats://svc:s3cret@127.0.0.1:4222,nats://tok3n@127.0.0.2:4222\"}\n" +
		"submission:\n  users:\n" +
		"    - {name: app, password_hash: \"" + hash + "\", allowed_from: [example.com], rate: 10/s}\n" +
		"delivery:\n  routes:\n    - domains: [\"*\"]\n      host: smarthost.example:587\n      tls: starttls\n" +
		"      auth: {user: relay, password_env: JETRELAY_TEST_ROUTE_PW}\n" +
		"  retry: {schedule: [90s, 1h30m], pace: \"\"}\n" +
		"dkim:\n  keys: [{domain: example.com, selector: s1, key: " + key + "}]\n"
	c, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.EffectiveYAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{hash, "s3cret", "tok3n"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("effective YAML shows secret %q:\n%s", secret, out)
		}
	}
	back, err := Parse(out)
	redacted := regexp.MustCompile(`^line \d+: submission\.users\[0\]\.password_hash: must be a bcrypt hash`)
	if err == nil || strings.Contains(err.Error(), "\n") || !redacted.MatchString(err.Error()) {
		t.Errorf("parsing the effective YAML back: %v; want only the redacted hash refused", err)
	}
	eff := c.Effective()
	if diff := cmp.Diff(eff, back, cmpopts.EquateEmpty(), cmpopts.IgnoreUnexported(Config{})); diff != "" {
		t.Fatalf("effective config does not round-trip (-want +got):\n%s\n%s", diff, out)
	}
	if eff.Delivery.Routes[0].TLSVerify == nil || !*eff.Delivery.Routes[0].TLSVerify || eff.Bounces.Suppress == nil {
		t.Errorf("implied defaults not written out: %+v", eff.Delivery.Routes[0])
	}
	if c.Submission.Users[0].PasswordHash != hash || c.Delivery.Routes[0].TLSVerify != nil {
		t.Error("Effective changed the config it was called on")
	}
}

// FuzzParse: no input panics the lenient decode, the schema walk or
// validation, and whatever decodes can be printed back.
func FuzzParse(f *testing.F) {
	f.Add([]byte("hostname: vm\nsubmision: {}\ndelivery: {retry: {schedule: [1m, x]}, routes: [{tls: startls}]}\n"))
	f.Add([]byte("a: &x {level: info}\nlog:\n  <<: *x\n  formt: json\n"))
	f.Add([]byte("delivery:\n  shaping: {providers: [{name: g, mx: [.g.example], rate: 5/d}], rules: [{providers: [g], " +
		"reply: '(', threshold: 3/x, action: {suspend: 1m, for: 1h}}]}\n  pools: {p: [nope]}\n"))
	f.Add([]byte("- 1\n- [2]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _ := Parse(data)
		if c == nil {
			return
		}
		if _, err := c.EffectiveYAML(); err != nil {
			t.Fatalf("EffectiveYAML: %v", err)
		}
		_ = c.Warnings()
	})
}

func TestCommonPath(t *testing.T) {
	for _, tc := range [][3]string{
		{"a.b[0].c", "a.b[0].d", "a.b[0]"},
		{"a.b[0]", "a.b[1]", "a.b"},
		{"a.b", "c", ""},
		{"submission.users[0].rate", "submission.users[0].rate", "submission.users[0].rate"},
	} {
		if got := commonPath(tc[0], tc[1]); got != tc[2] {
			t.Errorf("commonPath(%q, %q) = %q, want %q", tc[0], tc[1], got, tc[2])
		}
	}
}
