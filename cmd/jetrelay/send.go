package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
)

const sendAbout = `Sends one test message through the relay's own submission port (STARTTLS
or implicit TLS, then AUTH PLAIN), prints its queue id, and follows the
message's events until every recipient is delivered, deferred or failed.

Defaults come from the config (--config, else the built-in default): the
server is the first submission listener; the user is the dev user with its
password in data_dir/dev.password (the built-in default creates it); the
sender is an address the user may use (allowed_from). The server's
certificate is verified; a loopback server may also present the relay's own
generated certificate (data_dir/tls) or its configured one; --insecure skips
verification.

Exit status: 0 delivered, 1 failed or bounced (or the relay refused the
message), 75 deferred (or still queued when --wait ran out), 2 usage error.`

// Exit codes of jetrelay send (sysexits.h: EX_TEMPFAIL = 75).
const (
	sendExitDelivered = 0
	sendExitFailed    = 1
	sendExitUsage     = 2
	sendExitDeferred  = 75
)

// sendOpts is one parsed `jetrelay send` invocation.
type sendOpts struct {
	nf         natsFlags
	server     string
	tlsMode    string // starttls | implicit
	user       string
	passFile   string
	from       string
	to         multiFlag
	subject    string
	body       string
	attach     multiFlag
	meta       map[string]string // X-Jetrelay-Meta-<key> fields (logsmeta.go)
	tag        string            // X-Jetrelay-Tag
	insecure   bool
	noWait     bool
	wait       time.Duration
	maxBytes   int64
	hostname   string
	dataDir    string
	certFiles  []string // certificates a loopback server may present
	smtpPasswd string
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runSend(args []string, sio stdio) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return sendMain(ctx, args, sio)
}

// sendMain is runSend with the caller's context (tests pass theirs).
func sendMain(ctx context.Context, args []string, sio stdio) int {
	o, rc, ok := parseSend(args, sio)
	if !ok {
		return rc
	}
	msg, msgID, err := buildMessage(o)
	if err != nil {
		_ = tprintf(sio.err, "jetrelay send: %v\n", err)
		return sendExitUsage
	}
	id, err := submitMessage(ctx, o, msg)
	if err != nil {
		_ = tprintf(sio.err, "jetrelay send: %v\n", err)
		return sendExitFailed
	}
	_ = tprintf(sio.out, "queued as %s (Message-ID %s)\n", id, msgID)
	if o.noWait {
		return sendExitDelivered
	}
	return followSend(ctx, o, id, sio)
}

// parseSend reads the flags and fills in the defaults from the config.
func parseSend(args []string, sio stdio) (*sendOpts, int, bool) {
	o := &sendOpts{}
	fs := newFlags("send", "send --to ADDR [--to ADDR...] [--from ADDR] [--subject S] [--body TEXT] "+
		"[--attach FILE...] [--no-wait]", sendAbout, sio)
	defineSendFlags(fs, o)
	pos, rc, ok := parseMixed(fs, args)
	if !ok {
		return nil, rc, false
	}
	if len(pos) > 0 {
		fmt.Fprintf(sio.err, "jetrelay send: unexpected argument %q (recipients go in --to)\n", pos[0])
		return nil, sendExitUsage, false
	}
	if err := o.resolve(); err != nil {
		_ = tprintf(sio.err, "jetrelay send: %v\n", err)
		return nil, sendExitUsage, false
	}
	return o, 0, true
}

func defineSendFlags(fs *flag.FlagSet, o *sendOpts) {
	fs.StringVar(&o.nf.config, "config", "", "config file (the one serve uses; default: the built-in default)")
	fs.StringVar(&o.server, "server", "", "submission server HOST:PORT (default: the config's first listener)")
	fs.StringVar(&o.tlsMode, "tls", "", "starttls or implicit (default: the listener's; with --server: implicit on\n"+
		"port 465, else starttls)")
	fs.StringVar(&o.user, "user", "", "submission user (default: the dev user, when data_dir/dev.password exists)")
	fs.StringVar(&o.passFile, "password-file", "", "file holding the user's password (\"-\": read it from stdin)")
	fs.StringVar(&o.from, "from", "", "envelope and header sender (default: one the user may send as)")
	fs.Var(&o.to, "to", "recipient (repeatable; required)")
	fs.StringVar(&o.subject, "subject", "jetrelay test message", "subject")
	fs.StringVar(&o.body, "body", "", "body text (default: a line naming the time and the relay)")
	fs.Var(&o.attach, "attach", "attach this file (repeatable; base64, type from the file name)")
	fs.Var(metaFlag{&o.meta}, "meta", "metadata key=value, sent as X-Jetrelay-Meta-<key> (repeatable)")
	fs.StringVar(&o.tag, "tag", "", "tag, sent as X-Jetrelay-Tag")
	fs.BoolVar(&o.insecure, "insecure", false, "do not verify the server's certificate")
	fs.BoolVar(&o.noWait, "no-wait", false, "print the queue id and exit without following the message")
	fs.DurationVar(&o.wait, "wait", 10*time.Minute, "follow the message at most this long")
	fs.StringVar(&o.nf.url, "nats", "", "NATS server URL(s) for following the events, overriding the config")
	fs.StringVar(&o.nf.user, "nats-user", "", "NATS user (with --nats-password-file)")
	fs.StringVar(&o.nf.passwordFile, "nats-password-file", "", "file holding the NATS password")
	fs.StringVar(&o.nf.creds, "creds", "", "NATS credentials file (JWT + nkey)")
}

