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
			Listen:   "127.0.0.1:4222",
			Replicas: 1,
			Sync:     "always",
		},
		Submission: Submission{
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
			},
			BareNewlines: "normalize",
			AuthFailures: AuthFailures{
				Max:    10,
				Window: Duration(15 * time.Minute),
				Ban:    Duration(15 * time.Minute),
				Delay:  Duration(time.Second),
			},
		},
		Delivery: Delivery{
			Port:              25,
			DNS:               DNS{Timeout: Duration(5 * time.Second)},
			TLS:               DeliveryTLS{Default: "opportunistic"},
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
		},
		Bounces: Bounces{
			SuppressFor:    Duration(720 * time.Hour),
			ReturnMaxBytes: 256 << 10,
		},
		Events: Events{
			MaxAge:   Duration(7 * 24 * time.Hour),
			MaxBytes: 1 << 30,
		},
		Admin: Admin{Listen: "127.0.0.1:8025"},
		Log:   Log{Level: "info", Format: "json"},
		// See DESIGN-NOTES "Memory limit": most of the heap above the live
		// state is nats-server's block caches, which a soft limit lets the
		// GC reclaim before the heap doubles.
		MemoryLimit: 128 << 20,
	}
}

// applyDerivedDefaults fills values that depend on other values.
func (c *Config) applyDerivedDefaults() {
	if c.NATS.Replicas == 0 {
		c.NATS.Replicas = 1
	}
}

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
