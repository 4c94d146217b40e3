package main

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/nats-io/nats.go/jetstream"
)

// maxMsgIDMatches bounds the messages one Message-ID lookup prints (a
// Message-ID is meant to be unique; a client reusing one is not).
const maxMsgIDMatches = 100

var errNoSuchMsgID = errors.New("no message with that Message-ID")

// bareMsgID returns a Message-ID without spaces and its angle brackets
// (RFC 5322 §3.6.4: msg-id = "<" id-left "@" id-right ">"), or "" when s
// does not look like one.
func bareMsgID(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	if !strings.Contains(s, "@") || strings.ContainsAny(s, "<> \t\r\n") {
		return ""
	}
	return s
}

// printByMsgID finds the queue ids of the accepted messages carrying the
// Message-ID (in the events since f.Since) and prints each one's history.
func printByMsgID(ctx context.Context, js jetstream.JetStream, f events.Filter, msgID string,
	print func(events.Record) error) error {
	var ids []string
	seen := map[string]bool{}
	find := events.Filter{Status: events.Accepted, Since: f.Since}
	err := events.Tail(ctx, js, find, func(r events.Record) error {
		e := r.Event
		if e.QueueID != "" && !seen[e.QueueID] && bareMsgID(e.MsgID) == msgID && len(ids) < maxMsgIDMatches {
			seen[e.QueueID] = true
			ids = append(ids, e.QueueID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return errNoSuchMsgID
	}
	for _, id := range ids {
		one := f
		one.ID, one.Since = id, time.Time{} // the whole history, whatever --since found it
		if err := printHistory(ctx, js, one, print); err != nil {
			return err
		}
	}
	return nil
}
