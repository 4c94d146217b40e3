package bounce

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jetrelay/jetrelay/relay/events"
)

// TestMetaOnBounceEvents (issue 18, point 3): the DSN event of a message
// with metadata carries it, and so does the bounced event of an
// asynchronous bounce to its VERP address, found through the VERP record
// (msginfo.go); a message without metadata gets none.
func TestMetaOnBounceEvents(t *testing.T) {
	t.Parallel()
	f := intakeFixture(t)
	want := map[string]string{"order": "42"}
	env := origEnv()
	env.Meta, env.Tag = want, "invoice"
	if err := f.b.Failed(context.Background(), env, []byte(origMsg), []Result{rejected("bob@example.org", "")}); err != nil {
		t.Fatal(err)
	}
	dsn := f.rec.Find(events.DSN, nil)
	if len(dsn) != 1 || !cmp.Equal(dsn[0].Meta, want) || dsn[0].Tag != "invoice" {
		t.Fatalf("dsn events %+v", dsn)
	}
	verp := verpOf(t, f.b, env, "carol@example.org")
	if err := sendBounce(t, f, verp, sample(t, "postfix.eml", verp)); err != nil {
		t.Fatalf("bounce refused: %v", err)
	}
	plain := origEnv()
	plain.ID = "01JRTEST0000000000000B"
	verp = verpOf(t, f.b, plain, "bob@example.org")
	if err := sendBounce(t, f, verp, sample(t, "postfix.eml", verp)); err != nil {
		t.Fatalf("bounce refused: %v", err)
	}
	evs := f.rec.Find(events.Bounced, nil)
	if len(evs) != 2 {
		t.Fatalf("bounced events %+v, want 2", evs)
	}
	for _, e := range evs {
		switch e.QueueID {
		case env.ID:
			if !cmp.Equal(e.Meta, want) || e.Tag != "invoice" {
				t.Errorf("bounced event of the message with metadata: %+v", e)
			}
		case plain.ID:
			if e.Meta != nil || e.Tag != "" {
				t.Errorf("bounced event of the message without metadata: %+v", e)
			}
		default:
			t.Errorf("bounced event of %s", e.QueueID)
		}
	}
}
