package config

import (
	"os"
	"time"

	"github.com/jetrelay/jetrelay/relay/netguard"
)

// Default returns the built-in configuration: what `jetrelay serve` runs
// without --config. Everything listens on loopback; the embedded NATS
// server stores under ./data.
func Default() *Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return &Config{
		Hostname: host,
		DataDir:  "./data",
		Dev:      true,
		NATS: NATS{
			Listen:     "127.0.0.1:4222",
			Replicas:   1,
			Sync:       "always",
			ServerName: defaultServerName("127.0.0.1:4222"),
		},
		Submission: defaultSubmission(),
		Delivery:   defaultDelivery(),
		Bounces:    defaultBounces(),
		Events: Events{
			MaxAge:   Duration(7 * 24 * time.Hour),
			MaxBytes: 1 << 30,
			Index:    EventsIndex{MaxBytes: 128 << 20},
		},
		Admin: Admin{Listen: "127.0.0.1:8025", Console: defaultConsole()},
		Log:   Log{Level: "info", Format: "json"},
		// See DESIGN-NOTES "A soft memory limit": most of the heap above the live
		// state is nats-server's block caches, which a soft limit lets the
		// GC reclaim before the heap doubles.
		MemoryLimit: 192 << 20,
		// See DESIGN-NOTES "GC pace 70": the heap may grow by 70 % of
		// the live state between collections, not 100 %.
		GCPercent: 70,
	}
}

// defaultSubmission is the built-in submission section: loopback listeners on
// 587 (STARTTLS), 465 (implicit TLS) and 2525 (STARTTLS).
func defaultSubmission() Submission {
	return Submission{
		Listeners: []Listener{
			{Addr: "127.0.0.1:587", TLS: "starttls"},
			{Addr: "127.0.0.1:465", TLS: "implicit"},
			{Addr: "127.0.0.1:2525", TLS: "starttls"},
		},
		MaxMessageBytes:     25 << 20,
		MaxRecipients:       100,
		MaxConnections:      1000,
		MaxConnectionsPerIP: 50,
		MaxIdleCommands:     100,
		MaxLineLength:       4096,
		MaxHeaderBytes:      1 << 20,
		Timeouts: SubmissionTimeouts{
			Idle:    Duration(5 * time.Minute),
			Session: Duration(30 * time.Minute),
			Data:    Duration(10 * time.Minute),
			PreAuth: PreAuthTimeouts{Idle: Duration(time.Minute), Session: Duration(3 * time.Minute)},
		},
		BareNewlines:     "normalize",
		LongLines:        "encode",
		MaxInflightBytes: 256 << 20,
		AuthFailures: AuthFailures{
			Max:        10,
			MaxPerUser: 5,
			Window:     Duration(15 * time.Minute),
			Ban:        Duration(15 * time.Minute),
			Delay:      Duration(time.Second),
		},
	}
}

// defaultDelivery is the built-in delivery section: MX delivery on port 25
// with opportunistic TLS, retries from one minute apart up to four hours
// apart, for at most 48 hours.
func defaultDelivery() Delivery {
	return Delivery{
		Port:              25,
		DNS:               DNS{Timeout: Duration(5 * time.Second), DNSSEC: "off"},
		TLS:               DeliveryTLS{Default: "opportunistic"},
		MTASTS:            MTASTS{Enabled: true, HTTPSPort: 443},
		MaxConnections:    200,
		MaxPerDestination: 10,
		MaxMXAddresses:    5,
		Retry: Retry{
			Schedule: []Duration{
				Duration(time.Minute), Duration(5 * time.Minute), Duration(15 * time.Minute),
				Duration(30 * time.Minute), Duration(time.Hour), Duration(2 * time.Hour),
				Duration(4 * time.Hour),
			},
			MaxAge: Duration(48 * time.Hour),
			Pace:   Rate{Count: 50, Per: time.Second, Source: "50/s"},
		},
		Timeouts: DeliveryTimeouts{
			Connect:   Duration(30 * time.Second),
			Greeting:  Duration(5 * time.Minute),
			Mail:      Duration(5 * time.Minute),
			Rcpt:      Duration(5 * time.Minute),
			DataInit:  Duration(2 * time.Minute),
			DataBlock: Duration(3 * time.Minute),
			DataFinal: Duration(10 * time.Minute),
			Idle:      Duration(30 * time.Second),
			Attempt:   Duration(10 * time.Minute),
		},
		ShutdownGrace:  Duration(30 * time.Second),
		DeniedNetworks: defaultDeniedNetworks(),
		Shaping:        defaultShaping(),
		DANE:           DANE{Enabled: true},
		TLSRPT:         TLSRPT{Enabled: true},
	}
}

// defaultShaping is the built-in delivery.shaping: no providers and no
// rules (the shipped configs/shaping.yaml is included by the example
// config), 10 connections and 100 messages per connection for each
// destination, and the builtin backoff halving a provider's rate for 15
// minutes after a throttling reply.
func defaultShaping() Shaping {
	return Shaping{
		Default:    ShapingLimits{Connections: 10, PerConnection: 100},
		BackoffFor: Duration(15 * time.Minute),
	}
}

// defaultBounces is the built-in bounces section: suppression, returned
// content, VERP record age and the bounce intake limits.
func defaultBounces() Bounces {
	return Bounces{
		SuppressFor:    Duration(720 * time.Hour),
		ReturnMaxBytes: 256 << 10,
		VERPMaxAge:     Duration(14 * 24 * time.Hour),
		Intake: BounceIntake{
			MaxConnections: 100, MaxConnectionsPerIP: 10,
			Idle: Duration(time.Minute), Session: Duration(10 * time.Minute),
		},
	}
}

// applyDerivedDefaults fills values that depend on other values.
func (c *Config) applyDerivedDefaults() {
	if c.NATS.Replicas == 0 {
		c.NATS.Replicas = 1
	}
	c.applyClusterDefaults()
	c.applyShapingAlias()
	c.applyWebhookDefaults()
}

// MaxVERPAge caps bounces.verp_max_age: VERP records live 30 days.
const MaxVERPAge = 30 * 24 * time.Hour

// BouncesFrom returns the From: address for DSNs: bounces.from, or
// MAILER-DAEMON@<hostname> when it is empty.
func (c *Config) BouncesFrom() string {
	if c.Bounces.From != "" {
		return c.Bounces.From
	}
	return "MAILER-DAEMON@" + c.Hostname
}

// defaultDeniedNetworks is netguard.DefaultDenied in configuration form.
func defaultDeniedNetworks() []string {
	ps := netguard.DefaultDenied()
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// NetGuard returns the guard for destinations chosen from outside, built
// from delivery.denied_networks and delivery.allowed_networks (validated by
// Validate; the error repeats what Validate reports).
func (d Delivery) NetGuard() (*netguard.Guard, error) {
	return netguard.Parse(d.DeniedNetworks, d.AllowedNetworks)
}
