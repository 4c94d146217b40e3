// Package submit owns jetrelay's authenticated submission service: one
// go-smtp server per configured listener, all sharing one Backend, and the
// Session that turns a client's transaction into a durable queue entry.
//
// What it promises:
//
//   - Never an open relay. AUTH (PLAIN, LOGIN) is offered and accepted only
//     inside TLS (STARTTLS or implicit TLS); MAIL without AUTH is refused with
//     530 5.7.0. Passwords are checked against bcrypt hashes; unknown users
//     cost the same bcrypt work as known ones. One auth brake (brake.go),
//     kept in the JetStream KV bucket jetrelay_auth so it holds on every node:
//     auth_failures.max failures from one client (an IPv4 address or an
//     IPv6 /64) ban it (454 4.7.0 at AUTH, 421 4.7.0 at connect);
//     max_per_user failures for one user from one client ban that pair
//     (454 4.7.0 for that user only); a user's failures from everywhere only
//     add a capped delay, so nobody can lock a user out. A success clears only
//     its own (user, client) counter. trusted_networks are never banned.
//     A bucket that does not answer within seconds fails open to the
//     node's own per-client counts (brakelocal.go), never to a refusal.
//     Before AUTH succeeds, timeouts.pre_auth (idle, session) apply.
//   - Rates hold for the cluster. A user's rate (messages, counted at MAIL
//     FROM) is kept in the KV bucket jetrelay_rate: nodes lease blocks of
//     tokens per window of the rate's period, so the cluster accepts at
//     most N per aligned window and most messages touch no bucket; over it
//     451 4.7.1. A bucket that does not answer within a second makes the
//     node limit alone at the configured rate (ratekv.go).
//   - Sender policy. MAIL FROM and every address in the header From: must be
//     covered by the user's allowed_from (domains and exact addresses,
//     case-insensitive; a domain does not cover its subdomains; "*" covers
//     every sender). The null reverse-path (MAIL FROM:<>) is refused with
//     553 5.7.1 unless allowed_from contains "*": applications have no
//     business sending bounces, and a null sender disables every later bounce.
//   - Acknowledge only what is stored. 250 2.0.0 "OK: queued as <ID>" is sent
//     only after queue.Enqueue returned nil for the whole message (one entry per
//     recipient domain). A message JetStream cannot store answers 451 4.3.0,
//     never a 5xx: the queue retries a publish that outlives a leader
//     change within its budget (8 s, queue/publish.go), so the reply comes
//     within 10 s of the final dot (plus a second per MiB over the first).
//   - Policy reads fail open. The suppression lookup at RCPT gets a second;
//     when it fails the recipient is accepted, logged (policy_read_failed,
//     rate-limited) and counted, and reads pause for 5 s (policyread.go):
//     a lost NATS node does not turn into 451s at RCPT.
//   - Hostile input is bounded. Every go-smtp limit is set (size, recipients,
//     line length, read/write timeouts), plus what go-smtp leaves to us:
//     max_connections and max_connections_per_ip (421 4.7.0 at connect),
//     timeouts.session (whole connection), timeouts.data (whole DATA or BDAT
//     transfer), max_idle_commands (commands outside a transaction, then
//     421 4.7.0 and close), a header-section bound, address and EHLO syntax
//     checks. A failed STARTTLS handshake closes the connection instead of
//     carrying on in plaintext.
//   - Message hygiene (RFC 5321 §4.1.4, RFC 6409 §8). Only CRLF.CRLF ends DATA
//     (go-smtp's reader); bare CR or LF is rewritten to CRLF, or refused with
//     550 5.6.0 when bare_newlines is "reject"; NUL is refused with 550 5.6.0.
//     A Received: field is prepended (RFC 5321 §4.4, with TLS version, cipher,
//     the login only with received_user, and queue id), Message-ID: and Date: are added when
//     missing, then the Signer (if any) prepends DKIM-Signature. Lines over
//     998 octets (RFC 5322 §2.1.1) are folded (header) or re-encoded as
//     quoted-printable (body part) before signing, or refused 554 5.6.0
//     (long_lines: reject; signed or encrypted content): longlines.go.
//   - Message metadata. X-Jetrelay-Meta-<key> and X-Jetrelay-Tag fields are
//     removed before signing and storing and carried in the envelope and
//     the accepted event; too many, too long or malformed ones are refused
//     554 5.6.0 (meta.go).
//   - Recipient domains checked (bounces.verify_domains). RCPT looks the
//     domain up through delivery.dns, within 3 s: null MX 556 5.1.10,
//     NXDOMAIN or no MX and no address 550 5.1.2, DNS failures accept;
//     verdicts cached per node (rcptdomain.go).
//   - Bounded memory. A message is held once, the added fields and
//     signatures written into headroom in front of it; all DATA in memory
//     at once is capped by max_inflight_bytes (per process: it guards this
//     process's heap), over it 452 4.3.1 at MAIL (SIZE=) or after the final
//     dot (RFC 5321 §4.3.2): spool.go.
//   - One error boundary. Every Session method returns through
//     session.reply: an *smtp.SMTPError passes unchanged (and is logged as an
//     event=rejected line), a deadline becomes 451 4.4.5, anything else
//     451 4.3.0 "internal error, try again (id=…)" plus a full error log line.
//     Internal text never reaches the client. Reply codes live in codes.go.
//
// go-smtp is used with jetrelay's patches (third_party/go-smtp,
// PATCHES.md): refusals it answers itself (syntax, sequence, SIZE= over
// the limit at MAIL, an oversized BDAT chunk, RCPT past max_recipients)
// reach Server.protocolRejected and are event=rejected lines like the
// session's, one per refusal: the 502/503 sequence errors a pipelining
// client gets after a refused MAIL or RCPT are consequences and are logged
// at debug level (followon.go). DATA and BDAT both accept exactly
// max_message_bytes.
// Commands go-smtp answers itself (NOOP, VRFY, HELP, RSET, EHLO) are
// counted by the fork's Server.CommandHook; the per-line read time comes
// from its ReadTimeoutFunc (conn.go).
//
// The server reads only its Settings (host name, data directory, the
// submission section, and for the domain check bounces.verify_domains,
// delivery.dns and the routed domains), built by cmd. Reload is two-phase: Prepare parses
// users, allowed_from, rates and the connection, idle-command,
// auth-failure, header, bare-newline, long-line and session/data timeout
// settings, loads the certificate again (without Options.TLS) and returns
// the apply that swaps them in at once. Listeners, max_message_bytes,
// max_recipients, max_line_length, max_inflight_bytes and timeouts.idle
// are fixed at New (config.Restart: a reload keeps them and names them
// restart_needed).
package submit
