// Package queue owns jetrelay's durable state in NATS JetStream: the
// embedded or external server connection, the queue stream and its
// delivery consumer, the envelope codec, and the operations on entries
// (enqueue, lease, defer, hold, finish, body reclaim).
//
// Model. One stream, JETRELAY_SPOOL (limits retention: finished entries are
// purged in bulk below the delivery consumer's ack floor, sweep.go), holds:
//
//	jr.q.<id>.<domain>   ready entries, consumed by the durable "deliver" consumer
//	jr.s.<id>.<domain>   deferred entries: message schedules (Nats-Schedule: @at T,
//	                     Nats-Schedule-Target: jr.q.<id>.<domain>); the server moves
//	                     them to jr.q at T, so waiting mail holds no consumer slot
//	jr.h.<id>.<domain>   held entries (operator hold)
//	jr.b.<id>.<n>        body chunks of a message stored apart from its entries
//	jr.p.<due>.<domain>  entries of a failing destination, parked (park.go), in a
//	                     stream of their own: JETRELAY_PARKED
//	jr.w.<domain>        a parked domain's wake-up schedule (into jr.q.~wake.<domain>)
//
// One entry per (message, recipient domain). A message with one entry and a
// body that fits in one NATS message is stored as a single publish with the
// body inline. Otherwise chunks and entries are published as one JetStream
// atomic batch: all of it is stored or none of it. Enqueue returns only after
// JetStream acknowledged the publish; with the embedded server's default
// sync=always that means the data is on disk.
//
// Guarantees: at-least-once. An entry leaves jr.q only after Done, Defer,
// Hold or Park acknowledged it (sweep.go); the entries of a crashed or cut-off node are
// redelivered to the others after AckWait (20 s), which heartbeats keep
// from expiring while a node holds them.
// Body chunks are purged when the last entry of their message is done.
package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Stream and subject names.
const (
	StreamName = "JETRELAY_SPOOL"
	// LegacyStreamName is the work-queue stream of jetrelay before issue
	// 20; Open moves what it holds into StreamName (upgrade.go).
	LegacyStreamName = "JETRELAY_QUEUE"
	// ParkStreamName holds parked entries (jr.p.>, park.go) apart from the
	// queue stream's churn.
	ParkStreamName = "JETRELAY_PARKED"
	ConsumerName   = "deliver"
	SubjReady      = "jr.q"
	SubjScheduled  = "jr.s"
	SubjHeld       = "jr.h"
	SubjBody       = "jr.b"
	HeaderEnv      = "Jr-Env"
	// AckWait is how long an entry stays leased without a heartbeat: a
	// dead node's entries go to the others after it (entry.go, Lease).
	AckWait = 20 * time.Second
)

// blockSizeHint is the queue stream's MaxMsgsPerSubject (see StreamConfig).
const blockSizeHint = 1 << 30

// Options says how to reach NATS.
type Options struct {
	DataDir string
	// URL "" starts the embedded server; otherwise a comma-separated server list.
	URL          string
	Listen       string // embedded server's client port ("" = in-process only)
	Credentials  string
	User         string
	PasswordFile string
	Password     string // alternative to PasswordFile
	Replicas     int
	SyncInterval time.Duration // 0 = fsync before every ack (embedded)
	Logger       zerolog.Logger
	// Publish bounds Enqueue's attempts (publish.go); zero = defaults.
	Publish PublishOptions
	// Name is the NATS connection name.
	Name string
	// AckWait overrides the lease time (0: AckWait); tests shorten it.
	AckWait time.Duration
	// FinishedGrace overrides how long an entry acknowledged above the
	// ack floor waits before it is deleted on its own (sweep.go).
	FinishedGrace time.Duration
	// ServerName is the embedded server's name ("" = "jetrelay"); in a
	// cluster every node needs its own.
	ServerName string
	// Cluster, when set, makes the embedded server join or form a
	// JetStream cluster over routes; nil = standalone.
	Cluster *ClusterOptions
}

