package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Import windows: publishes in flight before their acks are awaited and
// the progress recorded. A window is kept in memory for its retries.
const (
	importWindowMsgs  = 256
	importWindowBytes = 16 << 20
)

// importConfig tunes importExport; the zero value is production.
type importConfig struct {
	// abortIn makes the import stop, as a crash would, once the first
	// window of that stream was published and acknowledged but before its
	// progress is recorded (tests).
	abortIn string
}

// errImportAborted is returned when importConfig.abortIn stops an import.
var errImportAborted = errors.New("queue: migration import aborted (test hook)")

// importProgress is the progress file: how many message records of export
// ID are imported (acknowledged by the cluster).
type importProgress struct {
	ID   string `json:"id"`
	Done int    `json:"done"`
}

// importer carries one import's state.
type importer struct {
	q        *Queue
	cfg      importConfig
	log      zerolog.Logger
	info     exportInfo
	progress string
	done     int // message records imported, per the progress file
	index    int // message records read so far
	stream   jetstream.StreamConfig
	counts   map[string]int
	skipped  int
	window   []*nats.Msg
	winBytes int
}

// importExport imports data_dir/nats-migrate.export (step 3, migrate.go).
func (q *Queue) importExport(ctx context.Context, cfg importConfig) error {
	dir := q.opts.DataDir
	path := filepath.Join(dir, exportFileName)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rr, err := newRecordReader(f)
	if err != nil {
		return err
	}
	kind, payload, err := rr.next()
	if err != nil || kind != recInfo {
		return fmt.Errorf("%w: no info record", errExportCorrupt)
	}
	im := &importer{q: q, cfg: cfg, progress: filepath.Join(dir, progressFileName), counts: map[string]int{},
		log: q.log.With().Str("event", migrateEventLogKey).Str("step", "import").Logger()}
	if err := json.Unmarshal(payload, &im.info); err != nil {
		return fmt.Errorf("%w: info: %v", errExportCorrupt, err)
	}
	im.done = readProgress(im.progress, im.info.ID)
	im.log.Info().Str("path", path).Int("resume_after", im.done).Msg("importing the standalone store's export")
	if err := im.run(ctx, rr); err != nil {
		return fmt.Errorf("queue: import %s: %w", path, err)
	}
	im.log.Info().Int("messages", im.index).Int("expired", im.skipped).Msg("standalone store imported")
	// The export goes first: without it a stale progress file is ignored.
	if err := removeFile(path); err != nil {
		return err
	}
	return removeFile(im.progress)
}

// run reads every record after the info record.
func (im *importer) run(ctx context.Context, rr *recordReader) error {
	for {
		kind, payload, err := rr.next()
		if err != nil {
			return err
		}
		switch kind {
		case recStream:
			if err := im.flush(ctx); err != nil {
				return err
			}
			cfg, err := decodeStream(payload)
			if err != nil {
				return err
			}
			if cfg.Name == LegacyStreamName {
				// An older jetrelay's work-queue stream: every entry in it
				// is unfinished; its messages go into today's queue stream.
				cfg = im.q.StreamConfig()
			}
			if err := im.ensureStream(ctx, cfg); err != nil {
				return err
			}
			im.stream = cfg
		case recMsg:
			if err := im.add(ctx, payload); err != nil {
				return err
			}
		case recEnd:
			if err := im.flush(ctx); err != nil {
				return err
			}
			var end exportEnd
			if err := json.Unmarshal(payload, &end); err != nil || end.Messages != im.index {
				return fmt.Errorf("%w: end record does not match (%d messages read)", errExportCorrupt, im.index)
			}
			for name, n := range im.counts {
				im.log.Info().Str("stream", name).Int("messages", n).Msg("stream imported")
			}
			return nil
		default:
			return fmt.Errorf("%w: record kind %q", errExportCorrupt, kind)
		}
	}
}

// ensureStream creates the exported stream with this node's replicas,
// unless it exists (another node, or an earlier run, created it).
func (im *importer) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) error {
	cfg.Replicas = max(im.q.opts.Replicas, 1)
	if cfg.Replicas > 1 {
		// Replicas carry durability; the owner's own setup may set it again.
		cfg.PersistMode = jetstream.DefaultPersistMode
	}
	for k := range cfg.Metadata {
		if strings.HasPrefix(k, "_nats.") {
			delete(cfg.Metadata, k)
		}
	}
	return im.q.Await(ctx, "stream "+cfg.Name+" (migration)", func(ctx context.Context) error {
		_, err := im.q.js.Stream(ctx, cfg.Name)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
		_, err = im.q.js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil
		}
		return err
	})
}

