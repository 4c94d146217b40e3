package submit

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
)

// maxMsgIDLen bounds the Message-ID kept for the envelope and logs.
const maxMsgIDLen = 256

// Data reads the message (DATA or BDAT), checks and completes it, signs it,
// stores it, and answers 250 only after the queue acknowledged it.
func (s *session) Data(r io.Reader) error {
	s.mu.Lock()
	tx := s.tx
	s.mu.Unlock()
	if tx == nil {
		return s.reply("DATA", errNoTxn, rejectInfo{})
	}
	info := rejectInfo{mailFrom: events.Str(tx.from)}
	pol := s.srv.policy()
	s.tc.beginData(pol.sub.Timeouts.Data.D())
	sp, err := readSpool(r, s.srv.inflight, int64(s.srv.static.Submission.MaxMessageBytes), tx.size)
	defer sp.release() // Enqueue has copied what it publishes when store returns
	s.tc.endData(isTimeout(err))
	if err != nil {
		return s.reply("DATA", transferError(err, int64(s.srv.static.Submission.MaxMessageBytes)), info)
	}
	raw := sp.message()
	msg, err := s.prepare(tx, pol, raw)
	if err != nil {
		return s.reply("DATA", err, info)
	}
	id, err := s.store(tx, msg, sp)
	if err != nil {
		return s.reply("DATA", err, info)
	}
	return s.reply("DATA", queuedReply(id), info)
}