// ClusterOptions are the embedded server's cluster (route) settings.
type ClusterOptions struct {
	// Name is the cluster's name, the same on every node.
	Name string
	// Listen is this node's route address (host:port).
	Listen string
	// Routes are the other nodes' route URLs (nats://host:port); this
	// node's own address may be among them.
	Routes []string
	// Password is the shared route secret.
	Password string
	// TLSCert and TLSKey enable TLS on routes; TLSCAFile, when set,
	// verifies the peers' certificates (mutual TLS).
	TLSCert, TLSKey, TLSCAFile string
}

// Queue is a connection to jetrelay's JetStream state.
type Queue struct {
	opts   Options
	log    zerolog.Logger
	ns     *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	parked jetstream.Stream // ParkStreamName
	// chunkSize is the largest body piece stored in one NATS message.
	chunkSize int
	// closed is closed by the connection's ClosedHandler.
	closed chan struct{}
	// dial opens another connection like nc (name suffix, closed channel).
	dial func(suffix string, closed chan struct{}) (*nats.Conn, error)
	// lease is the delivery consumer's own connection (entry.go, Lease).
	leaseMu     sync.Mutex
	leaseNC     *nats.Conn
	leaseClosed chan struct{}
	// sweeper removes finished entries (sweep.go); nil until Open.
	sweeper *sweeper
}

// drainTimeout bounds how long Close waits for pending acks and publishes.
const drainTimeout = 5 * time.Second

// Open connects to NATS (starting the embedded server when URL is ""),
// and creates or updates the queue stream and delivery consumer.
func Open(ctx context.Context, opts Options) (*Queue, error) {
	q, err := Connect(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := q.setup(ctx); err != nil {
		q.Close()
		return nil, err
	}
	if err := q.importPending(ctx); err != nil { // migrate.go: a standalone store's export
		q.Close()
		return nil, err
	}
	q.sweeper = newSweeper(q)
	go q.sweeper.run()
	return q, nil
}

// Connect connects (starting the embedded server when URL is "") without
// touching streams: for CLI tools that only look.
func Connect(ctx context.Context, opts Options) (*Queue, error) {
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.Name == "" {
		opts.Name = "jetrelay"
	}
	q := &Queue{opts: opts, log: opts.Logger, closed: make(chan struct{})}
	natsOpts, err := q.connOptions()
	if err != nil {
		return nil, err
	}
	url := opts.URL
	q.dial = func(suffix string, closed chan struct{}) (*nats.Conn, error) {
		o := append(slices.Clip(natsOpts), nats.Name(opts.Name+suffix),
			nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
		nc, err := nats.Connect(url, o...)
		return nc, redactError(err, url)
	}
	nc, err := nats.Connect(url, natsOpts...)
	if err != nil {
		q.shutdownServer()
		where := "(embedded)"
		if url != "" {
			where = RedactURL(url)
		}
		return nil, fmt.Errorf("connect to NATS %s: %w", where, redactError(err, url))
	}
	q.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		q.Close()
		return nil, err
	}
	q.js = js
	// Leave room for headers (envelope, batch ids) below max_payload.
	q.chunkSize = int(nc.MaxPayload()) - 64<<10
	if q.chunkSize > 4<<20 {
		q.chunkSize = 4 << 20
	}
	return q, nil
}

// connOptions returns the NATS connection options for q: name, reconnect
// policy, lifecycle logging and credentials. With no URL it starts the
// embedded server (q.ns) and connects in-process.
func (q *Queue) connOptions() ([]nats.Option, error) {
	opts := q.opts
	natsOpts := []nats.Option{
		nats.Name(opts.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				q.log.Warn().Err(err).Str("event", "nats_disconnected").Msg("NATS connection lost")
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(q.closed) }),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			q.log.Info().Str("event", "nats_reconnected").Str("url", nc.ConnectedUrlRedacted()).
				Msg("NATS connection restored")
		}),
	}
	if opts.URL == "" {
		ns, pass, err := startEmbedded(opts)
		if err != nil {
			return nil, err
		}
		q.ns = ns
		return append(natsOpts, nats.InProcessServer(ns), nats.UserInfo(EmbeddedUser, pass)), nil
	}
	auth, err := remoteAuth(opts)
	if err != nil {
		return nil, err
	}
	return append(natsOpts, auth...), nil
}

