package stats

import (
	"encoding/json"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
)

// countedFields holds the fields of an event that classify and take read, with
// events.Event's JSON names. Decoding into it instead of a whole Event
// skips the strings, the times and the meta map nothing here uses (each
// message's accepted and delivery events pass through take).
type countedFields struct {
	Time         time.Time `json:"time"`
	Event        string    `json:"event"`
	User         string    `json:"user"`
	Rcpt         string    `json:"rcpt"`
	Rcpts        []string  `json:"rcpts"`
	RcptCount    int       `json:"rcpt_count"`
	Domain       string    `json:"domain"`
	Status       string    `json:"status"`
	SMTPCode     int       `json:"smtp_code"`
	SMTPEnh      string    `json:"smtp_enh"`
	Reply        string    `json:"reply"`
	Reason       string    `json:"reason"`
	FeedbackType string    `json:"feedback_type"`
}

// decodeEvent reads the fields of data that the counts depend on.
func decodeEvent(data []byte) (events.Event, error) {
	var c countedFields
	if err := json.Unmarshal(data, &c); err != nil {
		return events.Event{}, err
	}
	return events.Event{Time: c.Time, Event: c.Event, User: c.User, Rcpt: c.Rcpt, Rcpts: c.Rcpts,
		RcptCount: c.RcptCount,
		Domain:    c.Domain, Status: c.Status, SMTPCode: c.SMTPCode, SMTPEnh: c.SMTPEnh, Reply: c.Reply,
		Reason: c.Reason, FeedbackType: c.FeedbackType}, nil
}
