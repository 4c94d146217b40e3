package queue_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/nats-io/nats.go"
)

// TestSystemUserMayOnlyPing: the embedded server's system user answers
// the cluster-wide pings and may publish nothing else.
func TestSystemUserMayOnlyPing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := queuetest.RunJetStream(t, queuetest.Options{DataDir: dir})
	pass, err := queue.EnsurePassword(dir)
	if err != nil {
		t.Fatal(err)
	}
	denied := make(chan error, 4)
	nc, err := nats.Connect("", nats.InProcessServer(q.Embedded()), nats.UserInfo(queue.SystemUser, pass),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	m, err := nc.Request("$SYS.REQ.SERVER.PING.IDZ", nil, 10*time.Second)
	if err != nil || !strings.Contains(string(m.Data), `"name":"jetrelay"`) {
		t.Fatalf("IDZ ping: %v %v", m, err)
	}
	if err := nc.Publish("$SYS.REQ.SERVER.PING.RELOAD.X", nil); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("$SYS.REQ.ACCOUNT.PING.CONNZ", nil); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case err := <-denied:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("want a permissions violation, got %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("publish outside the pings was not refused")
		}
	}
}
