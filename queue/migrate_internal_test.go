package queue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// The tests of this file and migrate_test.go share these buckets and
// names, written as relay/bounce and relay/submit write theirs (those
// packages import this one, so they are not used here).
const (
	mtSuppress = "jetrelay_suppress"
	mtBounce   = "jetrelay_bounce"
	mtAuth     = "jetrelay_auth"
	mtEvents   = "JETRELAY_EVENTS"
	mtAuthTTL  = time.Hour
)

func mtLogger(t testing.TB) zerolog.Logger { return zerolog.New(zerolog.NewTestWriter(t)) }

func mtCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// mtEnqueue stores one message with an entry per domain.
func mtEnqueue(t testing.TB, q *Queue, body []byte, domains ...string) {
	t.Helper()
	m := &Message{Body: body}
	for _, d := range domains {
		m.Entries = append(m.Entries, &Envelope{From: "app@example.com", Domain: d,
			Arrival: time.Now().Add(-time.Minute), Rcpts: []Recipient{{Addr: "u@" + d}}})
	}
	if err := q.Enqueue(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// fillStandalone writes into a standalone store under dir: ready
// entries, a two-domain message whose body is chunked, a deferred entry
// (due in two hours), a held one, a parked one with its wake-up, events,
// and suppression, bounce-state and auth-brake keys (the last with a
// per-message TTL). It returns the snapshot of every stream.
func fillStandalone(t *testing.T, dir string) map[string]string {
	t.Helper()
	ctx := mtCtx(t)
	q, err := Open(ctx, Options{DataDir: dir, Logger: mtLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	small := []byte("From: app@example.com\r\nSubject: t\r\n\r\nhi\r\n")
	domains := []string{"defer.example", "hold.example", "park.example", "due.example"}
	for _, d := range domains {
		mtEnqueue(t, q, small, d)
	}
	es, err := q.Lease(ctx, len(domains))
	if err != nil {
		t.Fatal(err)
	}
	for range domains {
		e, err := es.Next()
		if err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(2 * time.Hour)
		switch e.Env.Domain {
		case "defer.example":
			err = e.Defer(ctx, e.Env, later)
		case "hold.example":
			err = e.Hold(ctx)
		case "due.example": // fires at once: a ready entry with the scheduler's headers
			err = e.Defer(ctx, e.Env, time.Now().Add(-time.Second))
		default:
			err = e.Park(ctx, e.Env, later, later)
		}
		if err != nil {
			t.Fatalf("%s: %v", e.Env.Domain, err)
		}
	}
	es.Stop()
	waitFired(t, ctx, q, "jr.q.*.due.example")
	for i := range 3 {
		mtEnqueue(t, q, fmt.Appendf(nil, "%sready %d\r\n", small, i), "ready.example")
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), (q.chunkSize+q.chunkSize/2)/16)
	mtEnqueue(t, q, big, "big-a.example", "big-b.example")
	fillBuckets(t, ctx, q.js)
	// The fired schedule is removed after its target is stored, and the
	// entries acknowledged above are finished: neither belongs in the
	// snapshot (an export leaves finished entries out).
	waitGone(t, ctx, q, "jr.s.*.due.example")
	if err := q.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	return snapshot(t, ctx, q.js)
}

// waitFired polls until subject filter matches a message of the queue stream.
func waitFired(t *testing.T, ctx context.Context, q *Queue, filter string) {
	t.Helper()
	waitSubjects(t, ctx, q, filter, true)
}

// waitGone polls until subject filter matches no message of the queue stream.
func waitGone(t *testing.T, ctx context.Context, q *Queue, filter string) {
	t.Helper()
	waitSubjects(t, ctx, q, filter, false)
}

// waitSubjects polls until filter matches a message (present) or none.
func waitSubjects(t *testing.T, ctx context.Context, q *Queue, filter string, present bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := q.stream.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			t.Fatal(err)
		}
		if (len(info.State.Subjects) > 0) == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not present=%v after 30s", filter, present)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fillBuckets writes KV keys and events as the relay's packages do.
func fillBuckets(t *testing.T, ctx context.Context, js jetstream.JetStream) {
	t.Helper()
	for _, c := range []jetstream.KeyValueConfig{
		{Bucket: mtSuppress, History: 1, TTL: 30 * 24 * time.Hour, Storage: jetstream.FileStorage},
		{Bucket: mtBounce, History: 1, TTL: 7 * 24 * time.Hour, Storage: jetstream.FileStorage},
		{Bucket: mtAuth, History: 1, Storage: jetstream.FileStorage, LimitMarkerTTL: time.Minute},
	} {
		kv, err := js.CreateOrUpdateKeyValue(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			var opts []jetstream.KVCreateOpt
			if c.Bucket == mtAuth {
				opts = append(opts, jetstream.KeyTTL(mtAuthTTL))
			}
			if _, err := kv.Create(ctx, fmt.Sprintf("k%d", i), fmt.Appendf(nil, "%s value %d", c.Bucket, i),
				opts...); err != nil {
				t.Fatal(err)
			}
		}
		if err := kv.Delete(ctx, "k2"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: mtEvents, Subjects: []string{"jr.ev.>"},
		Storage: jetstream.FileStorage, PersistMode: jetstream.AsyncPersistMode, MaxAge: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := js.Publish(ctx, "jr.ev.delivered", fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshot maps "stream subject #n" to a digest of each message's
// descriptive headers and data, for every stream of the account.
func snapshot(t testing.TB, ctx context.Context, js jetstream.JetStream) map[string]string {
	t.Helper()
	out := map[string]string{}
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		for seq := uint64(1); ; {
			m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				t.Fatalf("%s seq %d: %v", name, seq, err)
			}
			seq = m.Sequence + 1
			key := name + " " + m.Subject
			for n := 2; out[key] != ""; n++ {
				key = fmt.Sprintf("%s %s #%d", name, m.Subject, n)
			}
			out[key] = digest(m.Header, m.Data)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func digest(h nats.Header, data []byte) string {
	var keys []string
	for k := range h {
		if !steeringHeader(k) && !directGetHeader(k) && !strings.EqualFold(k, hdrTTL) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	sum := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(sum, "%s: %q\n", k, h[k])
	}
	sum.Write(data)
	return hex.EncodeToString(sum.Sum(nil))[:16]
}

// sameSnapshot fails t unless got holds want's messages, each once;
// streams of want's that got lacks count as missing too.
func sameSnapshot(t testing.TB, want, got map[string]string) {
	t.Helper()
	// Compared per stream and subject as multisets: an import window sent
	// again while a cluster elects its leaders (Await) stores the messages
	// the first try missed after those it stored, so several messages on
	// one subject (events of different mail in one shard) may change places
	// — each is still there once, unchanged.
	bag := func(m map[string]string) map[string]int {
		out := map[string]int{}
		for k, v := range m {
			if i := strings.Index(k, " #"); i >= 0 {
				k = k[:i]
			}
			out[k+" = "+v]++
		}
		return out
	}
	w, g := bag(want), bag(got)
	for k, n := range w {
		if g[k] != n {
			t.Errorf("%s: %d times, want %d", k, g[k], n)
		}
	}
	for k, n := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("%s: %d times, not in the standalone store (duplicate or extra)", k, n)
		}
	}
}

// TestMigrateExportImport carries a standalone store through the export
// file into another store: every message once, envelopes and bodies
// unchanged, the per-message TTL shortened and not reset.
func TestMigrateExportImport(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	want := fillStandalone(t, src)
	for _, k := range []string{StreamName + " jr.s.", StreamName + " jr.h.", "JETRELAY_PARKED jr.p.",
		StreamName + " jr.w.", StreamName + " jr.b.", "KV_jetrelay_bounce $KV.jetrelay_bounce.k1"} {
		if !slices.ContainsFunc(slices.Collect(mapKeys(want)), func(s string) bool { return strings.HasPrefix(s, k) }) {
			t.Fatalf("fill wrote nothing like %q: %v", k, want)
		}
	}
	ctx := mtCtx(t)
	q, err := Open(ctx, Options{DataDir: dst, Logger: mtLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	if !standaloneData(filepath.Join(src, storeDirName)) {
		t.Fatal("a standalone store is not recognised as one")
	}
	end, err := exportStandalone(filepath.Join(src, storeDirName), filepath.Join(dst, exportFileName), mtLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if end.Messages != len(want) {
		t.Fatalf("exported %d messages, the store holds %d", end.Messages, len(want))
	}
	// Another node wrote a key before the import reached it: it is kept.
	kv, err := q.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: mtSuppress, History: 1,
		TTL: 30 * 24 * time.Hour, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k0", []byte("newer")); err != nil {
		t.Fatal(err)
	}
	if err := q.importExport(ctx, importConfig{}); err != nil {
		t.Fatal(err)
	}
	got := snapshot(t, ctx, q.js)
	if e, err := kv.Get(ctx, "k0"); err != nil || string(e.Value()) != "newer" {
		t.Fatalf("a key written before the import: %v, %v", e, err)
	}
	newer := "KV_" + mtSuppress + " $KV." + mtSuppress + ".k0"
	got[newer] = want[newer]
	sameSnapshot(t, want, got)
	for _, f := range []string{exportFileName, progressFileName} {
		if exists(filepath.Join(dst, f)) {
			t.Errorf("%s left behind after the import", f)
		}
	}
	checkTTL(t, ctx, q.js)
}

// checkTTL fails unless the auth bucket's keys kept a TTL of at most the
// original one.
func checkTTL(t testing.TB, ctx context.Context, js jetstream.JetStream) {
	t.Helper()
	s, err := js.Stream(ctx, "KV_"+mtAuth)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "$KV."+mtAuth+".k0")
	if err != nil {
		t.Fatal(err)
	}
	d, err := time.ParseDuration(m.Header.Get(hdrTTL))
	if err != nil || d <= 0 || d > mtAuthTTL {
		t.Fatalf("imported TTL %q, want (0, %s]", m.Header.Get(hdrTTL), mtAuthTTL)
	}
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestImportMsg checks the rewriting of one exported message.
func TestImportMsg(t *testing.T) {
	now := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	hdr := func(kv ...string) nats.Header {
		h := nats.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	for _, tc := range []struct {
		name   string
		cfg    jetstream.StreamConfig
		m      exportMsg
		ok     bool
		want   nats.Header
		noData bool
	}{
		{name: "plain", m: exportMsg{Time: now, Header: hdr("Jr-Env", "e")}, ok: true, want: hdr("Jr-Env", "e")},
		{name: "steering headers dropped",
			m: exportMsg{Time: now, Header: hdr("Nats-Msg-Id", "x", "Nats-Expected-Last-Sequence", "3",
				"Nats-Batch-Id", "b", "Nats-Scheduler", "jr.s.a", "Nats-Schedule-Next", "purge", "Jr-Env", "e")},
			ok: true, want: hdr("Jr-Env", "e")},
		{name: "schedule kept",
			m:  exportMsg{Time: now, Header: hdr("Nats-Schedule", "@at 2026-12-07T05:00:00Z", "Nats-Schedule-Target", "jr.q.a")},
			ok: true, want: hdr("Nats-Schedule", "@at 2026-12-07T05:00:00Z", "Nats-Schedule-Target", "jr.q.a")},
		{name: "ttl shortened", m: exportMsg{Time: now.Add(-10 * time.Minute), Header: hdr("Nats-TTL", "1h")},
			ok: true, want: hdr("Nats-TTL", "3000s")},
		{name: "ttl in seconds", m: exportMsg{Time: now.Add(-time.Minute), Header: hdr("Nats-TTL", "120")},
			ok: true, want: hdr("Nats-TTL", "60s")},
		{name: "ttl never", m: exportMsg{Time: now.Add(-time.Hour), Header: hdr("Nats-TTL", "never")},
			ok: true, want: hdr("Nats-TTL", "never")},
		{name: "ttl expired", m: exportMsg{Time: now.Add(-2 * time.Hour), Header: hdr("Nats-TTL", "1h")}},
		{name: "max age passed", cfg: jetstream.StreamConfig{MaxAge: time.Hour},
			m: exportMsg{Time: now.Add(-2 * time.Hour), Header: hdr()}},
		{name: "counter total", cfg: jetstream.StreamConfig{AllowMsgCounter: true},
			m:  exportMsg{Time: now, Header: hdr("Nats-Incr", "2"), Data: []byte(`{"val":"42"}`)},
			ok: true, want: hdr("Nats-Incr", "42"), noData: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.m.Data == nil {
				tc.m.Data = []byte("data")
			}
			msg, ok := importMsg(tc.cfg, tc.m, now)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if fmt.Sprint(msg.Header) != fmt.Sprint(tc.want) {
				t.Errorf("headers %v, want %v", msg.Header, tc.want)
			}
			if tc.noData != (msg.Data == nil) {
				t.Errorf("data %q", msg.Data)
			}
		})
	}
}

// TestExportFileCorrupt: a flipped byte or a cut file is refused.
func TestExportFileCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	rw, err := newRecordWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	m := exportMsg{Seq: 7, Time: time.Unix(0, 12345), Subject: "jr.q.a.b", Header: nats.Header{"A": {"1"}},
		Data: []byte("d")}
	if err := rw.writeMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := rw.flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	good, _ := os.ReadFile(path)
	read := func(b []byte) (exportMsg, error) {
		os.WriteFile(path, b, 0o600)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rr, err := newRecordReader(f)
		if err != nil {
			return exportMsg{}, err
		}
		_, p, err := rr.next()
		if err != nil {
			return exportMsg{}, err
		}
		return decodeMsg(p)
	}
	got, err := read(good)
	if err != nil || got.Seq != 7 || got.Subject != m.Subject || string(got.Data) != "d" || !got.Time.Equal(m.Time) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	bad := slices.Clone(good)
	bad[len(bad)-6] ^= 1
	if _, err := read(bad); !errors.Is(err, errExportCorrupt) {
		t.Errorf("flipped byte: %v", err)
	}
	if _, err := read(good[:len(good)-3]); !errors.Is(err, errExportCorrupt) {
		t.Errorf("cut file: %v", err)
	}
}

// TestStandaloneRefusedWhileMigrating: a standalone start over a data_dir
// whose move into a cluster has begun is refused, as the new store would
// take mail the import never sees.
func TestStandaloneRefusedWhileMigrating(t *testing.T) {
	for _, name := range []string{exportFileName, migratingDirName} {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		q, err := Open(mtCtx(t), Options{DataDir: dir, Logger: mtLogger(t)})
		if !errors.Is(err, ErrMigrationPending) {
			if q != nil {
				q.Close()
			}
			t.Fatalf("%s present: Open = %v, want ErrMigrationPending", name, err)
		}
	}
}

// TestPrepareStoreResumes: prepareStore finishes steps 1 and 2 from the
// states a kill -9 leaves, and refuses standalone data beside a pending
// export.
func TestPrepareStoreResumes(t *testing.T) {
	src := t.TempDir()
	want := fillStandalone(t, src)
	co := &ClusterOptions{Name: "jrtest", Listen: "127.0.0.1:0"}
	for _, tc := range []struct {
		name  string
		crash func(t *testing.T, dir string) // leaves dir as a kill -9 would
	}{
		{name: "killed during the export", crash: func(t *testing.T, dir string) {
			mustRename(t, filepath.Join(dir, storeDirName), filepath.Join(dir, migratingDirName))
			os.WriteFile(filepath.Join(dir, exportFileName+".tmp"), []byte("half"), 0o600)
			os.WriteFile(filepath.Join(dir, progressFileName), []byte(`{"id":"x","done":3}`), 0o600)
		}},
		{name: "killed before the store was kept aside", crash: func(t *testing.T, dir string) {
			mustRename(t, filepath.Join(dir, storeDirName), filepath.Join(dir, migratingDirName))
			if _, err := exportStandalone(filepath.Join(dir, migratingDirName), filepath.Join(dir, exportFileName),
				mtLogger(t)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(filepath.Join(dir, storeDirName), os.DirFS(filepath.Join(src, storeDirName))); err != nil {
				t.Fatal(err)
			}
			tc.crash(t, dir)
			if err := prepareStore(Options{DataDir: dir, Cluster: co, Logger: mtLogger(t)}); err != nil {
				t.Fatal(err)
			}
			for _, gone := range []string{migratingDirName, exportFileName + ".tmp", progressFileName} {
				if exists(filepath.Join(dir, gone)) {
					t.Errorf("%s still there", gone)
				}
			}
			ctx := mtCtx(t)
			q, err := Open(ctx, Options{DataDir: t.TempDir(), Logger: mtLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			mustRename(t, filepath.Join(dir, exportFileName), filepath.Join(q.opts.DataDir, exportFileName))
			if err := q.importExport(ctx, importConfig{}); err != nil {
				t.Fatal(err)
			}
			sameSnapshot(t, want, snapshot(t, ctx, q.js))
		})
	}
	t.Run("standalone data beside a pending export", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.CopyFS(filepath.Join(dir, storeDirName), os.DirFS(filepath.Join(src, storeDirName))); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, exportFileName), nil, 0o600)
		if err := prepareStore(Options{DataDir: dir, Cluster: co, Logger: mtLogger(t)}); err == nil {
			t.Fatal("a clustered start over standalone data and a pending export was allowed")
		}
		if !standaloneData(filepath.Join(dir, storeDirName)) {
			t.Fatal("the standalone store was touched")
		}
	})
}

func mustRename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}