// add prepares one message record and publishes its window when full.
func (im *importer) add(ctx context.Context, payload []byte) error {
	im.index++
	if im.index <= im.done {
		return nil
	}
	m, err := decodeMsg(payload)
	if err != nil {
		return err
	}
	m.Data = bytes.Clone(m.Data) // the record buffer is reused
	msg, ok := importMsg(im.stream, m, time.Now())
	if !ok {
		im.skipped++
	} else {
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("jrmig-%s-%s-%d", im.info.ID, im.stream.Name, m.Seq))
		msg.Header.Set(jetstream.ExpectedStreamHeader, im.stream.Name)
		if im.stream.MaxMsgsPerSubject == 1 {
			// A key (KV, history 1) is written only where it is absent:
			// a newer value another node wrote, or this import's own
			// write before a restart, is kept (publishWindow).
			msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		}
		im.window = append(im.window, msg)
		im.winBytes += len(msg.Data) + len(msg.Subject)
		im.counts[im.stream.Name]++
	}
	if len(im.window) >= importWindowMsgs || im.winBytes >= importWindowBytes {
		return im.flush(ctx)
	}
	return nil
}

// flush publishes the window until every message is acknowledged, then
// records the progress. While JetStream is not ready (a leader being
// elected) the window is sent again (Await) with the same Nats-Msg-Ids:
// the messages already stored are answered as duplicates.
func (im *importer) flush(ctx context.Context) error {
	if im.index == im.done {
		return nil
	}
	err := im.q.Await(ctx, "import into "+im.stream.Name, im.publishWindow)
	if err != nil {
		return err
	}
	if im.cfg.abortIn != "" && im.cfg.abortIn == im.stream.Name && len(im.window) > 0 {
		return errImportAborted
	}
	im.window, im.winBytes = im.window[:0], 0
	if err := writeProgress(im.progress, importProgress{ID: im.info.ID, Done: im.index}); err != nil {
		return err
	}
	im.done = im.index
	return nil
}

func (im *importer) publishWindow(ctx context.Context) error {
	return im.q.publishAll(ctx, im.window, keyPresent)
}

// keyPresent reports whether err answers a key's conditional write
// (ExpectedLastSubjSeqHeader 0) with "the key exists": the value there is
// newer or this import's own, and is kept.
func keyPresent(msg *nats.Msg, err error) bool {
	var apiErr *jetstream.APIError
	return msg.Header.Get(jetstream.ExpectedLastSubjSeqHeader) == "0" && errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// importMsg turns an exported message into the publish that re-creates
// it; ok is false when the message has expired since it was stored.
// Headers that steer a publish rather than describe the message (ids,
// expectations, batches, a scheduler's own marks) are dropped; a
// per-message TTL is shortened by the message's age; a counter's total
// is re-added as one increment.
func importMsg(cfg jetstream.StreamConfig, m exportMsg, now time.Time) (*nats.Msg, bool) {
	age := now.Sub(m.Time)
	if cfg.MaxAge > 0 && age >= cfg.MaxAge {
		return nil, false
	}
	h := nats.Header{}
	for k, v := range m.Header {
		if !steeringHeader(k) {
			h[k] = v
		}
	}
	msg := &nats.Msg{Subject: m.Subject, Header: h, Data: m.Data}
	if ttl := h.Get(hdrTTL); ttl != "" && !strings.EqualFold(ttl, "never") {
		d, err := time.ParseDuration(ttl)
		if err != nil {
			s, _ := strconv.ParseInt(ttl, 10, 64)
			d = time.Duration(s) * time.Second
		}
		left := d - age
		if left < time.Second {
			return nil, false
		}
		h.Set(hdrTTL, strconv.FormatInt(int64(math.Ceil(left.Seconds())), 10)+"s")
	}
	if cfg.AllowMsgCounter {
		var v struct {
			Val string `json:"val"`
		}
		if json.Unmarshal(m.Data, &v) != nil || v.Val == "" {
			return nil, false
		}
		h.Set(hdrIncr, v.Val)
		msg.Data = nil
	}
	return msg, true
}

// steeringHeader reports whether header k steers a publish (and must not
// be replayed) rather than describing the stored message.
func steeringHeader(k string) bool {
	for _, p := range []string{"Nats-Expected-", "Nats-Batch-"} {
		if len(k) >= len(p) && strings.EqualFold(k[:len(p)], p) {
			return true
		}
	}
	for _, n := range []string{jetstream.MsgIDHeader, hdrScheduler, hdrScheduleNext, hdrIncr, "Nats-Stream-Source"} {
		if strings.EqualFold(k, n) {
			return true
		}
	}
	return false
}

// readProgress returns how many records of export id are imported (0
// without a progress file or with one of another export).
func readProgress(path, id string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var p importProgress
	if json.Unmarshal(b, &p) != nil || p.ID != id {
		return 0
	}
	return p.Done
}

// writeProgress replaces the progress file atomically and durably.
func writeProgress(path string, p importProgress) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(path)
}
