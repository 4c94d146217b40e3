// Package config owns jetrelay's YAML configuration: the schema, its defaults
// and its validation. Load reads a file strictly (an unknown key is an error
// naming the key and its line), applies defaults first, and reports every
// problem at once, each with its YAML path and line. Parsed forms that other
// packages need (rates, durations, sizes) are parsed here, once.
package config

import (
	"gopkg.in/yaml.v3"
)

// Config is the whole configuration file.
type Config struct {
	Hostname   string     `yaml:"hostname"`
	DataDir    string     `yaml:"data_dir"`
	NATS       NATS       `yaml:"nats"`
	Submission Submission `yaml:"submission"`
	Delivery   Delivery   `yaml:"delivery"`
	Bounces    Bounces    `yaml:"bounces"`
	DKIM       DKIM       `yaml:"dkim"`
	Events     Events     `yaml:"events"`
	Admin      Admin      `yaml:"admin"`
	Log        Log        `yaml:"log"`
	// Webhooks post delivery events to applications (relay/webhooks).
	Webhooks []Webhook `yaml:"webhooks"`
	// MemoryLimit is the Go runtime's soft memory limit (0 = none); the
	// GOMEMLIMIT environment variable, when set, takes precedence.
	MemoryLimit Size `yaml:"memory_limit"`
	// GCPercent is the Go GC's pace (GOGC): a collection starts once the
	// heap has grown by this many per cent over what the last one left
	// live; -1 = only near memory_limit (which must then be set). The GOGC
	// environment variable, when set, takes precedence.
	GCPercent int `yaml:"gc_percent"`

	// Path is the file this was loaded from ("" for the built-in default).
	Path string `yaml:"-"`
	// Dev is true for the built-in default (no --config): a loopback dev user
	// is generated at first start.
	Dev bool `yaml:"-"`

	root        *yaml.Node
	includeRoot *yaml.Node // delivery.shaping.include's nodes, for problem lines
}

// NATS says where the queue lives.
type NATS struct {
	URL          string `yaml:"url"`
	Listen       string `yaml:"listen"`
	Credentials  string `yaml:"credentials"`
	User         string `yaml:"user"`
	PasswordFile string `yaml:"password_file"`
	Replicas     int    `yaml:"replicas"`
	// Sync is "always" (fsync before every ack) or a Go duration.
	Sync string `yaml:"sync"`
	// ServerName is the embedded server's name, unique among the nodes of a
	// cluster; keep it once a node has joined (the cluster knows it by it).
	ServerName string `yaml:"server_name"`
	// Cluster makes the embedded server a node of a JetStream cluster.
	Cluster *NATSCluster `yaml:"cluster"`
}

// Embedded reports whether jetrelay runs its own in-process NATS server.
func (n NATS) Embedded() bool { return n.URL == "" }

// Listener is one submission port.
type Listener struct {
	Addr string `yaml:"addr"`
	TLS  string `yaml:"tls"` // starttls | implicit
	// ProxyProtocol expects a PROXY protocol v1 or v2 header (haproxy spec)
	// before anything else, also before the TLS handshake of an implicit-TLS
	// listener, and only from submission.proxy_from; the header's client
	// address is then the client's address everywhere.
	ProxyProtocol bool `yaml:"proxy_protocol"`
}

// TLSFiles names a certificate and key; empty means generated under data_dir.
type TLSFiles struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// SubmissionTimeouts bound a client's session.
type SubmissionTimeouts struct {
	Idle    Duration `yaml:"idle"`
	Session Duration `yaml:"session"`
	Data    Duration `yaml:"data"`
	// PreAuth are the shorter limits before AUTH succeeds.
	PreAuth PreAuthTimeouts `yaml:"pre_auth"`
}

// PreAuthTimeouts bound the unauthenticated phase of a session.
type PreAuthTimeouts struct {
	Idle    Duration `yaml:"idle"`
	Session Duration `yaml:"session"`
}

