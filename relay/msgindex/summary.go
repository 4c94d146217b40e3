package msgindex

import (
	"errors"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
)

// Message and recipient statuses of a Summary.
const (
	StatusQueued    = "queued"
	StatusDeferred  = events.StatusDeferred
	StatusDelivered = events.StatusDelivered
	StatusFailed    = events.StatusFailed
	StatusBounced   = "bounced"
	StatusHeld      = "held"
	StatusDeleted   = "deleted"
	StatusExpired   = "expired"
	StatusMixed     = "mixed"
)

// ErrNotFound means the index holds no summary for the queue id (never
// indexed, or older than the retention).
var ErrNotFound = errors.New("msgindex: no summary for this queue id")

// ErrBadQuery is wrapped by Search's errors about the query itself (a
// cursor that is not one of Page.Next's, an unknown status).
var ErrBadQuery = errors.New("msgindex: bad query")

// Summary is what the index knows about one message (one queue id): its
// envelope, every recipient's latest state and the message's status.
type Summary struct {
	QueueID  string            `json:"queue_id"`
	MsgID    string            `json:"msg_id,omitempty"` // Message-ID header
	User     string            `json:"user,omitempty"`
	From     string            `json:"from"` // envelope sender
	Rcpts    []RcptState       `json:"rcpts"`
	Accepted time.Time         `json:"accepted"`
	Updated  time.Time         `json:"updated"`
	Status   string            `json:"status"` // queued | deferred | delivered | failed | bounced | held | deleted | expired | mixed
	Meta     map[string]string `json:"meta,omitempty"`
	Tag      string            `json:"tag,omitempty"`
	Size     int64             `json:"size,omitempty"`
	// RcptCount is the number of recipients accepted (the accepted event's
	// count); recipients not yet attempted are not in Rcpts.
	RcptCount int `json:"rcpt_count,omitempty"`
	// DSNID is the queue id of the last DSN sent about the message.
	DSNID string `json:"dsn_id,omitempty"`
}

// RcptState is one recipient's latest delivery state: the last delivery
// attempt's outcome and remote reply, or a later asynchronous bounce.
type RcptState struct {
	Addr   string    `json:"addr"`
	Status string    `json:"status"` // deferred | delivered | failed | bounced
	Code   int       `json:"code,omitempty"`
	Enh    string    `json:"enh,omitempty"`
	Reply  string    `json:"reply,omitempty"`
	MX     string    `json:"mx,omitempty"`
	At     time.Time `json:"at"`
	// Attempt is the delivery attempt the state comes from.
	Attempt int `json:"attempt,omitempty"`
}

// record is a Summary as stored, with the events-stream sequence that set
// each part. Folding an event changes a part only when the event's
// sequence is higher than the part's, so applying events twice or in any
// order (two indexers, redeliveries) gives the same record.
type record struct {
	Summary
	AccSeq  uint64   `json:"acc_seq,omitempty"`  // the accepted event
	StSeq   uint64   `json:"st_seq,omitempty"`   // the last hold/release/delete/expire/retry
	State   string   `json:"state,omitempty"`    // held | deleted | expired | "" (follows the recipients)
	RcptSeq []uint64 `json:"rcpt_seq,omitempty"` // parallel to Rcpts
	DSNSeq  uint64   `json:"dsn_seq,omitempty"`
	Cut     bool     `json:"cut,omitempty"` // recipients were dropped to fit (bound, encodeFit)
	// Epoch is the creation time (Unix ns) of the events stream whose
	// sequences the Seq fields are: a stream created again (a migration
	// into a cluster copies the events with new sequences) starts them anew.
	Epoch int64 `json:"epoch,omitempty"`
}

// renumber forgets the sequences of another events stream: the events
// are delivered again from the new stream's start and folded anew.
func (r *record) renumber(epoch int64) {
	if r.Epoch == epoch {
		return
	}
	r.Epoch, r.AccSeq, r.StSeq, r.DSNSeq = epoch, 0, 0, 0
	clear(r.RcptSeq)
}

