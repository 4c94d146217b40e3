package stats

import (
	"strings"

	"github.com/jetrelay/jetrelay/relay/events"
)

// Event kinds the aggregator consumes (the consumer's filter subjects).
var countedKinds = []string{events.Accepted, events.Delivery, events.Bounced, events.Complaint, events.Rejected}

const (
	// suppressedReason starts the reason of relay/submit's refusal of a
	// suppressed recipient at RCPT (its rejected event); a test through a
	// real submission server keeps the two in step.
	suppressedReason = "RCPT: recipient suppressed"
	// bouncedComplaint is the status of a feedback report evented as
	// bounced (before complaint events existed).
	bouncedComplaint = "complaint"
	// maxDomainLen bounds a recipient domain used as a count's key (RFC
	// 1035 §2.3.4: 255 octets).
	maxDomainLen = 255
)

// counted is what one event adds: whose, which recipient domain ("" for
// accepted recipients) and how much.
type counted struct {
	user, domain string
	v            vec
}

// classify says what e counts for (see the package comment); ok is false
// for events that count nothing.
func classify(e *events.Event) (c counted, ok bool) {
	c.user = e.User
	c.domain = rcptDomain(e)
	switch e.Event {
	case events.Accepted:
		c.domain = ""
		c.v[0] = int64(max(e.RcptCount, 1))
	case events.Delivery:
		switch e.Status {
		case events.StatusDelivered, events.StatusRelayed:
			c.v[1] = 1
		case events.StatusDeferred:
			if e.Reason == "not_attempted" {
				return c, false
			}
			c.v[2] = 1
		case events.StatusFailed:
			if !permanent(e) {
				return c, false
			}
			c.v[3] = 1
		default:
			return c, false
		}
	case events.Bounced:
		if e.Status == bouncedComplaint {
			if e.Reply != "" && e.Reply != "feedback-type abuse" {
				return c, false
			}
			c.v[4] = 1
			break
		}
		c.v[3] = 1
	case events.Complaint:
		if e.FeedbackType != "" && !strings.EqualFold(e.FeedbackType, "abuse") {
			return c, false
		}
		c.v[4] = 1
	case events.Rejected:
		if !strings.HasPrefix(e.Reason, suppressedReason) {
			return c, false
		}
		c.v[5] = 1
	default:
		return c, false
	}
	return c, true
}

// permanent reports whether a failed delivery's last reply was a
// permanent one (RFC 5321 §4.2.1 5yz, RFC 3463 class 5).
func permanent(e *events.Event) bool {
	if e.SMTPCode != 0 {
		return e.SMTPCode >= 500 && e.SMTPCode < 600
	}
	return strings.HasPrefix(e.SMTPEnh, "5.")
}

// rcptDomain is the event's recipient domain, lower case.
func rcptDomain(e *events.Event) string {
	d := e.Domain
	if i := strings.LastIndexByte(e.Rcpt, '@'); i >= 0 && d == "" {
		d = e.Rcpt[i+1:]
	}
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if len(d) > maxDomainLen || strings.ContainsAny(d, "\x00\r\n") {
		return otherDomain
	}
	return d
}
