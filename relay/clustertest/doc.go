// Package clustertest runs jetrelay as a real multi-node cluster on
// loopback, for the fault tests (kill -9, rolling restart, quorum loss) and
// for scripts/cluster: it writes one config per node (own data_dir, free
// ports, routes naming each other, a shared route secret), starts and
// signals `jetrelay serve` processes built with `go build`, records every
// delivery in an in-process SMTP sink by Message-ID, and drives a load whose
// every reply is kept, so that "accepted" (250 after DATA) can be compared
// with "delivered".
//
// It is test support and developer tooling, not product: nothing in the
// relay imports it. Only loopback addresses are used.
package clustertest
