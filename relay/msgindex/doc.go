// Package msgindex owns the message index behind the console's Messages
// and Message pages: one Summary per message (queue id) — envelope,
// Message-ID, user, metadata, every recipient's latest state, the
// message's status — searchable by recipient, sender, ids, metadata,
// status, user and acceptance time, newest first.
//
// The index is derived from the events stream and never on the mail
// path: Run is a durable pull consumer (Durable) on JETRELAY_EVENTS that
// every node runs, so the cluster shares the work; it folds a batch's
// events per message and writes each changed summary once per batch:
// the summaries of messages not new in the batch are read in batched
// direct gets, and all the batch's writes go out at once as asynchronous
// compare-and-set publishes (the few that lose to another node are read
// and written again one by one).
//
// Storage, all JetStream:
//   - summaries: a KV bucket (Bucket) keyed <hour>.<minute>.<queue id>,
//     when the queue id was minted (UTC; queue ids start with their
//     milliseconds, so Get is one direct get with no lookup);
//   - search terms: a stream (PostingsStream) with one line per (term,
//     message) — recipient, recipient domain, sender, sender domain,
//     Message-ID, user, metadata pair, any status but delivered — on
//     jr.ix.<kind>.<bucket of the term's hash>, a bounded set of
//     subjects, one message per subject and indexer batch.
//
// Search picks a plan: a queue id is one direct get; a term reads that
// term's one subject, newest postings first in growing windows, and
// fetches the newest candidates' summaries; anything else (a common
// status, time, nothing) reads the bucket newest first, the newest hour
// minute by minute and older hours whole, one subject filter each, with a
// byte pre-filter so only candidates are decoded, and stops once a page
// is full. Every search is bounded
// (maxScan summaries, maxGets fetches) and returns a cursor to go on;
// the cursor is the last queue id returned, so new mail (newer ids) never
// shifts later pages.
//
// Promises: summaries converge whatever the order and repetition of
// events (each part of a summary records the events-stream sequence that
// set it; writes are compare-and-set on the KV revision, so two nodes'
// indexers never lose each other's updates); a summary's terms are stored
// before the summary; both live Retention (events.max_age) after their
// last write, bounded by MaxBytes, oldest dropped first.
//
// Cost: every summary is a distinct subject, and nats-server keeps about
// 250 bytes of heap per subject for as long as it is stored (see
// relay/events/stream.go); MaxBytes bounds that with the bucket. Terms
// cost a fixed number of subjects whatever the volume.
package msgindex
