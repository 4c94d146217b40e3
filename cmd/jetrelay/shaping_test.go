package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/jetrelay/jetrelay/relay/shaping"
	"github.com/rs/zerolog"
)

// shapingEnv is an ops env whose config has two providers and a rule that
// suspends google at the first "4.7.28" reply, with a Shaper running on
// its NATS as a relay's would.
func shapingEnv(t *testing.T) (*opsEnv, *shaping.Shaper) {
	t.Helper()
	o := newOpsEnv(t)
	yaml := "hostname: relay.test\ndata_dir: " + o.dataDir + "\ndelivery:\n  shaping:\n    providers:\n" +
		"      - {name: google, mx: [.google.com], connections: 5, rate: 600/m, per_connection: 50}\n" +
		"      - {name: yahoo, mx: [.yahoodns.net], per_connection: 20}\n" +
		"    rules:\n      - {name: google-rate, providers: [google], reply: '4\\.7\\.28', threshold: 1/10m, " +
		"action: {suspend: 30m}}\n"
	if err := os.WriteFile(o.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(o.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	set, err := shapingSettings(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sh, err := shaping.Open(ctx, shaping.Options{JetStream: o.q.JetStream(), Replicas: 1, Node: "test",
		Logger: zerolog.New(zerolog.NewTestWriter(t))}, set)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sh.Close)
	return o, sh
}

type shapingJSON struct {
	Providers []struct {
		Name           string     `json:"name"`
		Connections    int        `json:"connections"`
		Rate           float64    `json:"rate"`
		SuspendedUntil *time.Time `json:"suspended_until"`
		Reason         string     `json:"reason"`
		Waiting        int        `json:"waiting"`
		Limit          struct {
			Connections int    `json:"connections"`
			Rate        string `json:"rate"`
		} `json:"limit"`
	} `json:"providers"`
}

func shapingStatusJSON(t *testing.T, o *opsEnv) shapingJSON {
	t.Helper()
	rc, out, errOut := runOps(t, shapingStatusMain, o.args("--json")...)
	if rc != 0 {
		t.Fatalf("shaping status --json: rc %d: %s", rc, errOut)
	}
	var st shapingJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("shaping status --json: %v\n%s", err, out)
	}
	return st
}

// TestShapingStatusAndResume: status lists every configured provider with
// its limits; a rule's suspension shows with its end and reason (the
// remote text escaped in the table); resume lifts it on every node.
func TestShapingStatusAndResume(t *testing.T) {
	t.Parallel()
	o, sh := shapingEnv(t)
	st := shapingStatusJSON(t, o)
	if len(st.Providers) != 2 || st.Providers[0].Name != "google" || st.Providers[1].Name != "yahoo" ||
		st.Providers[0].Limit.Connections != 5 || st.Providers[0].Limit.Rate != "600/m" ||
		st.Providers[0].SuspendedUntil != nil {
		t.Fatalf("idle status: %+v", st)
	}
	c := sh.Classify("gmail.com", []string{"gmail-smtp-in.l.google.com"})
	if c.Provider != "google" {
		t.Fatalf("gmail.com classified as %+v", c)
	}
	sh.Observe(c, shaping.Reply{Code: 421, Enhanced: "4.7.28", Text: "unusual rate \x1b[2J of mail"})
	relaytest.Eventually(t, "google suspended", func() bool {
		return shapingStatusJSON(t, o).Providers[0].SuspendedUntil != nil
	})
	st = shapingStatusJSON(t, o)
	if g := st.Providers[0]; !strings.Contains(g.Reason, "google-rate") || g.SuspendedUntil.Before(time.Now().Add(20*time.Minute)) {
		t.Errorf("suspension: %+v", g)
	}
	rc, out, errOut := runOps(t, shapingStatusMain, o.args()...)
	if rc != 0 || !strings.Contains(out, "suspended until") || !strings.Contains(out, "PROVIDER") ||
		!strings.Contains(out, "0/5") || !strings.Contains(out, "20/conn") || strings.Contains(out, "\x1b") {
		t.Errorf("status table: rc %d\n%s%s", rc, out, errOut)
	}
	rc, out, errOut = runOps(t, shapingResumeMain, o.args("google")...)
	if rc != 0 || !strings.Contains(out, "resumed google") {
		t.Fatalf("resume: rc %d: %s%s", rc, out, errOut)
	}
	relaytest.Eventually(t, "google resumed", func() bool {
		return shapingStatusJSON(t, o).Providers[0].SuspendedUntil == nil
	})
	if rc, out, _ := runOps(t, shapingResumeMain, o.args("google")...); rc != 0 || !strings.Contains(out, "nothing to resume") {
		t.Errorf("second resume: rc %d: %s", rc, out)
	}
	if rc, _, errOut := runOps(t, shapingResumeMain, o.args("nobody")...); rc != 1 ||
		!strings.Contains(errOut, `no provider "nobody"`) {
		t.Errorf("resume of an unknown provider: rc %d: %s", rc, errOut)
	}
	if rc, _, _ := runOps(t, shapingResumeMain, o.args()...); rc != 2 {
		t.Errorf("resume without a provider: rc %d", rc)
	}
}

// TestShapingSettingsFromConfig: the configured providers (then the
// included ones) and rules reach the Shaper's settings, MX names lower
// case, unnamed rules numbered, the default from max_per_destination.
func TestShapingSettingsFromConfig(t *testing.T) {
	cfg, err := config.Parse([]byte("delivery:\n  max_per_destination: 4\n  shaping:\n    backoff_for: 5m\n" +
		"    providers: [{name: a, mx: [.MX.Example.], rate: 10/d, per_source: true}]\n" +
		"    rules: [{providers: [a], reply: x, threshold: 2/h, action: {rate: 1/m, for: 1h}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := shapingSettings(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := set.Providers[0]
	if set.Default.Connections != 4 || set.Default.PerConnection != 100 || set.BackoffFor != 5*time.Minute ||
		p.MX[0] != ".mx.example" || p.Limits.Rate != (shaping.Rate{Count: 10, Per: 24 * time.Hour}) || !p.Limits.PerSource {
		t.Errorf("settings: %+v", set)
	}
	r := set.Rules[0]
	if r.Name != "rule 1" || r.Threshold != 2 || r.Window != time.Hour || r.Action.For != time.Hour ||
		!r.Reply.MatchString("421 X") {
		t.Errorf("rule: %+v", r)
	}
	e := shapingEvent(shaping.Change{Class: shaping.Class{Key: "dest:example.org"}, Rule: "backoff",
		Action: shaping.ActionBackoff, Rate: shaping.Rate{Count: 5, Per: time.Minute}, Until: time.Now(),
		Reason: "421 4.7.0 too many", Ended: true})
	if e.Event != events.Shaping || e.Domain != "example.org" || e.Status != "ended" || e.Reason != "example.org: rate 5/m ended (backoff)" ||
		e.Until == nil || e.Action != "backoff" {
		t.Errorf("event: %+v", e)
	}
}

// TestReloadAppliesShaping: SIGHUP's reload applies new providers and
// rules to the running Shaper (status and /metrics read the new ones), also
// to a destination delivered to before, a rule then suspends the provider
// on the reply it names, and the change is stored in the events stream as
// a shaping event.
func TestReloadAppliesShaping(t *testing.T) {
	t.Parallel()
	e := newReloadEnv(t)
	received(t, e.mxA, e.sendAndWait(t, "one@dest.test")) // its destination is classified before the reload
	next := e.next()
	next.Delivery.Shaping.Providers = []config.Provider{{Name: "dest", MX: []string{"mx.dest.test"}, Connections: 2}}
	next.Delivery.Shaping.Rules = []config.ShapingRule{{Name: "hold", Providers: []string{"dest"}, Reply: `4\.7\.28`,
		Threshold: config.Threshold{Count: 1, Window: 10 * time.Minute},
		Action:    config.ShapingAction{Suspend: config.Duration(30 * time.Minute)}}}
	if st := e.r.reloadTo(next); st != reloadOK {
		t.Fatalf("reload status %q:\n%s", st, e.logs.String())
	}
	if logs := e.logs.String(); !strings.Contains(logs, `"applied":["delivery.shaping.providers","delivery.shaping.rules"]`) {
		t.Errorf("reload log does not name the shaping keys:\n%s", logs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := e.r.shapingStatus(ctx)
	if err != nil || len(st) != 1 || st[0].Name != "dest" || st[0].Limit.Connections != 2 {
		t.Fatalf("status after reload: %+v %v", st, err)
	}
	e.mxA.ReplyMail(&smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 28},
		Message: "Our system has detected an unusual rate of mail"}, 1)
	e.send(t, "two@dest.test", time.Now())
	relaytest.Eventually(t, "dest suspended", func() bool {
		st, err := e.r.shapingStatus(ctx)
		return err == nil && len(st) == 1 && st[0].SuspendedUntil != nil
	})
	s, err := e.r.q.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, "a shaping event in the stream", func() bool {
		m, err := s.GetLastMsgForSubject(ctx, events.SubjPrefix+"."+events.Shaping+".-")
		if err != nil {
			return false
		}
		var ev events.Event
		return json.Unmarshal(m.Data, &ev) == nil && ev.Provider == "dest" && ev.Rule == "hold" &&
			ev.Action == shaping.ActionSuspend && ev.Status == "began" && ev.Until != nil
	})
}

// TestCheckReportsSourcesThatCannotBind: `jetrelay check` binds every
// egress source once: one on this host passes, one that is not (TEST-NET)
// is a problem naming the source.
func TestCheckReportsSourcesThatCannotBind(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := dir + "/jetrelay.yaml"
	write := func(addr string) {
		t.Helper()
		y := "hostname: relay.example.com\ndata_dir: " + dir + "\ndelivery:\n  sources:\n" +
			"    - {name: here, address: 127.0.0.1}\n    - {name: there, address: " + addr + "}\n" +
			"  pools: {default: [here, there]}\n"
		if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var out, errb strings.Builder
	write("127.0.0.1")
	if rc := run([]string{"check", "--config", path}, stdio{strings.NewReader(""), &out, &errb}); rc != 0 {
		t.Fatalf("bindable sources: rc %d\n%s%s", rc, out.String(), errb.String())
	}
	out.Reset()
	write("192.0.2.55")
	rc := run([]string{"check", "--config", path}, stdio{strings.NewReader(""), &out, &errb})
	if rc != 1 || !strings.Contains(out.String(), "delivery.sources there: cannot bind 192.0.2.55") ||
		strings.Contains(out.String(), "sources here") {
		t.Errorf("rc %d\n%s%s", rc, out.String(), errb.String())
	}
}
