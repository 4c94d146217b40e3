// Package stats counts what became of each user's mail, cluster-wide:
// recipients accepted, delivered, deferred, hard-bounced, complained
// about and refused as suppressed, per user, per recipient domain and per
// minute. The counts come from the events stream (JETRELAY_EVENTS) through
// one durable consumer that every node pulls from (Store.Run), so each
// event is counted by one node; a node adds up what it pulled for a few
// seconds in memory and then adds its sums to the KV bucket jetrelay_stats
// by compare-and-set, one write per touched key, never one per message.
// Queries (Totals, Rows, Series) read O(hours) keys, never events.
//
// Key layout (one hour per key; values are compact JSON):
//
//	m.<user>.<hour>  the user's counts per minute of the hour (<hour> is
//	                 Unix hours); <user> "=all" is every user together and
//	                 also lists the users seen in that hour
//	d.<user>.<hour>  the user's counts per recipient domain in that hour
//	                 (at most maxDomains domains, the rest under "*")
//
// User names are escaped into key tokens (userToken). The bucket's max_age
// is the retention, so a key disappears retention after its hour's last
// write: minute resolution is kept for the whole retention (8 days by
// default), more than the 48 hours the guard window and the console's
// day charts need.
//
// What counts (units are recipients, so that rates divide like by like,
// as RFC 3464 reports per recipient):
//   - accepted: an accepted event's rcpt_count, each listed recipient
//     (rcpts) under its domain;
//   - delivered, deferred: delivery events with that status (relayed
//     counts as delivered; deferrals without an attempt do not count);
//   - bounced (hard bounces): delivery events with status failed whose
//     last reply is permanent (5xx, or no code and a 5.x.x status), and
//     bounced events (asynchronous bounces at the intake) other than
//     feedback reports; a failure after retry.max_age with a temporary
//     last reply is not a hard bounce;
//   - complaints: complaint events (and feedback reports evented as
//     bounced with status complaint) whose feedback type is abuse (or not
//     given);
//   - suppressed: recipients refused at RCPT because they are on the
//     suppression list (rejected events of relay/submit's suppressed
//     reply). Additions to the list (suppressed events) are not counted
//     again: each follows a bounce or complaint already counted.
package stats