// resolve checks the flags and fills in the config's defaults.
func (o *sendOpts) resolve() error {
	if len(o.to) == 0 {
		return errors.New("--to ADDR is required")
	}
	if o.wait <= 0 {
		return errors.New("--wait must be positive")
	}
	cfg, err := o.nf.loadConfig()
	if err != nil {
		return err
	}
	o.hostname, o.dataDir, o.maxBytes = cfg.Hostname, cfg.DataDir, int64(cfg.Submission.MaxMessageBytes)
	if err := o.resolveServer(cfg); err != nil {
		return err
	}
	if err := o.resolveUser(); err != nil {
		return err
	}
	if o.from == "" {
		o.from = defaultSender(cfg, o.user)
	}
	if o.body == "" {
		o.body = fmt.Sprintf("A test message sent with `jetrelay send` at %s through %s (%s).\n",
			time.Now().UTC().Format(time.RFC3339), o.hostname, o.server)
	}
	return nil
}

func (o *sendOpts) resolveServer(cfg *config.Config) error {
	if o.server == "" {
		if len(cfg.Submission.Listeners) == 0 {
			return errors.New("the config has no submission listener: pass --server HOST:PORT")
		}
		l := cfg.Submission.Listeners[0]
		o.server = l.Addr
		if o.tlsMode == "" {
			o.tlsMode = l.TLS
		}
	}
	host, port, err := net.SplitHostPort(o.server)
	if err != nil {
		return fmt.Errorf("--server %q: %w", o.server, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	o.server = net.JoinHostPort(host, port)
	if o.tlsMode == "" {
		o.tlsMode = listenerStartTLS
		if p, _ := strconv.Atoi(port); p == 465 {
			o.tlsMode = listenerImplicit
		}
	}
	if o.tlsMode != listenerStartTLS && o.tlsMode != listenerImplicit {
		return fmt.Errorf("--tls %q: want starttls or implicit", o.tlsMode)
	}
	o.certFiles = []string{filepath.Join(cfg.DataDir, "tls", "cert.pem")}
	if cfg.Submission.TLS.Cert != "" {
		o.certFiles = append(o.certFiles, cfg.Submission.TLS.Cert)
	}
	return nil
}

// resolveUser picks the user and reads the password.
func (o *sendOpts) resolveUser() error {
	if o.user == "" && o.passFile == "" {
		dev := filepath.Join(o.dataDir, devPasswordFile)
		if _, err := os.Stat(dev); err != nil {
			return fmt.Errorf("no --user given and no dev credential in %s: pass --user and --password-file", dev)
		}
		o.user, o.passFile = devUserName, dev
	}
	if o.user == "" || o.passFile == "" {
		return errors.New("--user and --password-file go together")
	}
	var raw []byte
	var err error
	if o.passFile == "-" {
		raw, err = readLimited(os.Stdin, maxPasswordBytes)
	} else {
		raw, err = os.ReadFile(o.passFile)
	}
	if err != nil {
		return fmt.Errorf("password: %w", err)
	}
	o.smtpPasswd = strings.TrimRight(string(raw), "\r\n")
	if o.smtpPasswd == "" || len(raw) > maxPasswordBytes {
		return fmt.Errorf("password file %s is empty or too long", o.passFile)
	}
	return nil
}

// maxPasswordBytes bounds a password read from a file or stdin.
const maxPasswordBytes = 4096

// defaultSender is an address the user may send as: the first
// allowed_from entry (an address, or a domain with a local part added),
// else send-test@ the relay's hostname.
func defaultSender(cfg *config.Config, user string) string {
	const local = "send-test@"
	for _, u := range cfg.Submission.Users {
		if u.Name != user || len(u.AllowedFrom) == 0 {
			continue
		}
		a := u.AllowedFrom[0]
		switch {
		case a == "*":
		case strings.Contains(a, "@"):
			return strings.TrimPrefix(a, "*")
		default:
			return local + strings.TrimPrefix(a, "*.")
		}
	}
	return local + cfg.Hostname
}

// Submission listener TLS modes (submission.listeners[].tls).
const (
	listenerStartTLS = "starttls"
	listenerImplicit = "implicit"
)
