// Package shaping shapes outbound traffic per mailbox provider, across
// every node of a cluster, and backs off when a provider asks for it
// (issue 16). It owns the decisions only: relay/deliver asks before it
// connects and before each message and waits when told to; cmd builds the
// Settings from delivery.shaping (this package imports no config).
//
// # Classes
//
// Classify maps a destination to its Class by its MX hosts: the first
// Provider (in Settings order) one of whose patterns matches any MX host
// (".google.com" matches google.com and every name under it; other
// patterns match one host; case and a trailing dot do not matter), so
// gmail.com and every Google Workspace domain share Google's limits
// without being listed. A destination matching no provider is its own
// class under Settings.Default, enforced per node and per destination
// (what delivery.max_per_destination was), with no bucket traffic.
//
// # Limits, cluster-wide
//
// A provider's limits hold for the whole cluster through the KV bucket
// jetrelay_shaping (Bucket documents its keys), in total or, with
// PerSource, per egress source:
//
//   - connections: a connection is a slot key c.P.S.N (N < connections)
//     created with a per-key TTL of 30 s and renewed every 10 s while the
//     connection lives; Release deletes it (at its own revision only). A
//     node that dies without releasing gives its slots back within 30 s.
//     Connect tries the slots the watch saw free, from a random one.
//   - rate and connection_rate: a pace (pace.go): the theoretical arrival
//     time of a generic cell rate algorithm in KV, reserved by
//     compare-and-set in blocks of half a second's tokens (at least one),
//     spent by the node at the pace. In every window of W the cluster
//     sends at most Count·W/Per + Rate.Burst() (3 at 60/m).
//   - per_connection: counted in the Conn; Send answers
//     ReasonPerConnection and the caller QUITs and connects again.
//
// Connect and Send never block on a limit: they answer a Wait (why, and
// until when). Changed(c) wakes a waiting destination earlier: a slot
// released on this node or (as the watch sees it) on another, a
// suspension or rate change beginning or ending, a reload.
//
// # Adaptive rules and the builtin backoff
//
// Observe hands every 4xx/5xx reply to a goroutine. A Rule whose Reply
// matches counts it in r.R.P (the match times within its window,
// compare-and-set, so the count is cluster-wide); the write that reaches
// the threshold clears the count, so exactly one node acts: it stores the
// action in s.P (a suspension, or a lower rate) with a TTL ending with it,
// logs event=shaping (provider, rule, action, until), and calls
// Options.Events; at the end it logs and calls Events again. Every node
// obeys through its watch of s.P; Resume deletes it and every node wakes.
// A reply that no rule matches and that asks to slow down (a 421 at
// greeting, 4.7.28, 4.7.650, 4.7.0/4.7.1 saying rate, too many or
// throttled) halves the class's effective rate for Settings.BackoffFor
// (default 15 minutes) in b.P, at most once a minute; a class without a
// rate halves what it sent over the last minute (at least 60/m), down to
// 1/m at the lowest. A suspension also stops Send on open connections.
//
// # Bucket trouble fails open
//
// Every bucket call is bounded by a second. When the bucket does not
// answer, the node limits as if it were alone (its own connections within
// the limit, its own pace from the last state it knew), logs
// event=shaping_kv_unavailable at most once a minute, and leaves the
// bucket alone for 5 s. Connections granted meanwhile take a slot at the
// next renewal. Delivery never stalls on KV.
//
// # Status
//
// Each node reports in n.D (TTL 15 s) the entries waiting per provider
// (SetWaiting) and what it sent over the last minute; Status sums them
// with the live slots and overrides, for `jetrelay shaping status`, from
// any process with a JetStream connection.
//
// Deviations from the first API contract (SHAPING-API.md): Change has
// Resumed; ProviderStatus has RateUntil; Wait has ReasonCanceled for an
// ended ctx; Resume also lifts lowered rates and returns ErrNotSuspended
// when nothing was in force; Shaper.SetWaiting reports waiting entries.
package shaping
