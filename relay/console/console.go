package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

//go:embed assets
var assets embed.FS

// Roles.
const (
	RoleViewer   = "viewer"   // reads every page
	RoleOperator = "operator" // also acts: retry, hold, release, delete, unsuppress
)

// User is one console login.
type User struct {
	Name         string
	PasswordHash string // bcrypt
	Role         string // RoleViewer or RoleOperator
}

// Options configure Open. JetStream, Queue and Events are required.
type Options struct {
	Users []User
	// Secure marks the session cookie Secure (the admin listener serves TLS).
	Secure    bool
	JetStream jetstream.JetStream
	Replicas  int // of the console bucket (nats.replicas)
	Queue     *queue.Queue
	// Events records operator actions (the serve process's emitter).
	Events *events.Emitter
	// Bouncer sends the DSN of a delete; nil offers deletes without DSN only.
	Bouncer *bounce.Bouncer
	// Suppressions is the suppression list; nil hides the page's data.
	Suppressions *bounce.SuppressionList
	// Index answers the Messages search (relay/msgindex); Stats the
	// Overview's counts (relay/stats). Nil: the page says it is unavailable.
	Index Index
	Stats Stats
	// MaxStreams bounds concurrent Live streams (default 8).
	MaxStreams int
	// SessionTTL is a session's lifetime (default 12h).
	SessionTTL time.Duration
	Now        func() time.Time
	Logger     zerolog.Logger
}

// Console serves the console's routes.
type Console struct {
	o        Options
	log      zerolog.Logger
	users    atomic.Pointer[userSet]
	sessions *sessions
	brake    *brake
	pages    map[string]*template.Template
	streams  chan struct{} // live stream slots
	stop     chan struct{} // closed by Shutdown: live streams end
	stopOnce sync.Once
}

// Defaults.
const (
	defaultMaxStreams = 8
	requestTimeout    = 10 * time.Second
)

// Open checks o, creates or opens the session bucket and parses the
// templates.
func Open(ctx context.Context, o Options) (*Console, error) {
	if o.JetStream == nil || o.Queue == nil || o.Events == nil {
		return nil, errors.New("console: JetStream, Queue and Events are required")
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = defaultMaxStreams
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = defaultSessionTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Console{o: o, log: o.Logger, streams: make(chan struct{}, o.MaxStreams), stop: make(chan struct{})}
	apply, err := c.PrepareUsers(o.Users)
	if err != nil {
		return nil, err
	}
	apply()
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	kv, err := openBucket(ctx, o.JetStream, o.Replicas, o.SessionTTL)
	if err != nil {
		return nil, err
	}
	c.sessions = &sessions{kv: kv, ttl: o.SessionTTL, now: o.Now}
	c.brake = &brake{kv: kv, now: o.Now}
	return c, nil
}

// userSet is the users who may log in.
type userSet struct {
	byName map[string]User
	dummy  []byte // a bcrypt hash checked for unknown names (the users' highest cost)
}

// PrepareUsers checks a new user list (a reload's) and returns the
// function that puts it in effect: the next request of a removed user, or
// of one whose role changed, sees the change; sessions are not ended
// otherwise.
func (c *Console) PrepareUsers(users []User) (apply func(), err error) {
	set := &userSet{byName: map[string]User{}}
	cost := bcrypt.MinCost
	for _, u := range users {
		if u.Role != RoleViewer && u.Role != RoleOperator {
			return nil, fmt.Errorf("console: user %s: role %q is not viewer or operator", u.Name, u.Role)
		}
		uc, err := bcrypt.Cost([]byte(u.PasswordHash))
		if err != nil {
			return nil, fmt.Errorf("console: user %s: password_hash is not a bcrypt hash: %w", u.Name, err)
		}
		cost = max(cost, uc)
		set.byName[u.Name] = u
	}
	if set.dummy, err = bcrypt.GenerateFromPassword([]byte("jetrelay console dummy"), cost); err != nil {
		return nil, err
	}
	return func() { c.users.Store(set) }, nil
}

// Shutdown ends the live streams (the HTTP server's Shutdown waits for
// handlers, and an event stream would otherwise never end).
func (c *Console) Shutdown() { c.stopOnce.Do(func() { close(c.stop) }) }

// Handler returns the console's routes, all under /console/.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets/static")
	mux.Handle("GET /console/static/", http.StripPrefix("/console/static/", staticFiles(static)))
	mux.HandleFunc("GET /console/login", c.loginForm)
	mux.HandleFunc("POST /console/login", c.login)
	mux.HandleFunc("POST /console/logout", c.authed(c.logout))
	mux.HandleFunc("GET /console/{$}", c.authed(c.overview))
	mux.HandleFunc("GET /console/messages", c.authed(c.messages))
	mux.HandleFunc("GET /console/messages/{id}", c.authed(c.message))
	mux.HandleFunc("POST /console/messages/{id}/{action}", c.operator(c.messageAction))
	mux.HandleFunc("GET /console/live", c.authed(c.live))
	mux.HandleFunc("GET /console/live/events", c.authed(c.liveEvents))
	mux.HandleFunc("GET /console/queue", c.authed(c.queuePage))
	mux.HandleFunc("POST /console/queue/{domain}/{action}", c.operator(c.domainAction))
	mux.HandleFunc("GET /console/suppressions", c.authed(c.suppressions))
	mux.HandleFunc("POST /console/suppressions/remove", c.operator(c.unsuppress))
	mux.HandleFunc("/console/", c.authed(func(w http.ResponseWriter, r *http.Request, _ *session) {
		c.fail(w, r, http.StatusNotFound, "no such page")
	}))
	mux.HandleFunc("/console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
	})
	return securityHeaders(mux)
}

