package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestShippedShapingFile: configs/shaping.yaml parses strictly, passes
// validation, and every provider and rule says where its numbers come
// from: a "source:" comment above the entry and a comment on each number.
func TestShippedShapingFile(t *testing.T) {
	path := filepath.Join("..", "..", "configs", "shaping.yaml")
	c, err := Parse([]byte("delivery:\n  shaping: {include: " + path + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Delivery.Shaping
	if len(s.Included.Providers) < 10 || len(s.Included.Rules) < 5 {
		t.Fatalf("included %d providers and %d rules", len(s.Included.Providers), len(s.Included.Rules))
	}
	for _, want := range []string{"google", "outlook", "office365", "yahoo", "apple", "gmx-webde", "orange",
		"mailru", "yandex"} {
		if !hasProvider(s.AllProviders(), want) {
			t.Errorf("no provider %q", want)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{"providers", "rules"} {
		list := child(root.Content[0], section)
		for i, entry := range list.Content {
			checkSourced(t, section, i, entry)
		}
	}
}

// checkSourced fails unless the entry's head comment names a source and
// every number in it carries a line comment.
func checkSourced(t *testing.T, section string, i int, entry *yaml.Node) {
	t.Helper()
	head := entry.HeadComment
	if len(entry.Content) > 0 {
		head += entry.Content[0].HeadComment
	}
	if !strings.Contains(head, "source:") {
		t.Errorf("%s[%d] has no \"source:\" comment above it", section, i)
	}
	for j := 0; j+1 < len(entry.Content); j += 2 {
		k, v := entry.Content[j], entry.Content[j+1]
		if k.Value == "name" || k.Value == "mx" || k.Value == "providers" || k.Value == "reply" {
			continue
		}
		if strings.TrimSpace(v.LineComment+k.LineComment) == "" {
			t.Errorf("%s[%d].%s (line %d) has no comment saying where its value comes from", section, i, k.Value, k.Line)
		}
	}
}

func hasProvider(ps []Provider, name string) bool {
	for _, p := range ps {
		if p.Name == name {
			return true
		}
	}
	return false
}

// TestShapingValidation: every problem of the shaping, sources and pools
// keys at once, each with its path.
func TestShapingValidation(t *testing.T) {
	src := `delivery:
  max_per_destination: 5
  shaping:
    default: {connections: 7, per_connection: -1}
    providers:
      - {name: google, mx: [".google.com"], connections: -2, rate: 10/w}
      - {name: google, mx: ["bad host!"]}
      - {name: "Bad Name", mx: []}
    rules:
      - {providers: [nobody], reply: "(", threshold: 3/10m, action: {suspend: 30m, rate: 1/m}}
      - {providers: ["*"], reply: "x", threshold: 0/10m, action: {rate: 300/m}}
      - {providers: [google], reply: "x", threshold: 1/m, action: {for: 1h}}
      - {providers: [], reply: "", action: {}}
    backoff_for: 0s
  sources:
    - {name: a, address: 203.0.113.10, ehlo: mta-a.example.com}
    - {name: a, address: not-an-ip, ehlo: bare}
  source_ip: 203.0.113.9
  pools: {default: [a, nope], empty: []}
submission:
  users:
    - {name: u, password_hash: "$2a$10$x", allowed_from: [example.com], pool: missing}
`
	_, err := Parse([]byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{
		"delivery.max_per_destination: is an alias of delivery.shaping.default.connections",
		"delivery.shaping.default.per_connection: must not be negative",
		`line 6: delivery.shaping.providers[0].rate: bad rate "10/w"`,
		"delivery.shaping.providers[0].connections: must not be negative",
		`delivery.shaping.providers[1].name: provider "google" is defined twice`,
		`delivery.shaping.providers[1].mx[0]: "bad host!" is not a host name`,
		`delivery.shaping.providers[2].name: "Bad Name" must be a name`,
		"delivery.shaping.providers[2].mx: list the MX host suffixes",
		`delivery.shaping.rules[0].providers[0]: "nobody" is not a provider`,
		"delivery.shaping.rules[0].reply: bad regular expression",
		"delivery.shaping.rules[0].action: either suspend, or rate with for",
		`delivery.shaping.rules[1].threshold: bad threshold "0/10m"`,
		"delivery.shaping.rules[1].action.for: say how long",
		"delivery.shaping.rules[2].action.rate: say the lower rate",
		"delivery.shaping.rules[3].providers: name the providers",
		"delivery.shaping.rules[3].reply: give a regular expression",
		"delivery.shaping.rules[3].threshold: give a threshold",
		"delivery.shaping.rules[3].action: give {suspend: 30m}",
		"delivery.shaping.backoff_for: must be greater than zero",
		`delivery.sources[1].name: source "a" is defined twice`,
		`delivery.sources[1].address: "not-an-ip" is not an IP address`,
		`delivery.sources[1].ehlo: "bare" is not a fully qualified domain name`,
		"delivery.source_ip: set either source_ip or sources",
		`delivery.pools.default[1]: "nope" is not a source`,
		`delivery.pools.empty: list the sources of pool "empty"`,
		`submission.users[0].pool: "missing" is not a pool`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q", w)
		}
	}
	if t.Failed() {
		t.Log(err)
	}
}

// TestShapingParse: a valid section decodes to what the relay uses, and
// max_per_destination and shaping.default.connections are one setting.
func TestShapingParse(t *testing.T) {
	c, err := Parse([]byte(`delivery:
  shaping:
    default: {connections: 4, rate: 100/d}
    providers:
      - {name: google, mx: [".google.com"], connections: 20, rate: 3000/m, per_connection: 100,
         connection_rate: 60/m, per_source: true}
    rules:
      - {providers: ["google"], reply: "4\\.7\\.28|unusual rate", threshold: 3/10m, action: {suspend: 30m}}
      - {name: slow, providers: ["*"], reply: "x", threshold: 2/h, action: {rate: 300/m, for: 1h}}
  sources: [{name: a, address: "127.0.0.11"}, {name: b, address: "::1", ehlo: mta-b.example.com}]
  pools: {default: [a, b], marketing: [b]}
submission:
  users:
    - {name: u, password_hash: "$2a$10$x", allowed_from: [example.com], pool: marketing}
`))
	if err != nil {
		t.Fatal(err)
	}
	d := c.Delivery
	if d.MaxPerDestination != 4 || d.Shaping.Default.Rate.Per != 24*time.Hour || d.Shaping.Default.PerConnection != 100 {
		t.Errorf("default: %+v, max_per_destination %d", d.Shaping.Default, d.MaxPerDestination)
	}
	p := d.Shaping.Providers[0]
	if p.Connections != 20 || p.Rate.Count != 3000 || p.ConnectionRate.Per != time.Minute || !p.PerSource {
		t.Errorf("provider: %+v", p)
	}
	r := d.Shaping.Rules
	if r[0].Threshold != (Threshold{3, 10 * time.Minute}) || r[0].Action.Suspend.D() != 30*time.Minute ||
		r[1].Threshold.Window != time.Hour || r[1].Action.Rate.Count != 300 || r[1].Action.For.D() != time.Hour {
		t.Errorf("rules: %+v", r)
	}
	if re, _ := ReplyPattern(r[0].Reply); !re.MatchString("421 4.7.28 Our system has detected an UNUSUAL RATE") {
		t.Error("reply pattern is not case-insensitive")
	}
	if d.Shaping.BackoffFor.D() != 15*time.Minute || len(d.Sources) != 2 || d.Pools["marketing"][0] != "b" ||
		c.Submission.Users[0].Pool != "marketing" {
		t.Errorf("delivery: %+v", d)
	}
	c, err = Parse([]byte("delivery: {max_per_destination: 3}\n"))
	if err != nil || c.Delivery.Shaping.Default.Connections != 3 {
		t.Errorf("alias: %v %+v", err, c.Delivery.Shaping.Default)
	}
	c, err = Parse([]byte("delivery: {max_per_destination: 3, shaping: {default: {connections: 3}}}\n"))
	if err != nil || c.Delivery.MaxPerDestination != 3 {
		t.Errorf("both set alike: %v", err)
	}
}

// TestShapingInclude: the included file's providers come after the
// config's own, an own entry replaces an included one of the same name,
// rules may name included providers, and the included file's problems
// name the file and its lines.
func TestShapingInclude(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("shaping.yaml", "providers:\n  - {name: google, mx: [.google.com], connections: 5}\n"+
		"  - {name: yahoo, mx: [.yahoodns.net], per_connection: 20}\n"+
		"rules:\n  - {providers: [yahoo], reply: TSS04, threshold: 2/1h, action: {suspend: 2h}}\n")
	cfg := write("relay.yaml", "delivery:\n  shaping:\n    include: shaping.yaml\n"+
		"    providers: [{name: google, mx: [.google.com], connections: 50}, {name: mine, mx: [mx.example.net]}]\n"+
		"    rules: [{providers: [yahoo], reply: x, threshold: 1/m, action: {suspend: 1m}}]\n")
	c, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range c.Delivery.Shaping.AllProviders() {
		names = append(names, p.Name)
	}
	if got := strings.Join(names, ","); got != "google,mine,yahoo" {
		t.Errorf("providers %s, want google,mine,yahoo", got)
	}
	if c.Delivery.Shaping.AllProviders()[0].Connections != 50 || len(c.Delivery.Shaping.AllRules()) != 2 ||
		c.Delivery.Shaping.AllRules()[0].Reply != "x" {
		t.Errorf("own entries first: %+v", c.Delivery.Shaping)
	}
	next := *c
	next.Delivery.Shaping.Included.Rules = nil
	if ch := Diff(c, &next); len(ch.Live) != 1 || ch.Live[0] != "delivery.shaping.include" {
		t.Errorf("a changed included file: %+v", ch)
	}

	bad := write("bad.yaml", "providers:\n  - {name: x, mx: []}\n  - {name: y, mx: [.y.example], bogus: 1}\n")
	cfg = write("bad-relay.yaml", "delivery:\n  shaping:\n    include: bad.yaml\n")
	_, err = Load(cfg)
	for _, w := range []string{bad + ": line 2: providers[0].mx: list the MX host suffixes",
		bad + `: line 3: unknown key "bogus"`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v\ndoes not contain %q", err, w)
		}
	}
	_, err = Load(write("missing.yaml", "delivery:\n  shaping:\n    include: nowhere.yaml\n"))
	if err == nil || !strings.Contains(err.Error(), "line 3: delivery.shaping.include: cannot read") {
		t.Errorf("missing include: %v", err)
	}
	_, err = Load(write("dir.yaml", "delivery:\n  shaping:\n    include: "+dir+"\n"))
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory as include: %v", err)
	}
	write("big.yaml", "#"+strings.Repeat("x", maxIncludeBytes)+"\n")
	_, err = Load(write("big-relay.yaml", "delivery:\n  shaping:\n    include: big.yaml\n"))
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("a huge include: %v", err)
	}
}

// TestPoolWarning: pools without one named default warn about the users
// that name no pool; with a default pool, or every user in a pool, not.
func TestPoolWarning(t *testing.T) {
	base := "delivery:\n  sources: [{name: a, address: 127.0.0.11}]\n  pools: {%s: [a]}\nsubmission:\n  users:\n" +
		"    - {name: u, password_hash: \"$2a$10$x\", allowed_from: [example.com]%s}\n"
	for _, tc := range []struct {
		pool, userPool string
		warn           bool
	}{{"bulk", "", true}, {"default", "", false}, {"bulk", ", pool: bulk", false}} {
		c, err := Parse([]byte(fmt.Sprintf(base, tc.pool, tc.userPool)))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, w := range c.Warnings() {
			if w.Path == "delivery.pools" {
				got = append(got, w.Error())
			}
		}
		if (len(got) == 1 && strings.Contains(got[0], "line 3: delivery.pools: no pool named default: users without a pool (u)")) != tc.warn {
			t.Errorf("pool %s%s: warnings %q", tc.pool, tc.userPool, got)
		}
	}
}
