package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the JetStream KV bucket of console sessions and login failures.
const Bucket = "jetrelay_console"

// Session and cookie settings.
const (
	cookieName        = "jetrelay_console"
	cookiePath        = "/console/"
	defaultSessionTTL = 12 * time.Hour
	tokenBytes        = 32
	kvTimeout         = 3 * time.Second
)

// session is one logged-in user, the KV value (JSON) under sessionKey.
type session struct {
	User    string    `json:"user"`
	CSRF    string    `json:"csrf"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// Role is the user's role at the request (from the configuration,
	// not stored).
	Role string `json:"-"`
}

// operator reports whether the session may act.
func (s *session) operator() bool { return s.Role == RoleOperator }

// sessions stores sessions in KV.
type sessions struct {
	kv  jetstream.KeyValue
	ttl time.Duration
	now func() time.Time
}

// openBucket creates or updates the console bucket: history 1, TTL = the
// session lifetime (failure records carry their own window).
func openBucket(ctx context.Context, js jetstream.JetStream, replicas int,
	ttl time.Duration) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "jetrelay console sessions and login failures",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("console: bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// sessionKey is the KV key of a cookie token: its SHA-256, so reading the
// bucket does not hand out valid cookies.
func sessionKey(token string) string {
	h := sha256.Sum256([]byte(token))
	return "s." + hex.EncodeToString(h[:])
}

func randomToken() (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// create stores a new session for user and returns its cookie token.
func (st *sessions) create(ctx context.Context, user string) (string, *session, error) {
	token, err := randomToken()
	if err != nil {
		return "", nil, err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", nil, err
	}
	now := st.now().UTC()
	s := &session{User: user, CSRF: csrf, Created: now, Expires: now.Add(st.ttl)}
	b, err := json.Marshal(s)
	if err != nil {
		return "", nil, err
	}
	if _, err := st.kv.Create(ctx, sessionKey(token), b); err != nil {
		return "", nil, fmt.Errorf("console: store session: %w", err)
	}
	return token, s, nil
}

// errNoSession means the request carries no valid session.
var errNoSession = errors.New("console: no session")

// lookup returns the session of r's cookie.
func (st *sessions) lookup(ctx context.Context, r *http.Request) (*session, string, error) {
	c, err := r.Cookie(cookieName)
	if err != nil || len(c.Value) != base64.RawURLEncoding.EncodedLen(tokenBytes) {
		return nil, "", errNoSession
	}
	e, err := st.kv.Get(ctx, sessionKey(c.Value))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, "", errNoSession
	}
	if err != nil {
		return nil, "", fmt.Errorf("console: session lookup: %w", err)
	}
	var s session
	if json.Unmarshal(e.Value(), &s) != nil || !st.now().Before(s.Expires) {
		return nil, "", errNoSession
	}
	return &s, c.Value, nil
}

// remove ends the session of token.
func (st *sessions) remove(ctx context.Context, token string) error {
	return st.kv.Purge(ctx, sessionKey(token))
}

// validCSRF compares a form's token with the session's in constant time.
func (s *session) validCSRF(r *http.Request) bool {
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.CSRF)) == 1
}

// setCookie sends the session cookie (or, with token "", clears it).
func (c *Console) setCookie(w http.ResponseWriter, token string, expires time.Time) {
	ck := &http.Cookie{Name: cookieName, Value: token, Path: cookiePath, HttpOnly: true,
		Secure: c.o.Secure, SameSite: http.SameSiteStrictMode}
	if token == "" {
		ck.MaxAge = -1
	} else {
		ck.Expires = expires
	}
	http.SetCookie(w, ck)
}
