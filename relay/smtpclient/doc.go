// Package smtpclient is jetrelay's outbound SMTP client: one attempt at one
// message, from the recipient domain's DNS to a per-recipient reply. It
// knows no queue and no configuration: relay/deliver builds a Message
// from a queue entry and a Client from its options, and what the client
// needs from outside are interfaces it defines here — a Resolver (DNS), a
// Dialer (TCP; the MX dialer is where the denied-networks guard sits), a
// PolicyStore (TLS policies from configuration), an STSSource (MTA-STS
// policies) and a Gauge (open connections).
//
// # Shape
//
// An attempt (Client.Deliver, attempt.go) goes through four steps:
//
//   - gather (transport.go, gather.go, resolve.go, cache.go): a Transport gives the
//     ordered hosts of a destination. MX delivery follows RFC 5321 §5.1: MX
//     records by preference, equal preferences shuffled, the domain's own
//     A/AAAA when there is no MX, null MX (RFC 7505) → 556 5.1.10 without
//     connecting, NXDOMAIN → 550 5.1.2, SERVFAIL and timeouts → 451 4.4.3,
//     IP-literal MX names skipped, CNAME targets followed with a warning.
//     A Route is a configured smarthost resolved through the same
//     Resolver. NewCache caches answers for their TTL and looks each name
//     up once however many workers ask.
//   - dial (conn.go): the Dialer and Options.Port; greeting, EHLO with
//     Options.Hostname, STARTTLS or implicit TLS per Plan, AUTH PLAIN for
//     routes. Policies (policy.go): none; opportunistic (STARTTLS when
//     offered, certificate not checked, a failed handshake → an immediate
//     plaintext connection to the same address, RFC 7435); required (TLS
//     or the next host, then defer); verify (the handshake itself checks
//     the chain against Options.Roots and the MX name). REQUIRETLS
//     messages (RFC 8689) always use verify and need the REQUIRETLS
//     keyword; if no MX gives them that, they fail at once with
//     550 5.7.30 (RFC 8689 §5) — a certificate that does not verify
//     included.
//   - DANE (dane.go, RFC 7672): with Options.DANE and a resolver that
//     reports the AD bit (DNSOptions.TrustAD), a DNSSEC-secure MX host
//     whose secure TLSA answer at _<port>._tcp.<host> has usable records
//     (DANE-TA, DANE-EE; PKIX usages are unusable) gets Host.DANE: STARTTLS
//     is mandatory and the chain must match (DANE-EE: the leaf, names and
//     dates ignored; DANE-TA: a presented CA and the MX name), else 4.7.5
//     and the next MX. A failed TLSA lookup makes the host unusable. A
//     domain without MX records, whose MX denial is secure, is its own
//     implicit MX for DANE too (RFC 7672 §2.2.1).
//     DANE outranks MTA-STS and delivery.tls.domains; ConnInfo says
//     tls_policy dane and, on failure, its TLS-RPT result type.
//   - MTA-STS (sts.go, RFC 8461): Options.STS (relay/mtasts) gives the
//     domain's policy once per attempt (in Hosts, in the worker, not the
//     dispatcher). enforce: verify against the MX name and only MX hosts
//     matching the policy (RFC 8461 §4.1, "*." one label) or with DANE;
//     anything else 451 4.7.5 with the reason (a missing STARTTLS
//     included), a reused session not verified to such a host dropped.
//     testing: the plan as before, unmet requirements recorded in
//     ConnInfo.TLSFailure. Order: DANE > enforce > delivery.tls.domains
//     (tls_policy configured) > testing > default.
//   - converse (send.go, pipeline.go, body.go): go-smtp's client, one
//     transaction per Message; SIZE, 8BITMIME, SMTPUTF8 and DSN used when
//     offered; an 8-bit body for a server without 8BITMIME is converted
//     to quoted-printable or failed with 5.6.3; a message needing
//     SMTPUTF8 to a server without it fails with 5.6.7. Per-command
//     timeouts follow RFC 5321 §4.5.3.2 (go-smtp's Client.Timeouts, the data
//     block timeout on every body write). To a
//     server offering PIPELINING (RFC 2920), MAIL, every RCPT and DATA go
//     out in one write and the body in another (the fork's
//     Client.SendPipelined, one MAIL/RCPT encoder for both paths). Every
//     reply — greeting, EHLO, each command — is read by go-smtp within
//     100 lines, 2,000 octets a line and 64 KiB; over that the connection
//     is closed and the attempt ends 451 4.5.0. Reply text that is kept
//     (stored, logged, evented, quoted in a DSN) is at most 4 KiB with
//     control characters escaped (remoteText). A timeout or lost
//     connection after the final dot is a verdict — 451 4.4.2, retried on
//     the schedule — never a resend to the next MX (the server may have
//     the message).
//   - classify (classify.go, codes.go): every error becomes a Verdict —
//     reply code, RFC 3463 enhanced code, whole (multiline) text — and
//     whether the next address/MX should be tried (421, dropped
//     connection, timeouts, TLS).
//
// # Attempt budget
//
// One attempt dials at most Options.MaxAddresses addresses over all MX
// hosts (default 5, as Postfix's smtp_mx_address_limit) and starts no
// dial after Options.AttemptTimeout (default 10m); connect, greeting and
// TLS of a dial are cut at that deadline too, but a transaction under way
// is never interrupted by it. What is left waits for the next attempt.
//
// # Inspection
//
// Client.Inspect (inspect.go) answers what delivery to a domain would do
// now — policy, MTA-STS decision, hosts with their DNSSEC state, TLSA
// records, effective plan or why they are left out — from the same
// functions an attempt runs (gather, applySTS, stsAllows, hostPlan), and
// Client.Probe makes one EHLO/STARTTLS session to an address under that
// plan (jetrelay tls check).
//
// # Sessions
//
// Deliver returns the Session it ended on; the caller keeps it for the
// destination's next message (RSET only after an unfinished transaction,
// RFC 5321 §4.1.1.5) and passes it back, or closes it (Quit).
package smtpclient
