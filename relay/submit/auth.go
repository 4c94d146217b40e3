package submit

import (
	"bytes"
	"context"
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
// A banned client is refused before any credentials are read.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.tlsState == nil {
		return nil, s.reply("AUTH", errAuthNeedsTLS, rejectInfo{})
	}
	if err := s.checkBan(""); err != nil {
		return nil, s.reply("AUTH", err, rejectInfo{ip: true})
	}
	check := func(authz, user, pass string) error {
		return s.reply("AUTH", s.authenticate(authz, user, pass), rejectInfo{ip: true, user: user})
	}
	switch mech {
	case mechPlain:
		return &plainServer{check: check}, nil
	case mechLogin:
		return &loginServer{check: check}, nil
	}
	return nil, s.reply("AUTH", errAuthMechanism, rejectInfo{})
}

// checkBan refuses a banned client, or (user != "") a banned (user,
// client) pair; trusted_networks are never banned. A bucket that does not
// answer within brakeTimeout fails open to this node's own counts
// (brakelocal.go): a ban the node set itself still holds.
func (s *session) checkBan(user string) error {
	if s.srv.policy().trusted(s.ip) {
		return nil
	}
	var banned bool
	s.brakeCall("check", user, func(ctx context.Context) (err error) {
		if user == "" {
			_, banned, err = s.srv.brake.clientBan(ctx, s.key)
		} else {
			banned, err = s.srv.brake.banned(ctx, s.key, user)
		}
		return err
	})
	switch {
	case banned && user != "":
		return errAuthUserBanned
	case banned || s.srv.brake.local.banned(s.key, time.Now()):
		return errAuthBanned
	}
	return nil
}

// brakeCall runs op on the brake's bucket within brakeTimeout, unless the
// bucket failed within brakeRetryAfter. It reports whether the bucket
// answered; a failure is logged (event=auth_brake_unavailable) at most
// once per brakeLogEvery, and the caller falls back to the node's counts.
func (s *session) brakeCall(what, user string, op func(ctx context.Context) error) bool {
	if !s.srv.brake.health.usable() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), brakeTimeout)
	defer cancel()
	err := op(ctx)
	if err == nil {
		return true
	}
	if s.srv.brake.health.failed() {
		s.log.Error().Err(err).Str("event", "auth_brake_unavailable").Str("op", what).Str("user", user).
			Msg("auth brake bucket unavailable: counting failures on this node until it answers")
	}
	return false
}

// authenticate checks a password with bcrypt (or the cache of passwords
// bcrypt accepted, authcache.go). An unknown user costs the same
// bcrypt work (against a dummy hash), so timing does not reveal user names.
// An authorization identity other than the user fails like a bad password.
// A failure is counted by the brake (brake.go) and answered after a
// growing delay.
func (s *session) authenticate(authz, user, pass string) error {
	if err := s.checkBan(user); err != nil {
		return err
	}
	now := time.Now()
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
		s.authSucceeded(u.name)
		return nil
	}
	t := time.NewTimer(s.authFailed(user))
	<-t.C
	return errAuthFailed
}

// authSucceeded clears this (user, client) pair's counter and ends the
// pre-auth phase.
func (s *session) authSucceeded(user string) {
	if !s.srv.policy().trusted(s.ip) {
		s.brakeCall("success", user, func(ctx context.Context) error { return s.srv.brake.success(ctx, s.key, user) })
	}
	s.user = user
	s.tc.authenticated()
	s.log.Debug().Str("event", "auth").Str("user", user).Msg("authenticated")
}

// authFailed records a failure and returns how long to wait before
// answering; the bans it starts are logged and evented.
func (s *session) authFailed(user string) time.Duration {
	pol := s.srv.policy()
	cfg := pol.sub.AuthFailures
	if pol.trusted(s.ip) {
		return cfg.Delay.D()
	}
	var out failOutcome
	if !s.brakeCall("fail", user, func(ctx context.Context) (err error) {
		out, err = s.srv.brake.fail(ctx, failure{client: s.key, user: user, cfg: cfg})
		return err
	}) {
		out = s.srv.brake.local.fail(s.key, cfg, time.Now())
	}
	ban := func(what string, n int) {
		s.srv.emit(&events.Event{Event: events.Rejected, ConnID: s.id, RemoteAddr: s.remote, IP: s.ip, User: user,
			SMTPCode: errAuthBanned.Code, SMTPEnh: enh(errAuthBanned),
			Reason: "auth failures reached " + itoa(n) + "; " + what + " banned for " + cfg.Ban.D().String()})
	}
	if out.clientBan {
		ban("client "+s.key, cfg.Max)
	}
	if out.pairBan {
		ban("user from client "+s.key, cfg.MaxPerUser)
	}
	return out.delay
}

// stampUser is the login the Received: field names: none unless
// submission.received_user (the login is an internal account name).
func (s *session) stampUser() string {
	if !s.srv.policy().sub.ReceivedUser {
		return ""
	}
	return s.user
}
