package tlsrpt

import "github.com/jetrelay/jetrelay/relay/events"

// sessionFields are the fields of a delivery event that sessionOf and the
// counter read. Decoding only these skips the strings and the meta map
// nothing here uses (every delivery event passes through the counter).
const sessionFields = events.FTime | events.FEvent | events.FDomain | events.FMX | events.FIP |
	events.FSource | events.FTLS | events.FTLSPolicy | events.FTLSFailure

// decodeEvent reads the fields of data that the counts depend on.
func decodeEvent(data []byte) (events.Event, error) {
	var e events.Event
	err := events.Decode(data, &e, sessionFields)
	return e, err
}
