package submit

import (
	"bytes"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/jetrelay/jetrelay/relay/events"
	"golang.org/x/crypto/bcrypt"
)

// SASL mechanisms offered inside TLS (RFC 4954 §4).
const (
	mechPlain = "PLAIN"
	mechLogin = "LOGIN"
)

// plainServer is SASL PLAIN (RFC 4616 §2): one message
// authzid NUL authcid NUL passwd. An authzid other than the authcid is
// refused: nobody may act for another user.
type plainServer struct {
	done  bool
	check func(authz, user, pass string) error
}

func (p *plainServer) Next(resp []byte) ([]byte, bool, error) {
	if p.done {
		return nil, false, errAuthMalformed
	}
	if resp == nil {
		return []byte{}, false, nil // no initial response: empty challenge
	}
	p.done = true
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 {
		return nil, false, errAuthMalformed
	}
	if err := p.check(string(parts[0]), string(parts[1]), string(parts[2])); err != nil {
		return nil, false, err
	}
	return nil, true, nil
}

// loginServer is the obsolete but common LOGIN mechanism
// (draft-murchison-sasl-login): "Username:" then "Password:" challenges; the
// username may come as the initial response.
type loginServer struct {
	step  int
	user  string
	check func(authz, user, pass string) error
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch {
	case l.step == 0 && resp == nil:
		l.step = 1
		return []byte("Username:"), false, nil
	case l.step <= 1:
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case l.step == 2:
		l.step = 3
		if err := l.check("", l.user, string(resp)); err != nil {
			return nil, false, err
		}
		return nil, true, nil
	}
	return nil, false, errAuthMalformed
}

// AuthMechanisms lists the mechanisms, only inside TLS (RFC 4954 §4,
// RFC 8314 §3): go-smtp then advertises AUTH only after STARTTLS.
func (s *session) AuthMechanisms() []string {
	if s.tlsState == nil {
		return nil
	}
	return []string{mechPlain, mechLogin}
}

// Auth starts a SASL exchange; errors from it pass the session's boundary.
func (s *session) Auth(mech string) (sasl.Server, error) {
	switch {
	case s.tlsState == nil:
		return nil, s.reply("AUTH", errAuthNeedsTLS, rejectInfo{})
	case s.srv.isBanned(s.key):
		return nil, s.reply("AUTH", errAuthBanned, rejectInfo{ip: true})
	}
	check := func(authz, user, pass string) error {
		return s.reply("AUTH", s.authenticate(authz, user, pass), rejectInfo{ip: true})
	}
	switch mech {
	case mechPlain:
		return &plainServer{check: check}, nil
	case mechLogin:
		return &loginServer{check: check}, nil
	}
	return nil, s.reply("AUTH", errAuthMechanism, rejectInfo{})
}

// authenticate checks a password with bcrypt (or the cache of passwords
// bcrypt accepted, authcache.go). An unknown user costs the same
// bcrypt work (against a dummy hash), so timing does not reveal user names.
// An authorization identity other than the user fails like a bad password.
// A failure is counted for the client and answered after a growing delay.
func (s *session) authenticate(authz, user, pass string) error {
	now := time.Now()
	if s.srv.isBanned(s.key) {
		return errAuthBanned
	}
	pol := s.srv.policy()
	u := pol.user(user)
	hash := pol.dummyHash
	if u != nil {
		hash = u.hash
	}
	var err error
	if u == nil || !u.creds.ok(pass, now) {
		s.srv.bcryptSem <- struct{}{} // bound concurrent bcrypt work (CPU)
		err = bcrypt.CompareHashAndPassword(hash, []byte(pass))
		<-s.srv.bcryptSem
		if u != nil && err == nil {
			u.creds.add(pass, now)
		}
	}
	if u != nil && err == nil && (authz == "" || authz == user) {
		s.srv.fails.success(s.key, now)
		s.user = u.name
		s.tc.resetIdle()
		s.log.Debug().Str("event", "auth").Str("user", u.name).Msg("authenticated")
		return nil
	}
	cfg := pol.sub.AuthFailures
	delay, banned := s.srv.fails.fail(s.key, cfg, now)
	if banned {
		s.srv.emit(&events.Event{Event: events.Rejected, ConnID: s.id, RemoteAddr: s.remote, IP: s.ip,
			SMTPCode: errAuthBanned.Code, SMTPEnh: enh(errAuthBanned),
			Reason: "auth failures reached " + itoa(cfg.Max) + "; client banned for " + cfg.Ban.D().String()})
	}
	t := time.NewTimer(delay)
	<-t.C
	return errAuthFailed
}
