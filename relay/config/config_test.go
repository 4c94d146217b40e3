package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigIsValid(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "configs", "jetrelay.yaml"))
	if err != nil {
		t.Fatalf("configs/jetrelay.yaml: %v", err)
	}
	if c.Submission.MaxMessageBytes != 25<<20 || len(c.Submission.Listeners) != 3 {
		t.Fatalf("unexpected example values: %+v", c.Submission)
	}
	if c.Submission.Users[0].Rate.Count != 600 || c.Submission.Users[0].Rate.Per != time.Minute {
		t.Fatalf("rate: %+v", c.Submission.Users[0].Rate)
	}
}

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	c.applyDerivedDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestProblemsCarryLines(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown key and bad duration", "hostname: x\nsubmission:\n  timeouts: {idle: 5x}\n  bogus: 1\n",
			[]string{
				`line 3: submission.timeouts.idle: bad duration "5x"`,
				`line 4: submission.bogus: unknown key (valid keys here: auth_failures,`,
			}},
		{"negative duration", "delivery:\n  retry: {max_age: -1h}\n",
			[]string{`line 2: delivery.retry.max_age: bad duration "-1h": must not be negative`}},
		{"bad size", "submission:\n  max_message_bytes: 25XB\n",
			[]string{`line 2: submission.max_message_bytes: bad size "25XB"`}},
		{"bad rate",
			"submission:\n  users:\n    - {name: a, password_hash: \"$2a$10$x\", allowed_from: [a.example], rate: 5/w}\n",
			[]string{`line 3: submission.users[0].rate: bad rate "5/w"`}},
		{"validation", "hostname: x\nlog: {format: xml}\ndelivery:\n  tls: {default: maybe}\n  port: 0\n",
			[]string{
				`line 2: log.format: "xml" is not one of`, `line 4: delivery.tls.default: "maybe"`,
				`line 5: delivery.port: must be a TCP port`,
			}},
		{"listener tls", "submission:\n  listeners:\n    - {addr: \":587\", tls: ssl}\n",
			[]string{`line 3: submission.listeners[0].tls: "ssl" is not one of starttls, implicit`}},
		{"memory limit too low", "hostname: x\nmemory_limit: 1MiB\n",
			[]string{`line 2: memory_limit: must be 0 (no limit) or at least 32MiB`}},
		{"gc percent out of range", "hostname: x\ngc_percent: 0\n",
			[]string{`line 2: gc_percent: must be -1 or between 10 and 1000`}},
		{"gc off without a memory limit", "hostname: x\nmemory_limit: 0\ngc_percent: -1\n",
			[]string{`line 3: gc_percent: -1 (collect only near memory_limit) needs a memory_limit`}},
		{"user without hash",
			"submission:\n  users:\n    - name: app\n      password_hash: secret\n      allowed_from: [example.com]\n",
			[]string{`line 4: submission.users[0].password_hash: must be a bcrypt hash`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseSizeAndRate(t *testing.T) {
	sizes := map[string]Size{"4096": 4096, "25MiB": 25 << 20, "512KiB": 512 << 10, "10MB": 10_000_000, "1GiB": 1 << 30}
	for in, want := range sizes {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseSize("-1"); err == nil {
		t.Error("negative size accepted")
	}
	r, err := ParseRate("10/s")
	if err != nil || r.Count != 10 || r.Per != time.Second {
		t.Errorf("rate %+v %v", r, err)
	}
	if r, _ := ParseRate(""); !r.Unlimited() {
		t.Error("empty rate must be unlimited")
	}
}

func TestRelativeKeyPathResolvedAgainstConfigDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.pem"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfgPath, []byte("dkim:\n  keys: [{domain: example.com, selector: s1, key: k.pem}]\n"), 0o600)
	c, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if c.DKIM.Keys[0].Key != filepath.Join(dir, "k.pem") {
		t.Fatalf("key path %q", c.DKIM.Keys[0].Key)
	}
}
