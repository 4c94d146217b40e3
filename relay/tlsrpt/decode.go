package tlsrpt

import (
	"encoding/json"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
)

// sessionFields holds the fields of a delivery event that sessionOf and
// the counter read, with events.Event's JSON names. Decoding into it
// instead of a whole Event skips the strings and the meta map nothing here
// uses (every delivery event passes through the counter).
type sessionFields struct {
	Time       time.Time `json:"time"`
	Event      string    `json:"event"`
	Domain     string    `json:"domain"`
	MX         string    `json:"mx"`
	IP         string    `json:"ip"`
	Source     string    `json:"source"`
	TLS        string    `json:"tls"`
	TLSPolicy  string    `json:"tls_policy"`
	TLSFailure string    `json:"tls_failure"`
}

// decodeEvent reads the fields of data that the counts depend on.
func decodeEvent(data []byte) (events.Event, error) {
	var f sessionFields
	if err := json.Unmarshal(data, &f); err != nil {
		return events.Event{}, err
	}
	return events.Event{Time: f.Time, Event: f.Event, Domain: f.Domain, MX: f.MX, IP: f.IP, Source: f.Source,
		TLS: f.TLS, TLSPolicy: f.TLSPolicy, TLSFailure: f.TLSFailure}, nil
}
