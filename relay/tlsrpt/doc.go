// Package tlsrpt is the sending side of SMTP TLS Reporting (RFC 8460):
// it counts successful and failed TLS sessions per recipient policy
// domain, cluster-wide, and once a day sends each domain that publishes a
// _smtp._tls record one aggregate report for the previous UTC day.
//
// Counting (Counter). Delivery already emits one event per attempt with
// the domain, MX host, addresses, tls, tls_policy and tls_failure (the
// RFC 8460 §4.3 result type) to the events stream. A durable pull
// consumer (ConsumerName, shared by every node: each event goes to one
// node) reads jr.ev.delivery.>, adds the events up in memory for at most
// Options.Flush, then folds each (UTC day, domain) sum into one key of the
// KV bucket Bucket with compare-and-swap, and only then acks the events.
// Nothing is written per session on the mail path. A failed CAS update
// discards that key's sum and naks its events (they are counted again
// when redelivered). A crash between the KV update and the acks makes the
// redelivered events count twice: reports are statistics, and the window
// is one flush of one node.
//
// Which events count: a delivery event with tls_failure counts as a failed
// session of that result type; one with a TLS version in tls (and no
// failure) as a successful session; a plaintext session with nothing
// failing is no TLS session and is not counted. tls_policy dane → policy
// type tlsa (per MX host), mta-sts and mta-sts-testing → sts, anything
// else → no-policy-found (RFC 8460 §4.3.1).
//
// Reporting (Reporter). Shortly after midnight UTC (plus jitter, so nodes
// do not all start at once) every node walks the previous day's keys. Per
// domain it looks up _smtp._tls (through delivery.dns.servers), and when
// there is exactly one valid v=TLSRPTv1 record (§3) it creates a marker
// key with Create(): only the node whose Create succeeds sends, so each
// domain gets one report per day across the cluster. The JSON report
// (§4.4) is gzipped; mailto: addresses get it in a §5.3 multipart/report
// message, DKIM-signed with the From domain's key and queued through
// jetrelay's own queue with Envelope.TLSReport set, so that it is
// delivered with opportunistic TLS even when the very policy it reports on
// fails (§3); https: addresses get a POST (§5.4) dialled through the
// denied-networks guard, bounded in time and response size. The marker
// is written before sending: a crash after it loses that day's report for
// the domain rather than sending two. A domain that failed before its
// marker (a DNS error) is tried again an hour later, until the day ends.
package tlsrpt
