package submit

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/nats-io/nats.go/jetstream"
)

// openTestBrake opens the auth brake on q's JetStream.
func openTestBrake(t testing.TB, q *queue.Queue) *Brake {
	t.Helper()
	return openBrakeOn(t, q.JetStream())
}

// openBrakeOn opens the auth brake on js.
func openBrakeOn(t testing.TB, js jetstream.JetStream) *Brake {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	b, err := OpenBrake(ctx, BrakeOptions{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testClock is an injectable clock for the brake.
type testClock struct{ ns atomic.Int64 }

func (c *testClock) now() time.Time         { return time.Unix(0, c.ns.Load()) }
func (c *testClock) add(d time.Duration)    { c.ns.Add(int64(d)) }
func newClock(t time.Time) *testClock       { c := &testClock{}; c.ns.Store(t.UnixNano()); return c }
func brakeCtx(t testing.TB) context.Context { return t.Context() }

func brakeCfg() config.AuthFailures {
	return config.AuthFailures{Max: 10, MaxPerUser: 3, Window: config.Duration(time.Minute),
		Ban: config.Duration(time.Hour), Delay: config.Duration(time.Second)}
}

func openClockedBrake(t *testing.T, q *queue.Queue, clk *testClock) *Brake {
	t.Helper()
	b, err := OpenBrake(brakeCtx(t), BrakeOptions{JetStream: q.JetStream(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustFail(t *testing.T, b *Brake, client, user string) failOutcome {
	t.Helper()
	out, err := b.fail(brakeCtx(t), failure{client: client, user: user, cfg: brakeCfg()})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func isBanned(t *testing.T, b *Brake, client, user string) bool {
	t.Helper()
	if user == "" {
		_, banned, err := b.clientBan(brakeCtx(t), client)
		if err != nil {
			t.Fatal(err)
		}
		return banned
	}
	banned, err := b.banned(brakeCtx(t), client, user)
	if err != nil {
		t.Fatal(err)
	}
	return banned
}

// TestBrakeUserFromManyAddressesOnlyDelays: failures for one user name
// from many clients add a capped delay and never ban the user anywhere.
func TestBrakeUserFromManyAddressesOnlyDelays(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	b := openClockedBrake(t, q, newClock(time.Now()))
	var out failOutcome
	for i := range 20 {
		out = mustFail(t, b, clientKey("192.0.2."+itoa(i+1)), appUser)
	}
	if out.delay != maxAuthDelay {
		t.Errorf("delay after 20 failures for one user: %v, want the cap %v", out.delay, maxAuthDelay)
	}
	for _, ip := range []string{"192.0.2.1", "192.0.2.20", "198.51.100.7"} {
		if isBanned(t, b, ip, "") || isBanned(t, b, ip, appUser) {
			t.Errorf("%s banned after one failure for %s from each of 20 clients", ip, appUser)
		}
	}
}

// TestBrakeSuccessClearsOnlyItsPair: a success resets its own (user,
// client) counter, never the client's; a pair ban leaves other users of
// the client alone; bans outlast the window and end on time.
func TestBrakeSuccessClearsOnlyItsPair(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	clk := newClock(time.Now())
	b := openClockedBrake(t, q, clk)
	const client = "192.0.2.1"
	mustFail(t, b, client, "victim")
	mustFail(t, b, client, "victim")
	if err := b.success(brakeCtx(t), client, "victim"); err != nil {
		t.Fatal(err)
	}
	mustFail(t, b, client, "victim")
	if out := mustFail(t, b, client, "victim"); out.pairBan || out.clientFail != 4 {
		t.Fatalf("after 2+2 failures around a success: %+v, want no pair ban and 4 client failures", out)
	}
	if out := mustFail(t, b, client, "victim"); !out.pairBan {
		t.Fatalf("third failure since the success did not ban the pair: %+v", out)
	}
	if !isBanned(t, b, client, "victim") || isBanned(t, b, client, appUser) || isBanned(t, b, client, "") {
		t.Fatal("pair ban must hit only (victim, client)")
	}
	for i := range 5 { // 5 more failures for other users: 10 from the client
		mustFail(t, b, client, "other"+itoa(i))
	}
	if !isBanned(t, b, client, "") {
		t.Fatal("client not banned after max failures across users")
	}
	clk.add(59 * time.Minute) // window (1m) long over, ban (1h) not
	if !isBanned(t, b, client, "") || !isBanned(t, b, client, "victim") {
		t.Fatal("a ban ended with the counting window")
	}
	clk.add(2 * time.Minute)
	if isBanned(t, b, client, "") || isBanned(t, b, client, "victim") {
		t.Fatal("ban did not end")
	}
}

// TestBrakeStorage: every record carries a TTL that outlasts its ban,
// awkward user names make valid keys, IPv6 clients are grouped per /64,
// and Bans/Unban see and lift bans.
func TestBrakeStorage(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	b := openClockedBrake(t, q, newClock(time.Now()))
	odd := "a b.c*>\x00ü/" + strings.Repeat("x", 600)
	v6 := clientKey("2001:db8::1")
	for range 3 {
		mustFail(t, b, v6, odd)
	}
	if !isBanned(t, b, clientKey("2001:db8::ffff"), odd) || isBanned(t, b, clientKey("2001:db8:0:1::1"), odd) {
		t.Fatal("IPv6 clients are not grouped by /64")
	}
	st, err := q.JetStream().Stream(brakeCtx(t), "KV_"+AuthBucket)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(brakeCtx(t), "$KV."+AuthBucket+"."+pairKey(v6, odd))
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := time.ParseDuration(m.Header.Get(jetstream.MsgTTLHeader))
	if err != nil || ttl < time.Hour {
		t.Fatalf("banned record TTL %q (%v), want at least the 1h ban", m.Header.Get(jetstream.MsgTTLHeader), err)
	}
	bans, err := b.Bans(brakeCtx(t))
	if err != nil || len(bans) != 1 || bans[0].Client != v6 || bans[0].User != odd[:maxStoredUser] {
		t.Fatalf("Bans = %+v, %v", bans, err)
	}
	if n, err := b.Unban(brakeCtx(t), "2001:db8::42"); err != nil || n != 2 {
		t.Fatalf("Unban removed %d records: %v", n, err)
	}
	if isBanned(t, b, v6, odd) {
		t.Fatal("still banned after Unban")
	}
}

// TestBrakeConcurrentNodes: two brakes (two nodes) on one JetStream count
// concurrent failures without losing any.
func TestBrakeConcurrentNodes(t *testing.T) {
	t.Parallel()
	q := queuetest.RunJetStream(t)
	nodes := []*Brake{openTestBrake(t, q), openTestBrake(t, q)}
	cfg := brakeCfg()
	cfg.Max, cfg.MaxPerUser = 1000, 1000
	const per = 15
	var wg sync.WaitGroup
	for _, b := range nodes {
		for g := range 2 {
			wg.Go(func() {
				for range per {
					if _, err := b.fail(t.Context(), failure{client: "192.0.2.9", user: "u" + itoa(g), cfg: cfg}); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
	wg.Wait()
	r, _, err := nodes[0].get(brakeCtx(t), ipKey("192.0.2.9"))
	if err != nil || r.Failures != 4*per {
		t.Fatalf("client counter %d (%v), want %d", r.Failures, err, 4*per)
	}
}

// authAttempt dials the implicit-TLS listener from source (a loopback
// address), says EHLO and tries one AUTH PLAIN; it returns the greeting
// when that is not 220, else the AUTH reply.
func (h *harness) authAttempt(source, user, pass string) smtpReply {
	h.t.Helper()
	d := &net.Dialer{Timeout: testTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	conn, err := tls.DialWithDialer(d, "tcp", h.addr(lnImplicit), h.client)
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close()
	c := &rawClient{t: h.t, conn: conn, r: textproto.NewReader(bufio.NewReader(conn))}
	if g := c.read(); g.Code != 220 {
		return g
	}
	c.expect("EHLO client.test", 250, "")
	return c.cmd("AUTH PLAIN " + plain(user, pass))
}

// TestGuessingLoopAcrossUsersBanned: the loop (4 wrong guesses for
// other users, then one login with one's own account, repeated) is banned
// after submission.auth_failures.max guesses; the log names the user tried,
// never the password; the client is then refused at connect.
func TestGuessingLoopAcrossUsersBanned(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t))
	victims := []string{anyUser, slowUser, "nobody"}
	guesses, refused := 0, false
	for round := 0; round < 10 && !refused; round++ {
		for i := range 4 {
			r := h.authAttempt("127.0.0.1", victims[(round*4+i)%len(victims)], "guess-secret-"+itoa(round))
			switch {
			case r.Code == 535:
				guesses++
			case r.Code == 454 && r.Enh == "4.7.0" && strings.Contains(r.Text, "for this user"):
			case (r.Code == 454 || r.Code == 421) && r.Enh == "4.7.0":
				refused = true
			default:
				t.Fatalf("guess: %v", r)
			}
		}
		if r := h.authAttempt("127.0.0.1", appUser, appPass); r.Code != 235 {
			if (r.Code != 454 && r.Code != 421) || r.Enh != "4.7.0" {
				t.Fatalf("own login: %v", r)
			}
			refused = true
		}
	}
	if max := h.cfg.Submission.AuthFailures.Max; !refused || guesses > max {
		t.Fatalf("%d wrong guesses answered 535, refused=%v; want a ban after at most %d", guesses, refused, max)
	}
	if r := h.authAttempt("127.0.0.1", appUser, appPass); r.Code != 421 || r.Enh != "4.7.0" {
		t.Fatalf("connect after the ban: %v, want 421 4.7.0", r)
	}
	var named bool
	for _, e := range h.logs.events("rejected") {
		if e["smtp_code"] == float64(535) && e["user"] == anyUser {
			named = true
		}
	}
	if !named || strings.Contains(h.logs.String(), "guess-secret") {
		t.Fatalf("auth failure log lines must name the user and never the password:\n%s", h.logs.String())
	}
}

// TestBanSharedAcrossServers: two servers on one JetStream (two nodes,
// each with its own NATS connection) see the same ban, at connect and at
// AUTH: failures counted on one lock the client out on the other.
func TestBanSharedAcrossServers(t *testing.T) {
	t.Parallel()
	lim := func(c *config.Config) { c.Submission.AuthFailures.Max = 2 }
	q, dir := listeningJetStream(t)
	h1 := start(t, testConfig(t, lim), harnessOpts{queue: q})
	h2 := start(t, testConfig(t, lim), harnessOpts{queue: q, nodeJS: secondConn(t, q, dir)})
	early := h2.dialRaw(lnImplicit) // connected before the ban
	early.expect("EHLO client.test", 250, "")
	for range 2 {
		if r := h1.authAttempt("127.0.0.1", appUser, "wrong"); r.Code != 535 {
			t.Fatalf("failure on node 1: %v", r)
		}
	}
	relaytest.Eventually(t, "node 2 refusing the banned client at connect", func() bool {
		r := h2.authAttempt("127.0.0.1", appUser, appPass)
		return r.Code == 421 && r.Enh == "4.7.0"
	})
	early.expect("AUTH PLAIN "+plain(appUser, appPass), 454, "4.7.0")
}

// TestUserNotLockedOutFromElsewhere: a (user, client) ban from one address
// leaves the same user's logins from another address alone.
func TestUserNotLockedOutFromElsewhere(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t, func(c *config.Config) { c.Submission.AuthFailures.MaxPerUser = 2 }))
	for range 2 {
		if r := h.authAttempt("127.0.0.2", appUser, "wrong"); r.Code != 535 {
			t.Fatalf("failure from 127.0.0.2: %v", r)
		}
	}
	if r := h.authAttempt("127.0.0.2", appUser, appPass); r.Code != 454 || r.Enh != "4.7.0" {
		t.Fatalf("banned pair: %v, want 454 4.7.0", r)
	}
	if r := h.authAttempt("127.0.0.2", anyUser, anyPass); r.Code != 235 {
		t.Fatalf("another user from the same client: %v, want 235", r)
	}
	if r := h.authAttempt("127.0.0.1", appUser, appPass); r.Code != 235 {
		t.Fatalf("the user from another client: %v, want 235", r)
	}
}

// TestTrustedNetworksNeverBanned: failures from submission.trusted_networks
// are answered 535 but never ban; the right password still works.
func TestTrustedNetworksNeverBanned(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t, func(c *config.Config) {
		c.Submission.AuthFailures.Max, c.Submission.AuthFailures.MaxPerUser = 2, 2
		c.Submission.TrustedNetworks = []string{"127.0.0.0/30"}
	}))
	for range 5 {
		if r := h.authAttempt("127.0.0.1", appUser, "wrong"); r.Code != 535 {
			t.Fatalf("failure from a trusted network: %v, want 535", r)
		}
	}
	if r := h.authAttempt("127.0.0.1", appUser, appPass); r.Code != 235 {
		t.Fatalf("right password from a trusted network: %v", r)
	}
	for range 2 { // 127.0.0.5 is outside 127.0.0.0/30
		h.authAttempt("127.0.0.5", appUser, "wrong")
	}
	if r := h.authAttempt("127.0.0.5", appUser, appPass); r.Code != 421 && r.Code != 454 {
		t.Fatalf("untrusted client after max failures: %v, want a ban", r)
	}
}

// TestBrakeUnavailable: with the bucket unusable (the connection closed),
// AUTH fails open to the node's own counts: the right password is
// accepted, auth_failures.max failures ban the client on this node, and
// auth_brake_unavailable is logged once.
func TestBrakeUnavailable(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(t, func(c *config.Config) { c.Submission.AuthFailures.Max = 3 }))
	h.q.Close()
	if r := h.authAttempt("127.0.0.1", appUser, appPass); r.Code != 235 {
		t.Fatalf("AUTH with the brake's bucket closed: %v, want 235 (fail open)", r)
	}
	for range 3 {
		if r := h.authAttempt("127.0.0.1", appUser, "wrong"); r.Code != 535 {
			t.Fatalf("wrong password with the bucket closed: %v", r)
		}
	}
	if r := h.authAttempt("127.0.0.1", appUser, appPass); r.Code != 421 || r.Enh != "4.7.0" {
		t.Fatalf("after max failures counted on the node: %v, want 421 4.7.0 at connect", r)
	}
	if n := len(h.logs.events("auth_brake_unavailable")); n != 1 {
		t.Fatalf("%d auth_brake_unavailable lines, want 1:\n%s", n, h.logs.String())
	}
}

// TestBrakeFailOpenWhenNATSGone: the node's NATS server is gone (its
// connection waits to reconnect, so bucket requests hang): AUTH is still
// answered, after the brake's short timeout, and accepts the right password.
func TestBrakeFailOpenWhenNATSGone(t *testing.T) {
	t.Parallel()
	q, dir := listeningJetStream(t)
	h := start(t, testConfig(t), harnessOpts{queue: q, nodeJS: secondConn(t, q, dir)})
	q.Embedded().Shutdown()
	q.Embedded().WaitForShutdown()
	for range 2 {
		if r := h.authAttempt("127.0.0.1", appUser, appPass); r.Code != 235 {
			t.Fatalf("AUTH with NATS gone: %v, want 235 (fail open)", r)
		}
	}
	if n := len(h.logs.events("auth_brake_unavailable")); n != 1 {
		t.Fatalf("%d auth_brake_unavailable lines, want 1:\n%s", n, h.logs.String())
	}
}

// TestLocalBrake: the node's fallback bans a client at max failures within
// the window, until the ban ends, and stays bounded however many clients
// fail.
func TestLocalBrake(t *testing.T) {
	t.Parallel()
	var l localBrake
	cfg := brakeCfg() // max 10, window 1m, ban 1h
	now := time.Now()
	for i := range 9 {
		if out := l.fail("192.0.2.1", cfg, now); out.clientBan || out.clientFail != i+1 {
			t.Fatalf("failure %d: %+v", i+1, out)
		}
	}
	if out := l.fail("192.0.2.1", cfg, now); !out.clientBan || !l.banned("192.0.2.1", now.Add(59*time.Minute)) {
		t.Fatalf("10th failure: %+v, want a ban lasting the hour", out)
	}
	if l.banned("192.0.2.1", now.Add(61*time.Minute)) || l.banned("192.0.2.2", now) {
		t.Fatal("ban outlived its end, or hit another client")
	}
	for i := range 3 * localBrakeMax {
		l.fail("c"+itoa(i), cfg, now)
	}
	if len(l.m) > localBrakeMax {
		t.Fatalf("%d local records, bound %d", len(l.m), localBrakeMax)
	}
	if !l.banned("192.0.2.1", now) {
		t.Fatal("a flood of one-off failures lifted a ban")
	}
}
