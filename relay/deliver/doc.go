// Package deliver is jetrelay's delivery engine: it leases queue entries
// from the shared JetStream consumer, finds where each recipient domain's
// mail goes, talks SMTP to it with the domain's TLS policy, and settles
// every recipient: delivered, retried later, or failed for good.
//
// # Shape
//
// The SMTP conversation itself — MX gathering, dialling, TLS policy,
// pipelining, classification, the attempt budget — is relay/smtpclient,
// which knows no queue and no configuration. This package decides when
// and in what order entries are tried, and what happens to each
// recipient afterwards. Each concern is a type that owns its state:
//
//   - Engine (engine.go): leases entries from the shared consumer and
//     hands them on. It reads only its Settings (the delivery section,
//     the EHLO name, whether VERP is on, bounces.delay_notice_after),
//     built by cmd. Prepare builds a new runtime (runtime.go: the
//     smtpclient.Client with its resolver for delivery.dns, dialer for
//     delivery.source_ip, port, routes, retry schedule) and returns the
//     apply that swaps it in; a reload applies it only when every other
//     component prepared too.
//   - scheduler (sched.go): destinations, workers, global slots and
//     every destination's circuit breaker ("Head-of-line isolation").
//   - attempter (attempt.go, verp.go): one attempt at one entry through
//     the client — one transaction, or with VERP (Options.Sender and
//     Settings.VERP) one per recipient on the same connection.
//   - finisher (finish.go): events, Reporter calls, then Done, Defer,
//     Park or Release, on a pool of goroutines.
//   - pacer (pace.go) and parker (park.go): the retry pacing and the
//     parking policy for failing destinations; queue only stores.
//   - leases (lease.go): InProgress heartbeats for every held entry;
//     Engine.pull (engine.go) keeps leasing through JetStream outages.
//   - shaping (shape.go): with Options.Shaper (relay/shaping), each
//     destination's class limits connections, messages and new
//     connections per provider, cluster-wide; a refused destination
//     waits without a worker. Egress sources and pools (source.go): a
//     user's pool picks the local address and EHLO name of each
//     connection.
//
// Every goroutine that runs an attempt, settles a result or handles a
// wake-up recovers a panic: it is logged with its stack and the entry is
// deferred (451 4.3.0) or released, never lost.
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
// are grouped by destination: the set of MX host names + TLS plan
// (smtpclient.Client.Destination; a domain without MX records by its own
// name), or the route. Domains sharing MX hosts share a destination, so
// many domains behind a few dead or never-greeting servers — a provider's,
// or an attacker's wildcard subdomains — hold only that destination's
// slots. When the MX set is not in the DNS cache yet the entry waits for
// the lookup in a goroutine of its own, never in the dispatcher. Each
// destination has a bounded local queue (1000 entries) and at most
// max_per_destination workers, all under max_connections. A worker owns at
// most one connection, reused for the destination's next entries (RSET
// only after an unfinished transaction) and closed after timeouts.idle (a
// provider's after at most 2 s: its slot counts cluster-wide); an
// idle worker gives its slot up when another destination is waiting for one.
//
// A destination whose attempt reaches no server (connection refused or
// timed out, no greeting, TLS failure on every host, DNS SERVFAIL) opens a
// circuit breaker for the first retry interval, doubling per failed probe:
// its queued and newly arriving entries are deferred at once without
// connecting (451 4.4.1), and when it half-opens a single worker probes
// it. An entry that finds its destination's queue full is deferred at
// once (451 4.4.5) — the dispatcher only waits, up to one second, for a
// destination that is delivering briskly — and an entry that waited 30s
// for a connection is deferred too. A deferral without connecting is no
// attempt: the entry keeps its attempt count and last real reply, it does
// not count towards the destination failing (pace.go), and it waits the
// interval it last waited again, no earlier than the breaker half-opens.
// An operator retry closes a breaker that opened before it, in every
// process (retry.go). Traffic shaping (shape.go) waits the same way: a
// destination its class refuses holds no worker and no slot, and its
// entries wait in its queue, or are deferred without an attempt when the
// wait is long or a suspension. So a dead destination
// costs a few connection slots for one timeout and then only storage,
// while every other destination keeps its capacity.
//
// # Leases and shutdown
//
// All nodes read one durable consumer. An entry is leased to the node
// that pulled it for queue.AckWait (20 s); a node that dies (kill -9, cut
// off) leaves its entries to the others when that runs out, so they are
// delivered within 30 s of its death. A node keeps what it holds alive
// with InProgress heartbeats once an entry is a quarter of AckWait old —
// while it waits in a destination queue, is being delivered (a long SMTP
// transaction included) or waits to be acked — and renews nothing it
// finishes sooner, which is most entries: on a replicated consumer each
// renewal is a Raft proposal. The lease runs from when the server sent
// the entry, so the time it sat pulled ahead in the iterator counts too:
// the iterator holds at most prefetch entries (twice
// delivery.max_connections, 32 to 2048; what the workers start on
// soon), and an entry whose wait there may have reached a quarter of
// AckWait (bounded by the time of the Next call prefetch calls earlier) is
// renewed as it is taken.
//
// Entries come through the consumer's pull iterator (queue.Entries). While
// JetStream is unavailable — its server restarting, or no quorum in a
// cluster — pulls fail and delivery pauses, logged once
// (delivery_paused) and again every five minutes; pulls are tried again
// after a pause doubling from 0.1 s to 5 s, and delivery resumes by
// itself (delivery_resumed). Nothing is lost meanwhile: entries whose
// outcome could not be recorded come back after AckWait.
//
// Results are acknowledged by a small pool of finishers right after the
// remote reply, so a connection goes on with the next entry while
// JetStream records the last one (the crash window between reply and ack
// is the only source of duplicates). Run's context ending drains the
// iterator (what it still brings is released at once with a Nak, not
// left to expire), releases every entry not yet being delivered, gives
// in-flight transactions delivery.shutdown_grace, then cancels and
// releases them: another node takes them at once, and only deliveries
// that were in flight can be repeated.
package deliver