// User is one submitting application.
type User struct {
	Name         string   `yaml:"name"`
	PasswordHash string   `yaml:"password_hash"`
	AllowedFrom  []string `yaml:"allowed_from"`
	Rate         Rate     `yaml:"rate"`
	// Pool is the delivery.pools entry this user's mail leaves through;
	// "" = the pool named default when there is one.
	Pool string `yaml:"pool"`
	// BounceGuard is this user's bounce-rate guard (guard.go); nil = submission.bounce_guard.
	BounceGuard *BounceGuard `yaml:"bounce_guard"`
}

// AuthFailures slows and then refuses a client after repeated bad
// credentials: Max failures from one client IP (IPv6: its /64) for any
// users ban the IP; MaxPerUser failures for one user name from one IP ban
// that (user, IP) pair. Failures for a user name from all addresses only
// add delay, never a ban.
type AuthFailures struct {
	Max        int      `yaml:"max"`          // failures from one IP within Window before the IP ban
	MaxPerUser int      `yaml:"max_per_user"` // failures for one user from one IP before that pair's ban
	Window     Duration `yaml:"window"`       // counting window
	Ban        Duration `yaml:"ban"`          // how long the IP or (user, IP) is refused
	Delay      Duration `yaml:"delay"`        // added per failure (capped), slows brute force
}

// Submission is the authenticated SMTP side.
type Submission struct {
	Listeners           []Listener         `yaml:"listeners"`
	TLS                 TLSFiles           `yaml:"tls"`
	MaxMessageBytes     Size               `yaml:"max_message_bytes"`
	MaxRecipients       int                `yaml:"max_recipients"`
	MaxConnections      int                `yaml:"max_connections"`
	MaxConnectionsPerIP int                `yaml:"max_connections_per_ip"`
	MaxIdleCommands     int                `yaml:"max_idle_commands"`
	MaxLineLength       int                `yaml:"max_line_length"`
	MaxHeaderBytes      Size               `yaml:"max_header_bytes"`
	Timeouts            SubmissionTimeouts `yaml:"timeouts"`
	BareNewlines        string             `yaml:"bare_newlines"`      // normalize | reject
	LongLines           string             `yaml:"long_lines"`         // encode | reject (body lines > 998 octets)
	MaxInflightBytes    Size               `yaml:"max_inflight_bytes"` // all DATA in memory at once, per process
	AuthFailures        AuthFailures       `yaml:"auth_failures"`
	Users               []User             `yaml:"users"`

	// TrustedNetworks (CIDRs) are never banned for auth failures (they
	// still authenticate).
	TrustedNetworks []string `yaml:"trusted_networks"`
	// ReceivedUser names the login in the Received: field.
	ReceivedUser bool `yaml:"received_user"`
	// ProxyFrom (CIDRs or addresses) are the load balancers allowed to send
	// PROXY protocol headers to listeners with proxy_protocol; connections
	// from anywhere else to those listeners are closed. Default none.
	ProxyFrom []string `yaml:"proxy_from"`
	// BounceGuard applies to every user without one of its own (guard.go); nil = none.
	BounceGuard *BounceGuard `yaml:"bounce_guard"`
}

// DNS configures the resolver used for MX lookups, routes and DKIM checks.
type DNS struct {
	Servers []string `yaml:"servers"`
	Timeout Duration `yaml:"timeout"`
	// DNSSEC: off (default) | trust_ad: believe the AD bit of these
	// (local, validating) resolvers; DANE needs it.
	DNSSEC string `yaml:"dnssec"`
}

// MTASTS configures MTA-STS (RFC 8461): policies fetched over HTTPS and
// cached cluster-wide in the JetStream KV bucket jetrelay_mtasts.
type MTASTS struct {
	// Enabled: look up and enforce recipient domains' policies.
	Enabled bool `yaml:"enabled"`
	// HTTPSPort is where policies are fetched (443; tests use a high port).
	HTTPSPort int `yaml:"https_port"`
}

// DeliveryTLS is the outbound TLS policy.
type DeliveryTLS struct {
	Default string            `yaml:"default"` // none | opportunistic | required | verify
	Domains map[string]string `yaml:"domains"`
	CAFile  string            `yaml:"ca_file"`
}

