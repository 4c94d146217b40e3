package stats

import "github.com/jetrelay/jetrelay/relay/events"

// countedFields are the fields of an event that classify and take read.
// Decoding only these skips the strings, the times and the meta map
// nothing here uses (each message's accepted and delivery events pass
// through take).
const countedFields = events.FTime | events.FEvent | events.FUser | events.FRcpt | events.FRcpts |
	events.FRcptCount | events.FDomain | events.FStatus | events.FSMTPCode | events.FSMTPEnh |
	events.FReply | events.FReason | events.FFeedbackType

// decodeEvent reads the fields of data that the counts depend on.
func decodeEvent(data []byte) (events.Event, error) {
	var e events.Event
	err := events.Decode(data, &e, countedFields)
	return e, err
}
