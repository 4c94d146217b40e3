package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/events"
)

// The defaults: the first listener, the dev credential, a sender the
// user may use; a missing credential is a usage error.
func TestSendDefaults(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "jetrelay.yaml")
	yaml := "hostname: relay.test\ndata_dir: " + dir +
		"\nsubmission:\n  listeners: [{addr: \"0.0.0.0:2587\", tls: implicit}]\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	o := &sendOpts{to: multiFlag{"u@example.net"}, wait: 1}
	o.nf.config = cfgPath
	if err := o.resolve(); err == nil || !strings.Contains(err.Error(), "--user") {
		t.Fatalf("no credential: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, devPasswordFile), []byte("devpass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o = &sendOpts{to: multiFlag{"u@example.net"}, wait: 1}
	o.nf.config = cfgPath
	if err := o.resolve(); err != nil {
		t.Fatal(err)
	}
	if o.server != "127.0.0.1:2587" || o.tlsMode != listenerImplicit || o.user != devUserName ||
		o.smtpPasswd != "devpass" || o.from != "send-test@relay.test" {
		t.Fatalf("defaults: server %s tls %s user %s pass %q from %s", o.server, o.tlsMode, o.user, o.smtpPasswd, o.from)
	}
	cfg := config.Default()
	cfg.Submission.Users = []config.User{{Name: "app", AllowedFrom: []string{"shop.test"}},
		{Name: "one", AllowedFrom: []string{"alerts@shop.test"}}}
	for user, want := range map[string]string{"app": "send-test@shop.test", "one": "alerts@shop.test",
		"other": "send-test@" + cfg.Hostname} {
		if got := defaultSender(cfg, user); got != want {
			t.Errorf("defaultSender(%s) = %s, want %s", user, got, want)
		}
	}
}

// The relay's own certificate is trusted only on loopback; elsewhere the
// system roots verify, unless --insecure.
func TestSendTLSTrust(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "cert.pem")
	pem := "-----BEGIN CERTIFICATE-----\nMAo=\n-----END CERTIFICATE-----\n"
	if err := os.WriteFile(cert, []byte(pem), 0o600); err != nil {
		t.Fatal(err)
	}
	o := &sendOpts{certFiles: []string{cert}}
	if c := o.tlsConfig("mail.example.com"); c.InsecureSkipVerify || c.VerifyConnection != nil {
		t.Error("a remote server is not verified against the system roots")
	}
	for _, h := range []string{"127.0.0.1", "::1", "localhost"} {
		if c := o.tlsConfig(h); c.VerifyConnection == nil {
			t.Errorf("%s: the relay's own certificate is not pinned", h)
		}
	}
	o.insecure = true
	if c := o.tlsConfig("mail.example.com"); !c.InsecureSkipVerify {
		t.Error("--insecure still verifies")
	}
}

func TestSendTrackerExitCodes(t *testing.T) {
	ev := func(rcpt, status string) *events.Event {
		return &events.Event{Event: events.Delivery, Rcpt: rcpt, Status: status}
	}
	tr := newSendTracker([]string{"A@x.test", "b@y.test"})
	if tr.see(ev("a@x.test", events.StatusDelivered)) {
		t.Fatal("settled with one recipient pending")
	}
	if !tr.see(ev("b@y.test", events.StatusDeferred)) || tr.exitCode() != sendExitDeferred {
		t.Fatalf("delivered + deferred: exit %d", tr.exitCode())
	}
	tr.see(&events.Event{Event: events.Deleted, Domain: "y.test"})
	if tr.exitCode() != sendExitFailed {
		t.Fatalf("deleted by an operator: exit %d", tr.exitCode())
	}
}
