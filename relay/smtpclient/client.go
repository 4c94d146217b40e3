package smtpclient

import (
	"crypto/x509"
	"errors"
	"time"

	"github.com/rs/zerolog"
)

// Gauge counts open outbound connections: Inc once a TCP connection is
// established, Dec once when it is closed, whatever path closes it.
// Implementations must be safe for concurrent use.
type Gauge interface {
	Inc()
	Dec()
}

// Defaults of the attempt budget (Options).
const (
	// DefaultMaxAddresses is Postfix's smtp_mx_address_limit.
	DefaultMaxAddresses = 5
	// DefaultAttemptTimeout caps one attempt over all its addresses.
	DefaultAttemptTimeout = 10 * time.Minute
)

// Options configure a Client. Dialer, Resolver and Hostname are required.
type Options struct {
	// Dialer opens connections to smarthost routes, and to MX hosts when
	// MXDialer is nil.
	Dialer Dialer
	// MXDialer opens connections to MX hosts: the one a recipient domain
	// chooses, so it is the one to guard against internal networks (a
	// net.Dialer whose Control refuses them, checked at connect time).
	MXDialer Dialer
	Resolver Resolver // wrap it in NewCache to look up each name once per TTL
	Logger   zerolog.Logger
	// Hostname is said in EHLO (RFC 5321 §4.1.1.1).
	Hostname string
	// Roots verify server certificates (system roots plus any extra CA).
	Roots    *x509.CertPool
	Timeouts Timeouts
	// Port is the MX port (25; tests use another).
	Port int
	// DANE uses the TLSA records of DNSSEC-secure MX hosts (RFC 7672). It
	// needs a Resolver that reports secure answers (DNSOptions.TrustAD,
	// NewCache over it) and implements TLSAResolver.
	DANE bool
	// Policies gives each recipient domain's TLS policy (nil: Opportunistic).
	Policies PolicyStore
	// STS gives MTA-STS policies (nil: MTA-STS is not used).
	STS STSSource
	// Conns counts open connections (nil: not counted).
	Conns Gauge
	// MaxAddresses bounds the addresses one attempt dials, over all MX
	// hosts (0: DefaultMaxAddresses). Smarthost routes are not limited.
	MaxAddresses int
	// AttemptTimeout stops new dials once an attempt has run this long
	// (0: DefaultAttemptTimeout); a transaction already under way runs on
	// under its own command timeouts.
	AttemptTimeout time.Duration
}

// Client runs outbound SMTP attempts. It holds no connections itself:
// each attempt returns the Session it ended on, which the caller may pass
// to the next attempt for the same destination. A Client is immutable and
// safe for concurrent use; to change options, build a new one.
type Client struct {
	o    Options
	warn *warnOnce
}

// New returns a Client.
func New(o Options) (*Client, error) {
	if o.Dialer == nil || o.Resolver == nil || o.Hostname == "" {
		return nil, errors.New("smtpclient: Dialer, Resolver and Hostname are required")
	}
	if o.MaxAddresses <= 0 {
		o.MaxAddresses = DefaultMaxAddresses
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = DefaultAttemptTimeout
	}
	if o.Roots == nil {
		o.Roots = x509.NewCertPool()
	}
	if o.Policies == nil {
		o.Policies = StaticPolicies{}
	}
	return &Client{o: o, warn: &warnOnce{log: o.Logger}}, nil
}

// Timeouts returns the client's timeouts.
func (c *Client) Timeouts() Timeouts { return c.o.Timeouts }

// Attempt is what one attempt at one message produced.
type Attempt struct {
	// Replies has one reply per recipient, in Message order (nil when
	// Canceled).
	Replies []Reply
	// Session is the open connection to keep for the destination's next
	// message (nil: none).
	Session *Session
	// Conn describes the connection that gave the replies, or the last
	// address tried.
	Conn ConnInfo
	// Reached: a server gave the transaction a verdict.
	Reached bool
	// Down: no server could be reached (or DNS failed temporarily): the
	// destination looks dead.
	Down bool
	// Last is the verdict of the last failure (zero when Reached).
	Last Verdict
	// Canceled: ctx ended before a verdict; nothing is settled.
	Canceled bool
}

// ConnInfo is what the delivery log says about a connection.
type ConnInfo struct {
	// TLS is the version ("TLS1.3"), "none" (no TLS session, none tried or
	// an opportunistic fallback to plaintext) or TLSFailed.
	MX, IP, TLS, Cipher string
	// TLSPolicy is the policy the attempt ran under (Plan.PolicyName).
	TLSPolicy string
	// TLSFailure is the TLS-RPT result type (RFC 8460 §4.3.2.1:
	// "certificate-host-mismatch", "sts-policy-fetch-error", ...) when
	// the policy failed, or under a testing policy was not met.
	TLSFailure    string
	Port          int
	Verified, DSN bool
}

// TLSFailed is ConnInfo.TLS when a TLS handshake or certificate check
// failed (the attempt's reply holds the reason).
const TLSFailed = "failed"

func (o *Options) mxDialer() Dialer {
	if o.MXDialer != nil {
		return o.MXDialer
	}
	return o.Dialer
}