// remoteAuth returns the credentials option for a remote NATS server:
// a credentials file, or a user with a password (inline or from a file).
func remoteAuth(opts Options) ([]nats.Option, error) {
	switch {
	case opts.Credentials != "":
		return []nats.Option{nats.UserCredentials(opts.Credentials)}, nil
	case opts.User != "":
		pass := opts.Password
		if pass == "" && opts.PasswordFile != "" {
			b, err := os.ReadFile(opts.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("nats password_file: %w", err)
			}
			pass = strings.TrimSpace(string(b))
		}
		return []nats.Option{nats.UserInfo(opts.User, pass)}, nil
	}
	return nil, nil
}

// StreamConfig is the queue stream's configuration.
func (q *Queue) StreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "jetrelay queue: entries, schedules, held entries and bodies",
		Subjects: []string{
			SubjReady + ".>", SubjScheduled + ".>", SubjHeld + ".>", SubjBody + ".>", SubjWake + ".>",
		},
		Retention: jetstream.LimitsPolicy, // finished entries: sweep.go
		// A per-subject limit no subject reaches (each holds one entry, or
		// a few finished ones before a sweep): with it nats-server sizes
		// the stream's blocks at 4 MiB like a work queue's, not the 8 MiB
		// of a limits stream (stream.go, autoTuneFileStorageBlockSize).
		MaxMsgsPerSubject:  blockSizeHint,
		Storage:            jetstream.FileStorage,
		Replicas:           q.opts.Replicas,
		AllowMsgSchedules:  true,
		AllowAtomicPublish: true,
		AllowDirect:        true,
		AllowRollup:        true,
		Duplicates:         DuplicateWindow, // covers Enqueue's retries (publish.go)
	}
}

// ParkStreamConfig is the parked-entries stream's configuration. Parked
// entries live apart from the queue stream: there, every block also holds
// entries that are delivered and deleted within seconds, and a block left
// half full of parked entries is compacted (loaded and rewritten) on the
// hot path of acknowledgements; here, blocks are written once and touched
// again only when their entries are unparked.
func (q *Queue) ParkStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        ParkStreamName,
		Description: "jetrelay parked entries of failing destinations (see JETRELAY_QUEUE)",
		Subjects:    []string{SubjParked + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    q.opts.Replicas,
		AllowDirect: true,
	}
}

