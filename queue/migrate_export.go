package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// NATS headers the export and import look at (nats-server stream.go).
const (
	hdrSchedule     = "Nats-Schedule"
	hdrScheduler    = "Nats-Scheduler"
	hdrScheduleNext = "Nats-Schedule-Next"
	hdrMarkerReason = "Nats-Marker-Reason"
	hdrTTL          = "Nats-TTL"
	hdrIncr         = "Nats-Incr"
	scheduleNextEnd = "purge"
)

// exportLogEvery is how many messages pass between progress log lines.
const exportLogEvery = 10000

// exportStandalone starts a private standalone server (in-process, no
// listener) on storeDir, writes every stream of the account with its
// messages to path (through path+".tmp", fsynced, renamed) and stops the
// server.
func exportStandalone(storeDir, path string, log zerolog.Logger) (exportEnd, error) {
	var pw [16]byte
	if _, err := rand.Read(pw[:]); err != nil {
		return exportEnd{}, err
	}
	pass := hex.EncodeToString(pw[:])
	ns, err := server.NewServer(&server.Options{
		ServerName:         "jetrelay-migrate",
		JetStream:          true,
		StoreDir:           storeDir,
		DontListen:         true,
		NoSigs:             true,
		NoLog:              true,
		MaxPayload:         embeddedMaxPayload,
		Users:              []*server.User{{Username: EmbeddedUser, Password: pass}},
		JetStreamMaxMemory: 256 << 20,
	})
	if err != nil {
		return exportEnd{}, err
	}
	go ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(30 * time.Second) {
		return exportEnd{}, errors.New("the export server did not start")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.UserInfo(EmbeddedUser, pass),
		nats.Name("jetrelay-migrate-export"))
	if err != nil {
		return exportEnd{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return exportEnd{}, err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return exportEnd{}, err
	}
	end, err := writeExport(js, f, storeDir, log)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return exportEnd{}, fmt.Errorf("export to %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return exportEnd{}, err
	}
	return end, syncDir(path)
}

// writeExport writes the info record, every stream and the end record.
func writeExport(js jetstream.JetStream, f *os.File, storeDir string, log zerolog.Logger) (exportEnd, error) {
	ctx := context.Background()
	var names []string
	lister := js.StreamNames(ctx)
	for n := range lister.Name() {
		names = append(names, n)
	}
	if err := lister.Err(); err != nil {
		return exportEnd{}, fmt.Errorf("list streams: %w", err)
	}
	slices.Sort(names)
	rw, err := newRecordWriter(f)
	if err != nil {
		return exportEnd{}, err
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return exportEnd{}, err
	}
	info := exportInfo{ID: hex.EncodeToString(id[:]), Created: time.Now().UTC(), Source: storeDir}
	if err := rw.writeJSON(recInfo, info); err != nil {
		return exportEnd{}, err
	}
	var end exportEnd
	for _, name := range names {
		n, err := exportStream(ctx, js, rw, name)
		if err != nil {
			return exportEnd{}, fmt.Errorf("stream %s: %w", name, err)
		}
		log.Info().Str("event", "nats_migrate").Str("step", "export").Str("stream", name).
			Int("messages", n).Msg("stream exported")
		end.Streams++
		end.Messages += n
	}
	if err := rw.writeJSON(recEnd, end); err != nil {
		return exportEnd{}, err
	}
	return end, rw.flush()
}

// exportStream writes one stream's configuration and messages in sequence
// order, one message in memory at a time.
//
// The export server is private but not frozen: a schedule that comes due
// while the export runs fires (its output is appended past the last
// sequence seen at the start, and the schedule message is purged), and
// expiring messages leave markers. An output whose schedule message was
// already exported is left out (the schedule fires again in the cluster);
// one whose schedule fired before the export reached it is exported in its
// place. Markers are left out: they stand for absent keys.
func exportStream(ctx context.Context, js jetstream.JetStream, rw *recordWriter, name string) (int, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	cfg := s.CachedInfo().Config
	if err := rw.writeJSON(recStream, cfg); err != nil {
		return 0, err
	}
	last := s.CachedInfo().State.LastSeq
	scheduled := map[uint64]struct{}{} // hashes of exported schedule subjects
	floor := finishedFloor(ctx, s, name)
	n := 0
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read seq %d: %w", seq, err)
		}
		seq = m.Sequence + 1
		if m.Sequence <= floor && strings.HasPrefix(m.Subject, SubjReady+".") {
			continue // finished, not yet swept (sweep.go)
		}
		keep, err := exportKeep(ctx, s, cfg, m, m.Sequence > last, scheduled)
		if err != nil {
			return n, err
		}
		if !keep {
			continue
		}
		for k := range m.Header {
			if directGetHeader(k) {
				delete(m.Header, k)
			}
		}
		err = rw.writeMsg(exportMsg{Seq: m.Sequence, Time: m.Time, Subject: m.Subject, Header: m.Header, Data: m.Data})
		if err != nil {
			return n, err
		}
		n++
	}
}

// finishedFloor is the delivery consumer's ack floor when name is the
// queue stream (its jr.q entries at or below it are finished), else 0.
func finishedFloor(ctx context.Context, s jetstream.Stream, name string) uint64 {
	if name != StreamName {
		return 0
	}
	c, err := s.Consumer(ctx, ConsumerName)
	if err != nil {
		return 0
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0
	}
	return info.AckFloor.Stream
}

// exportKeep says whether m belongs in the export (see exportStream).
func exportKeep(
	ctx context.Context, s jetstream.Stream, cfg jetstream.StreamConfig,
	m *jetstream.RawStreamMsg, fired bool, scheduled map[uint64]struct{},
) (bool, error) {
	if m.Header.Get(hdrMarkerReason) != "" {
		return false, nil
	}
	if fired {
		if from := m.Header.Get(hdrScheduler); from != "" {
			_, seen := scheduled[subjectHash(from)]
			// A repeating schedule is still there and was exported.
			return !seen && m.Header.Get(hdrScheduleNext) == scheduleNextEnd, nil
		}
	}
	if m.Header.Get(hdrSchedule) != "" {
		scheduled[subjectHash(m.Subject)] = struct{}{}
	}
	if cfg.AllowMsgCounter {
		// A counter is carried as its total: only the subject's last
		// message, re-added as one increment (migrate_import.go).
		lm, err := s.GetLastMsgForSubject(ctx, m.Subject)
		if err != nil {
			return false, fmt.Errorf("counter %s: %w", m.Subject, err)
		}
		return lm.Sequence == m.Sequence, nil
	}
	return true, nil
}

// subjectHash is a 64-bit FNV-1a of subj: the set of exported schedules
// holds these, not the subjects, to stay small.
func subjectHash(subj string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(subj))
	return h.Sum64()
}

// directGetHeader reports whether k is one of the headers a direct get
// adds to the stored message's own (nats-server stream.go, JSStream...).
func directGetHeader(k string) bool {
	for _, n := range []string{jetstream.StreamHeader, jetstream.SequenceHeader, jetstream.TimeStampHeaer,
		jetstream.SubjectHeader, jetstream.LastSequenceHeader, "Nats-Num-Pending", "Nats-UpTo-Sequence"} {
		if strings.EqualFold(k, n) {
			return true
		}
	}
	return false
}
