package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"

	"github.com/jetrelay/jetrelay/relay/safetext"
)

// tprintf is fmt.Fprintf for lines that carry data from outside (remote
// replies, addresses, subjects, headers, event fields, error texts): every
// string (named string types too), Stringer and error argument is passed through safetext.Terminal,
// so it cannot move the cursor, clear the screen or break a table row. The
// format itself is ours and printed as it is.
func tprintf(w io.Writer, format string, args ...any) error {
	safe := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case error:
			safe[i] = safetext.Terminal(v.Error())
		case fmt.Stringer:
			safe[i] = safetext.Terminal(v.String())
		default:
			if rv := reflect.ValueOf(a); rv.Kind() == reflect.String { // string and named string types
				safe[i] = safetext.Terminal(rv.String())
			} else {
				safe[i] = a
			}
		}
	}
	_, err := fmt.Fprintf(w, format, safe...)
	return err
}

// writeJSONLine writes one stored JSON document compactly on its own line
// with the characters a terminal would act on escaped inside its strings.
// A document that is not valid JSON is printed as an escaped string.
func writeJSONLine(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return tprintf(w, "%s\n", string(raw))
	}
	buf.WriteByte('\n')
	_, err := w.Write(safetext.JSON(buf.Bytes()))
	return err
}