// csp forbids inline script and framing (issue 19: safe by default).
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"frame-ancestors 'none'; form-action 'self'; base-uri 'none'"

// securityHeaders sets the headers every console response carries and
// refuses a POST whose Origin is another site (defence in depth beside
// SameSite=Strict cookies and CSRF tokens; it also covers the login form).
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin") // not no-referrer: browsers would then send "Origin: null" with our own forms
		if r.Method == http.MethodPost && !sameOrigin(r) {
			http.Error(w, "cross-site request refused", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin reports whether r's Origin header, when there is one, names
// the host r was sent to.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// staticFiles serves the embedded CSS and JavaScript.
func staticFiles(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "private, max-age=3600")
		files.ServeHTTP(w, r)
	})
}

// handlerFunc is a route that needs a session.
type handlerFunc func(w http.ResponseWriter, r *http.Request, s *session)

// authed requires a session: a page request without one is sent to the
// login form, anything else gets 401.
func (c *Console) authed(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), kvTimeout)
		s, _, err := c.sessions.lookup(ctx, r)
		cancel()
		if err == nil {
			u, ok := c.users.Load().byName[s.User]
			if !ok {
				err = errNoSession
			}
			s.Role = u.Role
		}
		switch {
		case errors.Is(err, errNoSession) && r.Method == http.MethodGet && r.URL.Path != "/console/live/events":
			next := url.Values{"next": {r.URL.RequestURI()}}.Encode()
			http.Redirect(w, r, "/console/login?"+next, http.StatusSeeOther)
			return
		case errors.Is(err, errNoSession):
			c.fail(w, r, http.StatusUnauthorized, "log in first")
			return
		case err != nil:
			c.log.Warn().Err(err).Str("event", "console_session_failed").Msg("console session lookup failed")
			c.fail(w, r, http.StatusServiceUnavailable, "sessions are unavailable (JetStream); try again")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessionCtxKey{}, s)), s)
	}
}

// sessionCtxKey carries a request's session to fail.
type sessionCtxKey struct{}

// operator requires a session with the operator role and the session's
// CSRF token in the form.
func (c *Console) operator(h handlerFunc) http.HandlerFunc {
	return c.authed(func(w http.ResponseWriter, r *http.Request, s *session) {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		switch {
		case !s.validCSRF(r):
			c.fail(w, r, http.StatusForbidden, "the form's security token is missing or wrong; reload the page")
		case !s.operator():
			c.fail(w, r, http.StatusForbidden, "this needs the operator role")
		default:
			h(w, r, s)
		}
	})
}

// maxFormBytes bounds a posted form.
const maxFormBytes = 16 << 10

// render executes page name with data into a buffer, then sends it.
func (c *Console) render(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&b, "layout", data); err != nil {
		c.log.Error().Err(err).Str("event", "console_render_failed").Str("page", name).Msg("console page failed")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// fail answers with the error page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	p := page{Title: http.StatusText(status)}
	if s, ok := r.Context().Value(sessionCtxKey{}).(*session); ok {
		p = newPage(s, p.Title, "", nil)
	}
	p.Error = msg
	c.render(w, status, "error", p)
}