// RouteAuth is the credential for a smarthost.
type RouteAuth struct {
	User        string `yaml:"user"`
	PasswordEnv string `yaml:"password_env"`
}

// Route sends chosen domains to a smarthost instead of their MX.
type Route struct {
	Domains []string `yaml:"domains"`
	Host    string   `yaml:"host"`
	TLS     string   `yaml:"tls"` // starttls | implicit | none
	// TLSVerify requires the smarthost's certificate to be valid for host
	// (system roots plus delivery.tls.ca_file), the default; false accepts
	// any certificate (TLS is still required unless tls is none).
	TLSVerify *bool      `yaml:"tls_verify"`
	Auth      *RouteAuth `yaml:"auth"`
}

// Verify reports whether the smarthost certificate must be verified (default true).
func (r Route) Verify() bool { return r.TLSVerify == nil || *r.TLSVerify }

// Retry is the schedule for temporary failures.
type Retry struct {
	Schedule Durations `yaml:"schedule"`
	MaxAge   Duration  `yaml:"max_age"`
	// Pace caps the retries of failing destinations (nothing delivered in
	// their last attempts): at most this many per second in all, spread
	// out at or after their scheduled times. "" = no cap. Per node: N
	// nodes retry up to N times the pace (a shared slot ledger would cost
	// a replicated write per deferred entry, the load the pace limits).
	Pace Rate `yaml:"pace"`
}

// DeliveryTimeouts are the RFC 5321 §4.5.3.2 client timeouts.
type DeliveryTimeouts struct {
	Connect   Duration `yaml:"connect"`
	Greeting  Duration `yaml:"greeting"`
	Mail      Duration `yaml:"mail"`
	Rcpt      Duration `yaml:"rcpt"`
	DataInit  Duration `yaml:"data_init"`
	DataBlock Duration `yaml:"data_block"`
	DataFinal Duration `yaml:"data_final"`
	// Idle closes a reused connection nobody needed for this long.
	Idle Duration `yaml:"idle"`
	// Attempt caps one delivery attempt over all the addresses it tries:
	// no new dial after it (a transaction under way is not interrupted).
	Attempt Duration `yaml:"attempt"`
}

// Delivery configures the outbound workers.
type Delivery struct {
	Port              int         `yaml:"port"`
	DNS               DNS         `yaml:"dns"`
	TLS               DeliveryTLS `yaml:"tls"`
	Routes            []Route     `yaml:"routes"`
	MaxConnections    int         `yaml:"max_connections"`
	MaxPerDestination int         `yaml:"max_per_destination"` // per node: N nodes allow N times this; alias of shaping.default.connections
	// MaxMXAddresses bounds the MX addresses one attempt dials (Postfix's
	// smtp_mx_address_limit); routes are not limited.
	MaxMXAddresses int              `yaml:"max_mx_addresses"`
	Retry          Retry            `yaml:"retry"`
	Timeouts       DeliveryTimeouts `yaml:"timeouts"`
	ShutdownGrace  Duration         `yaml:"shutdown_grace"`
	// SourceIP binds outgoing connections to this local address ("" = any).
	SourceIP string `yaml:"source_ip"`
	// DeniedNetworks are never dialled for MX delivery or for a fetch whose
	// host a recipient domain chooses; a list given in the file replaces the
	// default (netguard.DefaultDenied). Smarthost routes are exempt.
	DeniedNetworks []string `yaml:"denied_networks"`
	// AllowedNetworks punch holes in DeniedNetworks ("allowed wins").
	AllowedNetworks []string `yaml:"allowed_networks"`
	// Shaping limits delivery per mailbox provider, cluster-wide, and
	// backs off when a provider asks for it.
	Shaping Shaping `yaml:"shaping"`
	// Sources: empty = delivery.source_ip, or the system's choice.
	Sources []Source `yaml:"sources"`
	// MTASTS honours recipient domains' MTA-STS policies (RFC 8461).
	MTASTS MTASTS `yaml:"mta_sts"`
	// Pools name groups of sources; a user's mail leaves through its pool
	// (submission.users[].pool, else the pool named default if any),
	// spread over the pool's sources.
	Pools map[string][]string `yaml:"pools"`
	// DANE honours recipient MX hosts' TLSA records (RFC 7672).
	DANE DANE `yaml:"dane"`
	// TLSRPT sends daily TLS reports to recipient domains (RFC 8460).
	TLSRPT TLSRPT `yaml:"tls_rpt"`
}

