package queue

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// serverLogEvery is how often one kind of embedded-server message (one
// format string) is logged at most: a node whose peers are down retries
// its routes every second and would otherwise fill the log.
const serverLogEvery = 10 * time.Second

// serverLogger writes the embedded nats-server's errors and warnings to
// jetrelay's log as event=nats_server (notices at debug level), at most
// one line per kind of message every serverLogEvery. A route refused for
// its credentials is logged as event=nats_route_auth_failed, naming the
// route secret.
type serverLogger struct {
	log  zerolog.Logger
	mu   sync.Mutex
	last map[string]time.Time // by format string without digits
}

func newServerLogger(log zerolog.Logger) *serverLogger {
	return &serverLogger{log: log, last: map[string]time.Time{}}
}

// due reports whether a message of this format may be logged now. The
// key leaves out digits: a connection's messages carry its address and
// id in the format string, and each retry is a new connection.
func (l *serverLogger) due(format string) bool {
	format = strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, format)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if t, ok := l.last[format]; ok && now.Sub(t) < serverLogEvery {
		return false
	}
	if len(l.last) > 1000 { // formats are the server's constants; bound anyway
		clear(l.last)
	}
	l.last[format] = now
	return true
}

func (l *serverLogger) emit(level zerolog.Level, format string, v []any) {
	if l.log.GetLevel() > level || !l.due(format) {
		return
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	if strings.HasPrefix(msg, "Plaintext passwords detected") {
		// The embedded server's own generated passwords, in memory only.
		level = zerolog.DebugLevel
		if l.log.GetLevel() > level {
			return
		}
	}
	if isRouteAuthFailure(msg) {
		l.log.Error().Str("event", "nats_route_auth_failed").Str("detail", msg).
			Msg("a cluster node was refused on the route port for its credentials: " +
				"every node needs the same route secret (nats.cluster.password_file)")
		return
	}
	l.log.WithLevel(level).Str("event", "nats_server").Msg(msg)
}

// isRouteAuthFailure reports whether msg is a route connection's
// authentication error (either side of it).
func isRouteAuthFailure(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "rid:") &&
		(strings.Contains(m, "authentication error") || strings.Contains(m, "authorization violation"))
}

func (l *serverLogger) Noticef(format string, v ...any) { l.emit(zerolog.DebugLevel, format, v) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.emit(zerolog.WarnLevel, format, v) }
func (l *serverLogger) Fatalf(format string, v ...any)  { l.emit(zerolog.ErrorLevel, format, v) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.emit(zerolog.WarnLevel, format, v) }
func (l *serverLogger) Debugf(string, ...any)           {}
func (l *serverLogger) Tracef(string, ...any)           {}
