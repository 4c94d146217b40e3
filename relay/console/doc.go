// Package console owns jetrelay's web console on the admin listener
// (/console/): the pages support staff and operators use to answer "did my
// email go out?" — Messages (search), Message (envelope, header, history),
// Live (the delivery log as it happens), Queue (counts and failing
// destinations), Suppressions and Overview (cluster-wide counts as SVG
// charts) — and the operator actions (retry, hold, release, delete with or
// without DSN, unsuppress).
//
// Promises:
//   - No page without a session, except the login form and its static
//     files. Sessions live in the JetStream KV bucket jetrelay_console
//     (TTL SessionTTL), so any node behind a load balancer serves them; the
//     cookie holds a random token (the key is its SHA-256), HttpOnly,
//     SameSite=Strict, Secure when the admin listener serves TLS. A
//     session's role is the configured user's role at each request:
//     removing a user or changing its role (a reload, PrepareUsers) takes
//     effect at once.
//   - Login checks bcrypt hashes (the submission users' scheme); unknown
//     users cost the same bcrypt work. A failure brake in the same bucket
//     refuses a user name or a client address after maxFailures failed
//     logins within failWindow, on every node.
//   - Operator actions are POST forms carrying the session's CSRF token
//     (a hidden field, compared in constant time; missing or wrong: 403),
//     need the operator role (else 403) and go through relay/ops and
//     relay/bounce like the CLI, recorded as events with Actor
//     "console:<user>".
//   - Everything from a message or a remote server is escaped by
//     html/template; every response carries a Content-Security-Policy
//     without inline script (the progressive JavaScript is an embedded
//     file), frame-ancestors 'none' and nosniff. Pages are bounded (rows,
//     text lengths) to stay under 100 KB.
//   - Live streams (Server-Sent Events from events.Tail) are bounded in
//     number (MaxStreams; over it: 503) and end with the request, the
//     session's expiry or Shutdown.
package console
