package queue

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedUser is the NATS user of the embedded server's client port.
const EmbeddedUser = "jetrelay"

// PasswordFileName is the file under data_dir holding the embedded server's password.
const PasswordFileName = "nats.password"

// embeddedMaxPayload raises the embedded server's max_payload so that most
// bodies fit one message; larger bodies are chunked whatever the limit.
const embeddedMaxPayload = 8 << 20

// The embedded server's file stores: blocks of at most 1 MiB, a block's
// cache dropped 250 ms and its per-subject state 15 s after its last access
// (nats-server: up to 8 MiB, 10 s and 2 min). A block being written keeps
// its whole content cached while any consumer reads the stream, so with
// nats-server's sizes the events stream, the message index's streams and
// the queue held 50-60 MB of block caches under load, over half of the
// live heap, which the GC doubles; and a deep queue's per-subject state
// (each entry has a subject of its own, ~450 B) stayed for two minutes
// after its blocks were written. The delivery consumer reads an entry
// within milliseconds of its store, and the events stream's consumers
// within a few (they pull continuously; the index's 300 ms batching is on
// its side), so they still read from the cache; with a 2 s expiry the
// blocks written in the last 2 s stayed cached, ~20 MB under the 4 KiB
// load. A block touched again later is read (at most 1 MiB) and its
// subject state rebuilt once. Patch 0003 in third_party/nats-server.
const (
	embeddedMaxBlockSize       = 1 << 20
	embeddedCacheExpire        = 250 * time.Millisecond
	embeddedSubjectStateExpire = 15 * time.Second
)

// DefaultServerName is the embedded server's name when Options.ServerName
// is "". A standalone server's store does not depend on its name (streams
// live under StoreDir/jetstream/<account>); a clustered one's Raft
// identity does, so a cluster node must keep its name.
const DefaultServerName = "jetrelay"

// startEmbedded runs an in-process nats-server with JetStream stored under
// dataDir/nats. listen "" keeps it in-process only (no TCP port). With
// opts.Cluster it is a node of a JetStream cluster: it returns once its
// ports listen, before the cluster has a meta leader (Await waits for
// that).
func startEmbedded(opts Options) (*server.Server, string, error) {
	if err := prepareStore(opts); err != nil { // migrate.go: never clustered over standalone data
		return nil, "", err
	}
	pass, err := EnsurePassword(opts.DataDir)
	if err != nil {
		return nil, "", err
	}
	so, err := embeddedOptions(opts, pass)
	if err != nil {
		return nil, "", err
	}
	ns, err := server.NewServer(so)
	if err != nil {
		return nil, "", fmt.Errorf("embedded nats: %w", err)
	}
	ns.SetLoggerV2(newServerLogger(opts.Logger), false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, "", notStarted(opts)
	}
	return ns, pass, nil
}

// embeddedOptions are the nats-server options of the embedded server.
func embeddedOptions(opts Options, pass string) (*server.Options, error) {
	name := opts.ServerName
	if name == "" {
		name = DefaultServerName
	}
	so := &server.Options{
		ServerName:               name,
		JetStream:                true,
		StoreDir:                 filepath.Join(opts.DataDir, "nats"),
		NoSigs:                   true,
		NoLog:                    true,
		MaxPayload:               embeddedMaxPayload,
		SyncAlways:               opts.SyncInterval == 0,
		SyncInterval:             opts.SyncInterval,
		JetStreamMaxMemory:       256 << 20,
		StreamMaxBlockSize:       embeddedMaxBlockSize,
		StreamCacheExpire:        embeddedCacheExpire,
		StreamSubjectStateExpire: embeddedSubjectStateExpire,
	}
	EmbeddedAuth(so, pass)
	switch {
	case opts.Listen == "" && opts.Cluster != nil:
		// nats-server starts routing only once the client port listens
		// (DontListen would leave the routes waiting forever): a random
		// loopback port, password-protected like any.
		so.Host, so.Port = "127.0.0.1", server.RANDOM_PORT
	case opts.Listen == "":
		so.DontListen = true
	default:
		host, port, err := splitListen("nats.listen", opts.Listen)
		if err != nil {
			return nil, err
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		so.Host, so.Port = host, port
	}
	if opts.Cluster != nil {
		if err := clusterOptions(so, opts.Cluster); err != nil {
			return nil, err
		}
	}
	return so, nil
}

// splitListen parses a host:port address of the setting named key.
func splitListen(key, addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: %w", key, addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("%s %q: bad port", key, addr)
	}
	return host, p, nil
}

// notStarted explains an embedded server that did not get ready.
func notStarted(opts Options) error {
	var ports []string
	if opts.Listen != "" {
		ports = append(ports, opts.Listen+" (nats.listen)")
	}
	if opts.Cluster != nil {
		ports = append(ports, opts.Cluster.Listen+" (nats.cluster.listen)")
	}
	if len(ports) == 0 {
		return errors.New("embedded nats did not start")
	}
	return fmt.Errorf("embedded nats did not start; is %s already in use? "+
		"stop the other process or choose a free port", strings.Join(ports, " or "))
}

// EnsurePassword returns the embedded server's password from
// dataDir/nats.password, creating it (mode 0600) on first use.
func EnsurePassword(dataDir string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dataDir, PasswordFileName)
	if b, err := os.ReadFile(path); err == nil {
		if p := strings.TrimSpace(string(b)); p != "" {
			return p, nil
		}
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	pass := hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(pass+"\n"), 0o600); err != nil {
		return "", err
	}
	return pass, nil
}