// transferError maps a failed read of the message to a reply; limit is
// max_message_bytes.
func transferError(err error, limit int64) error {
	var se *smtp.SMTPError
	switch {
	case errors.As(err, &se):
		if se.Code == smtp.ErrDataTooLarge.Code {
			return tooBigReply(limit)
		}
		return se
	case isTimeout(err):
		return errDataTimeout
	case errors.Is(err, smtp.ErrTooLongLine):
		return errLineTooLong
	}
	// The client went away or reset the transfer (BDAT + RSET): nobody is
	// listening for the reply; it is logged as a rejection all the same.
	return errTransferFailed
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// prepared is a checked message ready to sign and store.
type prepared struct {
	body   []byte // normalised message without the headers added here
	msgID  string // existing Message-ID, or "" to generate one
	addDay bool   // Date: missing
	meta   metaFields
}

// prepare checks the content: line endings and NUL (RFC 5322 §2.3), the
// header section, and the header From: against the user's allowed_from;
// it takes the metadata fields out of the header (meta.go).
func (s *session) prepare(tx *txn, pol *policy, raw []byte) (*prepared, error) {
	sub := pol.sub
	body, long, err := normalizeLong(raw, sub.BareNewlines == "reject", sub.MaxLineLength)
	if err != nil {
		return nil, err
	}
	if long { // RFC 5322 §2.1.1; before signing (longlines.go)
		if body, err = fixLongLines(body, sub.LongLines == "reject"); err != nil {
			return nil, err
		}
	}
	h, err := scanHeader(body, int(sub.MaxHeaderBytes))
	if err != nil {
		return nil, err
	}
	froms, err := fromAddresses(h)
	if err != nil {
		return nil, err
	}
	u := pol.user(s.user)
	if u == nil {
		return nil, errUserGone
	}
	for _, f := range froms {
		if !u.allows(f) {
			return nil, errFromDenied
		}
	}
	p := &prepared{body: body, addDay: h.Date == 0}
	if h.Meta { // removed before signing and storing (meta.go)
		if p.body, p.meta, err = stripMeta(body); err != nil {
			return nil, err
		}
	}
	if len(h.MessageID) > 0 {
		p.msgID = strings.TrimSpace(h.MessageID[0])
		if len(p.msgID) > maxMsgIDLen {
			p.msgID = p.msgID[:maxMsgIDLen]
		}
	}
	if !tx.body8Bit {
		tx.body8Bit = hasEightBit(body)
	}
	return p, nil
}

func hasEightBit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// store adds trace and missing fields (RFC 5321 §4.4, RFC 6409 §8), signs,
// splits recipients per domain and enqueues the message once.
func (s *session) store(tx *txn, p *prepared, sp *spool) (string, error) {
	id := queue.NewID()
	now := time.Now()
	var head strings.Builder
	st := stamp{Helo: tx.helo, IP: s.ip, Host: s.srv.hostname, TLS: s.tlsState, User: s.stampUser(), ID: id,
		SMTPUTF8: tx.utf8, Time: now}
	if len(tx.rcpts) == 1 {
		st.Rcpt = tx.rcpts[0].Addr
	}
	head.WriteString(received(st))
	msgID := p.msgID
	if msgID == "" {
		msgID = "<" + id + "@" + s.srv.hostname + ">"
		head.WriteString("Message-ID: " + msgID + "\r\n")
	}
	if p.addDay {
		head.WriteString("Date: " + now.Format(time.RFC1123Z) + "\r\n")
	}
	msg := frame(sp, p.body) // the added fields go in front without copying the body
	msg.prepend([]byte(head.String()))

	dkim := "none"
	if signer := s.srv.signer.Load().s; signer != nil {
		start := time.Now()
		sigs, result, err := signer.Sign(msg.bytes())
		s.srv.observe.ObserveDKIMSign(time.Since(start))
		if err != nil {
			s.log.Error().Err(err).Str("event", "dkim_error").Str("queue_id", id).Str("user", s.user).Msg("DKIM signing failed")
			return "", errSign
		}
		msg.prepend(sigs)
		dkim = result
	}
	m := &queue.Message{ID: id, Body: msg.bytes(), Entries: s.envelopes(tx, p, msgID, now)}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout+queue.PublishAllowance(len(m.Body)))
	defer cancel()
	start := time.Now()
	err := s.srv.queue.Enqueue(ctx, m)
	s.srv.observe.ObservePublish(time.Since(start))
	if err != nil {
		// Not stored (JetStream unavailable, too slow, or refusing): a
		// temporary failure the client retries, never a 5xx.
		s.log.Error().Err(err).Str("event", "enqueue_error").Str("queue_id", id).Str("user", s.user).
			Bool("unavailable", errors.Is(err, queue.ErrNotStored) || ctx.Err() != nil).
			Int64("duration_ms", time.Since(start).Milliseconds()).Msg("enqueue failed")
		return "", errStore
	}
	// The accepted event carries the arrival time: a delivery attempt may
	// publish its event before this one, and histories sort by time.
	s.srv.emit(&events.Event{
		Time: now.UTC(), Event: events.Accepted, QueueID: id, MsgID: msgID, ConnID: s.id, RemoteAddr: s.remote,
		User: s.user, MailFrom: events.Str(tx.from), RcptCount: len(tx.rcpts), Rcpts: rcptAddrs(tx.rcpts),
		Size: int64(len(m.Body)),
		TLS:  tlsName(s), DKIM: dkim, Meta: p.meta.meta, Tag: p.meta.tag,
	})
	return id, nil
}

// envelopes splits the recipients per (lowercased) domain, in first-seen
// order: one queue entry each.
func (s *session) envelopes(tx *txn, p *prepared, msgID string, now time.Time) []*queue.Envelope {
	var out []*queue.Envelope
	byDomain := map[string]*queue.Envelope{}
	for _, r := range tx.rcpts {
		d := strings.ToLower(r.Addr[strings.LastIndexByte(r.Addr, '@')+1:])
		e := byDomain[d]
		if e == nil {
			e = &queue.Envelope{MsgID: msgID, From: tx.from, Domain: d, User: s.user, Arrival: now.UTC(),
				Ret: tx.ret, EnvID: tx.envID, RequireTLS: tx.requireT, SMTPUTF8: tx.utf8, Body8Bit: tx.body8Bit,
				Meta: p.meta.meta, Tag: p.meta.tag}
			byDomain[d] = e
			out = append(out, e)
		}
		e.Rcpts = append(e.Rcpts, r)
	}
	return out
}

func tlsName(s *session) string {
	if s.tlsState == nil {
		return "none"
	}
	return tlsVersionName(s.tlsState.Version)
}

// rcptAddrs lists the recipients' addresses for the accepted event.
func rcptAddrs(rs []queue.Recipient) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Addr
	}
	return out
}
