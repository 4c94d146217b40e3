// Package deliver is jetrelay's delivery engine: it leases queue entries
// from the shared JetStream consumer, finds where each recipient domain's
// mail goes, talks SMTP to it with the domain's TLS policy, and settles
// every recipient: delivered, retried later, or failed for good.
//
// # Shape
//
// Each entry goes through four steps, each in its own file:
//
//   - gather (transport.go, resolve.go, cache.go): a Transport gives the
//     ordered hosts of a destination. mxTransport follows RFC 5321 §5.1: MX
//     records by preference, equal preferences shuffled, the domain's own
//     A/AAAA when there is no MX, null MX (RFC 7505) → 556 5.1.10 without
//     connecting, NXDOMAIN → 550 5.1.2, SERVFAIL and timeouts → 451 4.4.3,
//     IP-literal MX names skipped, CNAME targets followed with a warning.
//     routeTransport is a configured smarthost (first matching route wins,
//     "*" = all) resolved through the same Resolver. Answers are cached for
//     their TTL and looked up once however many workers ask.
//   - dial (conn.go): an injected Dialer and delivery.port; greeting, EHLO
//     with the configured hostname, STARTTLS or implicit TLS per Plan,
//     AUTH PLAIN for routes. Policies: none; opportunistic (STARTTLS when
//     offered, certificate not checked, a failed handshake → an immediate
//     plaintext connection to the same address, RFC 7435); required (TLS
//     or the next host, then defer); verify (the handshake itself checks the
//     chain against system roots + delivery.tls.ca_file and the MX name).
//     REQUIRETLS messages (RFC 8689) always use verify and need the
//     REQUIRETLS keyword; if no MX offers that, they fail at once (5.7.10).
//   - converse (send.go): go-smtp's client, one transaction per entry with
//     all its recipients — or, with VERP (Options.Sender and
//     bounces.verp_domain, verp.go), one per recipient on the same
//     connection, each with its own reverse-path; SIZE, 8BITMIME, SMTPUTF8 and DSN used when
//     offered; an 8-bit body for a server without 8BITMIME is converted to
//     quoted-printable or failed with 5.6.3; a message needing SMTPUTF8 to
//     a server without it fails with 5.6.7. Per-command timeouts follow
//     RFC 5321 §4.5.3.2, and a deadline-setting net.Conn wrapper puts the
//     data_block timeout on every body write (go-smtp has none).
//     To a server offering PIPELINING (RFC 2920), MAIL, every RCPT and
//     DATA go out in one write and the body in another (pipeline.go);
//     go-smtp's lock-step client is used for the rest.
//   - classify (classify.go): every error becomes a Verdict — reply code,
//     RFC 3463 enhanced code, whole (multiline) text — and whether the next
//     address/MX should be tried (421, dropped connection, timeouts, TLS).
//
// # Retries: message schedules, not NakWithDelay
//
// A temporary failure re-publishes the entry, with only its remaining
// recipients, its attempt count and last reply, as a JetStream message
// schedule (queue.Entry.Defer: subject jr.s.<id>.<domain>, header
// "Nats-Schedule: @at <time>", target jr.q.<id>.<domain>, rolled up so each
// entry has one schedule), then acknowledges the leased copy. The server
// moves it back to the ready subject at that time. A waiting entry is
// therefore only storage: it holds no ack-pending slot, so a million
// deferred entries never fill the consumer's MaxAckPending, and the next
// attempt time is in the stream and survives restarts. NakWithDelay would
// keep every waiting entry in MaxAckPending (stalling the consumer once it
// fills) and loses its delay on a consumer reset; MaxDeliver exhaustion
// would drop entries silently (the consumer uses MaxDeliver -1; attempts
// are counted in the envelope). Intervals come from delivery.retry.schedule
// (the last repeating) with ±10% jitter; at delivery.retry.max_age the
// remaining recipients fail with their last temporary reply.
//
// # Head-of-line isolation
//
// The durable consumer hands out entries in stream order, so the one
// dispatcher loop must never wait on a slow or dead destination. Entries
// are grouped by destination (MX domain + TLS plan, or route); each
// destination has a bounded local queue (1000 entries) and at most
// max_per_destination workers, all under max_connections. A worker owns at
// most one connection, reused for the destination's next entries (RSET
// only after an unfinished transaction) and closed after timeouts.idle; an
// idle worker gives its slot up when another destination is waiting for one.
//
// A destination whose attempt reaches no server (connection refused or
// timed out, no greeting, TLS failure on every host, DNS SERVFAIL) opens a
// circuit breaker for the first retry interval, doubling per failed probe:
// its queued and newly arriving entries are deferred at once without
// connecting (451 4.4.1, counted as an attempt), and when it half-opens a
// single worker probes it. An entry that finds its destination's queue
// full is deferred at once (451 4.4.5) — the dispatcher only waits, up to
// one second, for a destination that is delivering briskly — and an entry
// that waited 30s for a connection is deferred too. So a dead destination
// costs a few connection slots for one timeout and then only storage,
// while every other destination keeps its capacity.
//
// # Leases and shutdown
//
// Every held entry gets InProgress heartbeats well within AckWait while it
// waits or is being delivered. Results are acknowledged by a small pool of
// finishers right after the remote reply, so a connection goes on with
// the next entry while JetStream records the last one (the crash window
// between reply and ack is the only source of duplicates). Run's context
// ending stops fetching, releases (Nak) every entry not yet being
// delivered, gives in-flight transactions delivery.shutdown_grace, then
// cancels and releases them.
package deliver
