// Package msgindex owns the message index behind the console's Messages
// and Message pages: one Summary per message (queue id) — envelope,
// Message-ID, user, metadata, every recipient's latest state, the
// message's status — searchable by recipient, sender, ids, metadata,
// status, user and acceptance time, newest first.
//
// The index is derived from the events stream and never on the mail
// path: Run is a durable pull consumer (Durable) on JETRELAY_EVENTS that
// every node runs, so the cluster shares the work; it folds a batch's
// events per message and writes each changed summary once per batch.
//
// Storage is a KV bucket (Bucket) keyed <hour>.<queue id>, hour being the
// UTC hour the queue id was minted (queue ids start with their
// milliseconds, so Get needs no lookup). Newest-first search reads whole
// hours through one server-side subject filter each, newest hour first,
// and stops once a page is full; a byte pre-filter on the stored JSON
// decodes only candidates. Every search is bounded (maxScan summaries);
// the opaque cursor is the last queue id returned, so new mail (newer
// ids) never shifts later pages.
//
// Promises: summaries converge whatever the order and repetition of
// events (each part of a summary records the events-stream sequence that
// set it, updates are compare-and-set on the KV revision, so two nodes'
// indexers never lose each other's updates); a summary lives Retention
// after its last update (events.max_age) and the bucket is bounded by
// MaxBytes, dropping the least recently updated first.
//
// Cost: every summary is a distinct subject, and nats-server keeps about
// 250 bytes of heap per subject for as long as it is stored (see
// relay/events/stream.go); MaxBytes bounds that with the bucket.
package msgindex