// fold applies one event, stored at events-stream sequence seq.
func (r *record) fold(seq uint64, e *events.Event) {
	r.fill(e)
	switch e.Event {
	case events.Accepted:
		if seq > r.AccSeq {
			r.AccSeq = seq
			r.Accepted = e.Time.UTC()
			if e.MailFrom != nil {
				r.From = *e.MailFrom
			}
			r.RcptCount, r.Size = e.RcptCount, e.Size
			r.addQueued(e.Rcpts)
		}
	case events.Delivery:
		st := e.Status
		if st == events.StatusRelayed {
			st = StatusDelivered
		}
		r.setRcpt(seq, e, st)
	case events.Bounced:
		if e.Status == events.StatusFailed { // a complaint does not change delivery
			r.setRcpt(seq, e, StatusBounced)
		}
	case events.DSN:
		if e.DSNID != "" && seq > r.DSNSeq {
			r.DSNSeq, r.DSNID = seq, e.DSNID
		}
	case events.Held, events.Released, events.Deleted, events.Expired, events.Retried:
		if seq > r.StSeq {
			r.StSeq, r.State = seq, messageState[e.Event]
		}
	}
	if t := e.Time.UTC(); t.After(r.Updated) {
		r.Updated = t
	}
	r.Status = r.status()
}

// messageState maps the operator and expiry events to the record's State.
var messageState = map[string]string{
	events.Held: StatusHeld, events.Deleted: StatusDeleted, events.Expired: StatusExpired,
}

// fill takes the fields every event of a message may carry when the
// record lacks them (events can arrive before the accepted one).
func (r *record) fill(e *events.Event) {
	if r.MsgID == "" {
		r.MsgID = e.MsgID
	}
	if r.User == "" {
		r.User = e.User
	}
	if r.From == "" && e.MailFrom != nil && e.Event != events.DSN {
		r.From = *e.MailFrom
	}
	if r.Meta == nil && len(e.Meta) > 0 {
		r.Meta = e.Meta
	}
	if r.Tag == "" {
		r.Tag = e.Tag
	}
	if r.Accepted.IsZero() && !e.Arrival.IsZero() {
		r.Accepted = e.Arrival.UTC()
	}
}

// setRcpt records a recipient's state from e unless a later event did.
func (r *record) setRcpt(seq uint64, e *events.Event, status string) {
	if e.Rcpt == "" || status == "" {
		return
	}
	i := r.rcptIndex(e.Rcpt)
	if i < 0 {
		r.Rcpts = append(r.Rcpts, RcptState{Addr: e.Rcpt})
		r.RcptSeq = append(r.RcptSeq, 0)
		i = len(r.Rcpts) - 1
	}
	for len(r.RcptSeq) < len(r.Rcpts) {
		r.RcptSeq = append(r.RcptSeq, 0)
	}
	if seq <= r.RcptSeq[i] {
		return
	}
	r.RcptSeq[i] = seq
	r.Rcpts[i] = RcptState{Addr: r.Rcpts[i].Addr, Status: status, Code: e.SMTPCode, Enh: e.SMTPEnh,
		Reply: e.Reply, MX: e.MX, At: e.Time.UTC(), Attempt: e.Attempt}
}

// addQueued lists an accepted message's recipients as queued (sequence 0:
// any delivery event about one of them wins), so a search by recipient
// finds the message before its first attempt.
func (r *record) addQueued(addrs []string) {
	for _, a := range addrs {
		if a == "" || r.rcptIndex(a) >= 0 {
			continue
		}
		r.Rcpts = append(r.Rcpts, RcptState{Addr: a, Status: StatusQueued})
		r.RcptSeq = append(r.RcptSeq, 0)
	}
}

// rcptIndex finds addr among the recipients (ASCII case-insensitive: a
// bounce reports the address normalised).
func (r *record) rcptIndex(addr string) int {
	for i, s := range r.Rcpts {
		if strings.EqualFold(s.Addr, addr) {
			return i
		}
	}
	return -1
}

// status is the message's status: an operator's or the expiry's state,
// else the recipients' common status, "mixed" when they differ (a
// recipient not attempted yet counts as queued).
func (r *record) status() string {
	if r.State != "" {
		return r.State
	}
	if len(r.Rcpts) == 0 {
		return StatusQueued
	}
	st := r.Rcpts[0].Status
	for _, s := range r.Rcpts[1:] {
		if s.Status != st {
			return StatusMixed
		}
	}
	if r.RcptCount > len(r.Rcpts) && !r.Cut {
		return StatusMixed
	}
	return st
}

// Statuses are the values Query.Status accepts.
var Statuses = []string{StatusQueued, StatusDeferred, StatusDelivered, StatusFailed, StatusBounced,
	StatusHeld, StatusDeleted, StatusExpired, StatusMixed}
