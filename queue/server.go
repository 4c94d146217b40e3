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

// startEmbedded runs an in-process nats-server with JetStream stored under
// dataDir/nats. listen "" keeps it in-process only (no TCP port).
func startEmbedded(opts Options) (*server.Server, string, error) {
	pass, err := EnsurePassword(opts.DataDir)
	if err != nil {
		return nil, "", err
	}
	so := &server.Options{
		ServerName:         "jetrelay",
		JetStream:          true,
		StoreDir:           filepath.Join(opts.DataDir, "nats"),
		NoSigs:             true,
		NoLog:              true,
		MaxPayload:         embeddedMaxPayload,
		SyncAlways:         opts.SyncInterval == 0,
		SyncInterval:       opts.SyncInterval,
		JetStreamMaxMemory: 256 << 20,
	}
	EmbeddedAuth(so, pass)
	if opts.Listen == "" {
		so.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(opts.Listen)
		if err != nil {
			return nil, "", fmt.Errorf("nats.listen %q: %w", opts.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, "", fmt.Errorf("nats.listen %q: bad port", opts.Listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		so.Host, so.Port = host, p
	}
	ns, err := server.NewServer(so)
	if err != nil {
		return nil, "", fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		if opts.Listen != "" {
			return nil, "", fmt.Errorf("embedded nats did not start; is %s (nats.listen) already in use? "+
				"stop the other process or set nats.listen to a free port", opts.Listen)
		}
		return nil, "", errors.New("embedded nats did not start")
	}
	return ns, pass, nil
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