// Bounces configures DSNs, VERP intake and the suppression list.
type Bounces struct {
	From             string   `yaml:"from"`
	VERPDomain       string   `yaml:"verp_domain"`
	Listen           string   `yaml:"listen"`
	Suppress         *bool    `yaml:"suppress"`
	SuppressFor      Duration `yaml:"suppress_for"`
	DelayNoticeAfter Duration `yaml:"delay_notice_after"`
	// VerifyDomains looks each recipient domain up at RCPT (through
	// delivery.dns, cached per node): null MX → 556 5.1.10, NXDOMAIN or
	// neither MX nor address → 550 5.1.2; DNS failures accept. Domains of
	// delivery.routes are not looked up.
	VerifyDomains  bool `yaml:"verify_domains"`
	ReturnMaxBytes Size `yaml:"return_max_bytes"`
	// VERPMaxAge is how long after minting a VERP token is accepted at the
	// intake (at most MaxVERPAge, the life of its KV record).
	VERPMaxAge Duration     `yaml:"verp_max_age"`
	Intake     BounceIntake `yaml:"intake"`
	// FBLAddress is where mailbox providers' feedback loops send ARF
	// complaint reports (RFC 5965); the bounce intake accepts mail for it.
	FBLAddress string `yaml:"fbl_address"`
}

// BounceIntake limits the bounce intake listener (bounces.listen).
type BounceIntake struct {
	MaxConnections      int `yaml:"max_connections"`        // all clients; more get 421 4.7.0
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"` // per IPv4 address or IPv6 /64
	// Idle is the time allowed between transaction steps (connect, MAIL,
	// RCPT, DATA); other commands (NOOP, RSET, HELP, VRFY, EHLO) do not
	// extend it.
	Idle Duration `yaml:"idle"`
	// Session caps a connection's whole life.
	Session Duration `yaml:"session"`
}

// SuppressEnabled reports whether hard bounces suppress recipients (default true).
func (b Bounces) SuppressEnabled() bool { return b.Suppress == nil || *b.Suppress }

// DKIMKey is one signing key.
type DKIMKey struct {
	Domain   string `yaml:"domain"`
	Selector string `yaml:"selector"`
	Key      string `yaml:"key"`  // PEM file
	Sign     *bool  `yaml:"sign"` // false: published but unused
}

// Signs reports whether the key signs (default true).
func (k DKIMKey) Signs() bool { return k.Sign == nil || *k.Sign }

// DKIM configures signing at submission.
type DKIM struct {
	Keys []DKIMKey `yaml:"keys"`
	// ParentDomains lets a key for example.com sign mail from sub.example.com.
	ParentDomains bool `yaml:"parent_domains"`
	// Lifetime sets the signature expiry (x=); 0 = none.
	Lifetime Duration `yaml:"lifetime"`
}

// Events configures the delivery events stream.
type Events struct {
	MaxAge   Duration `yaml:"max_age"`
	MaxBytes Size     `yaml:"max_bytes"`
	// Index is the console's message index (relay/msgindex).
	Index EventsIndex `yaml:"index"`
}

// Admin is the metrics/health listener.
type Admin struct {
	Listen  string   `yaml:"listen"`
	PProf   bool     `yaml:"pprof"`
	TLS     AdminTLS `yaml:"tls"`     // serve the admin listener over HTTPS
	Console Console  `yaml:"console"` // the web console at /console/
}

// Log configures zerolog output.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"` // json | console
}