// setup creates or updates the streams, the delivery consumer and the
// retry bucket, waiting (Await) while JetStream is not ready: a cluster
// node started before the others blocks here until they are up.
func (q *Queue) setup(ctx context.Context) error {
	var legacy bool
	err := q.Await(ctx, "stream "+LegacyStreamName+" (upgrade)", func(ctx context.Context) (err error) {
		legacy, err = q.releaseLegacy(ctx) // upgrade.go
		return err
	})
	if err != nil {
		return err
	}
	err = q.Await(ctx, "stream "+StreamName, func(ctx context.Context) error {
		s, err := q.js.CreateOrUpdateStream(ctx, q.StreamConfig())
		if err != nil {
			return fmt.Errorf("create stream %s: %w", StreamName, err)
		}
		q.stream = s
		return nil
	})
	if err != nil {
		return err
	}
	if err := checkFeatures(q.stream.CachedInfo()); err != nil {
		return err
	}
	err = q.Await(ctx, "stream "+ParkStreamName, func(ctx context.Context) error {
		ps, err := q.js.CreateOrUpdateStream(ctx, q.ParkStreamConfig())
		if err != nil {
			return fmt.Errorf("create stream %s: %w", ParkStreamName, err)
		}
		q.parked = ps
		return nil
	})
	if err != nil {
		return err
	}
	err = q.Await(ctx, "consumer "+ConsumerName, func(ctx context.Context) error {
		_, err := q.stream.CreateOrUpdateConsumer(ctx, q.consumerConfig())
		if err != nil {
			return fmt.Errorf("create consumer %s: %w", ConsumerName, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = q.Await(ctx, "bucket "+RetryBucket, func(ctx context.Context) error {
		_, err := q.retryBucket(ctx)
		return err
	})
	if err != nil || !legacy {
		return err
	}
	// Each attempt of the move is bounded like every other step here: an
	// answer lost in a leader change (a publish acknowledgement, an API
	// reply) ends the attempt instead of waiting out ctx, and the next one
	// goes on from what the last purge left; the message ids make a
	// repeated publish a duplicate (upgrade.go).
	return q.Await(ctx, "stream "+LegacyStreamName+" (move)", q.moveLegacy)
}

// consumerConfig is the delivery consumer's configuration.
func (q *Queue) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "jetrelay delivery workers",
		FilterSubject: SubjReady + ".>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       q.ackWait(),
		MaxDeliver:    -1,
		MaxAckPending: 20000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
}

// checkFeatures refuses a queue stream that came back without message
// schedules or atomic batches: a server older than 2.12 ignores the
// settings it does not know.
func checkFeatures(info *jetstream.StreamInfo) error {
	if info == nil {
		return nil
	}
	if !info.Config.AllowMsgSchedules || !info.Config.AllowAtomicPublish {
		return fmt.Errorf("stream %s: the NATS server does not support message schedules and atomic "+
			"batch publishing (jetrelay needs nats-server 2.12 or later with JetStream)", StreamName)
	}
	return nil
}

// Stream returns the queue stream handle (after Open).
func (q *Queue) Stream(ctx context.Context) (jetstream.Stream, error) {
	return q.handle(ctx, &q.stream, StreamName)
}

// ParkStream returns the parked-entries stream handle.
func (q *Queue) ParkStream(ctx context.Context) (jetstream.Stream, error) {
	return q.handle(ctx, &q.parked, ParkStreamName)
}

// handle returns *h, looking stream name up once when it is not set yet.
func (q *Queue) handle(ctx context.Context, h *jetstream.Stream, name string) (jetstream.Stream, error) {
	if *h != nil {
		return *h, nil
	}
	s, err := q.js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	*h = s
	return s, nil
}

// StreamFor names the stream that stores subject (or subject filter).
func StreamFor(subject string) string {
	if strings.HasPrefix(subject, SubjParked+".") {
		return ParkStreamName
	}
	return StreamName
}

// streamFor returns the handle of the stream that stores subject.
func (q *Queue) streamFor(ctx context.Context, subject string) (jetstream.Stream, error) {
	if StreamFor(subject) == ParkStreamName {
		return q.ParkStream(ctx)
	}
	return q.Stream(ctx)
}

// JetStream returns the JetStream context for packages that own their own
// streams and buckets (events, suppression list).
func (q *Queue) JetStream() jetstream.JetStream { return q.js }

// Conn returns the NATS connection.
func (q *Queue) Conn() *nats.Conn { return q.nc }

// Replicas returns the configured replica count for new streams.
func (q *Queue) Replicas() int { return q.opts.Replicas }

// Embedded returns the in-process server, or nil when connected to an external one.
func (q *Queue) Embedded() *server.Server { return q.ns }

// ClientURL returns the embedded server's TCP client URL ("" when none).
func (q *Queue) ClientURL() string {
	if q.ns == nil || q.opts.Listen == "" {
		return ""
	}
	return q.ns.ClientURL()
}

// Ping checks that JetStream answers.
func (q *Queue) Ping(ctx context.Context) error {
	if q.nc == nil || !q.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	_, err := q.js.AccountInfo(ctx)
	return err
}

// Close drains the connections (the lease connection first: its acks)
// and shuts the embedded server down.
func (q *Queue) Close() {
	if q.sweeper != nil {
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		q.sweeper.close(ctx)
		cancel()
	}
	q.leaseMu.Lock()
	if lnc := q.leaseNC; lnc != nil {
		if err := lnc.Drain(); err == nil {
			select {
			case <-q.leaseClosed:
			case <-time.After(drainTimeout):
			}
		}
		lnc.Close()
	}
	q.leaseMu.Unlock()
	if q.nc != nil {
		if err := q.nc.Drain(); err == nil {
			select {
			case <-q.closed:
			case <-time.After(drainTimeout):
				q.log.Warn().Str("event", "nats_drain_timeout").Msg("NATS connection did not drain in time; closing")
			}
		}
		q.nc.Close()
	}
	q.shutdownServer()
}

func (q *Queue) shutdownServer() {
	if q.ns != nil {
		q.ns.Shutdown()
		q.ns.WaitForShutdown()
	}
}
