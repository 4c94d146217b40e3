package bounce

import (
	"bufio"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
)

func prepareAndApply(t *testing.T, b *Bouncer, s Settings) {
	t.Helper()
	apply, err := b.Prepare(s)
	if err != nil {
		t.Fatal(err)
	}
	apply()
}

// TestPrepareReplacesVERPDomain: after a reload to a new VERP domain,
// tokens are minted for it; tokens of the replaced domain minted before
// stay accepted until they expire, later ones and other domains are not;
// a domain that comes back is current again. Nothing changes before apply.
func TestPrepareReplacesVERPDomain(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Bounces.VERPDomain = "a.relay.test"
	f := newFixture(t, cfg)
	ctx := context.Background()
	oldAddr := verpOf(t, f.b, origEnv(), "bob@example.org")

	next := settingsOf(cfg)
	next.VERPDomain = "b.relay.test"
	next.MaxAge = 77 * time.Hour
	apply, err := f.b.Prepare(next)
	if err != nil {
		t.Fatal(err)
	}
	if f.b.state().set.VERPDomain != "a.relay.test" {
		t.Fatal("Prepare changed the settings before apply")
	}
	apply()
	f.now = f.now.Add(2 * time.Hour) // minted after the reload
	newAddr := verpOf(t, f.b, origEnv(), "bob@example.org")
	if !strings.HasSuffix(newAddr, "@b.relay.test") {
		t.Fatalf("minted %q after the reload", newAddr)
	}
	lateOld := strings.Replace(newAddr, "@b.relay.test", "@a.relay.test", 1)
	for addr, want := range map[string]bool{
		newAddr: true, oldAddr: true, lateOld: false,
		strings.Replace(oldAddr, "@a.relay.test", "@c.relay.test", 1): false,
	} {
		if _, _, ok := f.b.ParseVERP(ctx, addr); ok != want {
			t.Errorf("ParseVERP(%s) = %v, want %v", addr, ok, want)
		}
	}
	if f.b.state().set.MaxAge != 77*time.Hour {
		t.Error("max_age not applied")
	}

	f.now = f.now.Add(verpDefaultAge + 2*time.Hour) // the old tokens expired
	prepareAndApply(t, f.b, settingsOf(cfg))        // back to a.relay.test
	if len(f.b.state().retired) != 1 || f.b.state().retired[0].domain != "b.relay.test" {
		t.Errorf("retired after switching back: %+v", f.b.state().retired)
	}
}

// TestPrepareIntakeLimits: bounces.intake limits apply to connections
// accepted after a reload.
func TestPrepareIntakeLimits(t *testing.T) {
	t.Parallel()
	f := limitedIntake(t, config.BounceIntake{MaxConnections: 10, MaxConnectionsPerIP: 5,
		Idle: config.Duration(time.Minute), Session: config.Duration(10 * time.Minute)})
	next := settingsOf(f.cfg)
	next.Intake.MaxConnectionsPerIP = 1
	prepareAndApply(t, f.b, next)
	var lines []string
	for range 2 {
		c := dialFrom(t, f, "127.0.0.1")
		lines = append(lines, firstLine(t, bufio.NewReader(c), c))
	}
	if !strings.HasPrefix(lines[0], "220 ") || !strings.HasPrefix(lines[1], "421 4.7.0 too many connections from") {
		t.Errorf("replies %q: want the second connection refused under the reloaded limit", lines)
	}
}
