package console

import (
	"context"
	"net"
	"net/http"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// page is what every template gets.
type page struct {
	Title    string
	Nav      string // the active navigation item
	User     string // "" on the login and error pages without a session
	Operator bool
	CSRF     string
	Error    string
	Flash    string
	Data     any
}

// newPage fills the session part of a page.
func newPage(s *session, title, nav string, data any) page {
	return page{Title: title, Nav: nav, User: s.User, Operator: s.operator(), CSRF: s.CSRF, Data: data}
}

// maxNameLen bounds a login name.
const maxNameLen = 128

// loginData is the login form's data.
type loginData struct {
	Name, Next string
}

func (c *Console) loginForm(w http.ResponseWriter, r *http.Request) {
	next := nextPath(r.URL.Query().Get("next"))
	c.render(w, http.StatusOK, "login", page{Title: "Log in", Data: loginData{Next: next}})
}

// nextPath is where a login continues: a console path of this site (never
// another host), else the Overview.
func nextPath(p string) string {
	if !strings.HasPrefix(p, "/console/") || strings.Contains(p, "//") || strings.ContainsAny(p, "\\\r\n") ||
		len(p) > maxFormBytes {
		return "/console/"
	}
	return p
}

// login checks the form's name and password (bcrypt, the same work for an
// unknown name), applies the failure brake and starts a session.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	name, pass := r.PostFormValue("name"), r.PostFormValue("password")
	if len(name) > maxNameLen || len(pass) > 72 {
		name, pass = "", ""
	}
	addr := clientAddr(r)
	ctx, cancel := context.WithTimeout(r.Context(), kvTimeout)
	defer cancel()
	next := nextPath(r.PostFormValue("next"))
	refused := func(status int, msg string) {
		c.render(w, status, "login", page{Title: "Log in", Error: msg, Data: loginData{Name: name, Next: next}})
	}
	blocked, err := c.brake.blocked(ctx, name, addr)
	if err != nil {
		c.log.Warn().Err(err).Str("event", "console_login_failed").Msg("console login brake unavailable")
		refused(http.StatusServiceUnavailable, "logins are unavailable right now (JetStream); try again")
		return
	}
	if blocked {
		c.log.Warn().Str("event", "console_login_refused").Str("user", name).Str("remote_addr", addr).
			Msg("console login refused by the failure brake")
		refused(http.StatusTooManyRequests, brakeMessage)
		return
	}
	users := c.users.Load()
	u, known := users.byName[name]
	hash := users.dummy
	if known {
		hash = []byte(u.PasswordHash)
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil || !known || pass == "" {
		if err := c.brake.fail(ctx, name, addr); err != nil {
			c.log.Warn().Err(err).Str("event", "console_login_failed").Msg("console login failure not counted")
		}
		c.log.Warn().Str("event", "console_login_failed").Str("user", name).Str("remote_addr", addr).
			Msg("console login failed")
		refused(http.StatusUnauthorized, "wrong name or password")
		return
	}
	_ = c.brake.clear(ctx, name)
	token, s, err := c.sessions.create(ctx, name)
	if err != nil {
		c.log.Warn().Err(err).Str("event", "console_login_failed").Msg("console session not stored")
		refused(http.StatusServiceUnavailable, "logins are unavailable right now (JetStream); try again")
		return
	}
	c.log.Info().Str("event", "console_login").Str("user", name).Str("remote_addr", addr).Msg("console login")
	c.setCookie(w, token, s.Expires)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if !s.validCSRF(r) {
		c.fail(w, r, http.StatusForbidden, "the form's security token is missing or wrong; reload the page")
		return
	}
	if ck, err := r.Cookie(cookieName); err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), kvTimeout)
		_ = c.sessions.remove(ctx, ck.Value)
		cancel()
	}
	c.setCookie(w, "", s.Expires)
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// clientAddr is the request's remote IP (the admin listener is reached
// directly or through a proxy the operator runs; forwarded headers are not
// trusted).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
