package smtp

import (
	"errors"
	"io"
	"time"
)

// DataSentError reports that the final "." of a message was written but
// its reply was not read (a timeout, a lost connection, a reply over the
// limits). The server may have accepted the message: RFC 5321 section
// 4.5.3.2.6 warns that resending it elsewhere may duplicate it. Err is the
// cause (use errors.Is / errors.As). A reply that was read (a 4xx or 5xx
// *SMTPError) is never wrapped.
type DataSentError struct {
	Err error
}

func (e *DataSentError) Error() string {
	return "smtp: message sent, final reply lost: " + e.Err.Error()
}

func (e *DataSentError) Unwrap() error { return e.Err }

// Timeouts are the client's per-phase timeouts (RFC 5321 section
// 4.5.3.2), used by Mail, Rcpt, Data, the DataCommand and SendPipelined.
// A zero field falls back to Client.CommandTimeout (DataFinal: to
// Client.SubmissionTimeout; DataBlock: no limit on body writes).
type Timeouts struct {
	Mail      time.Duration // MAIL reply (and RSET); 4.5.3.2.2: 5 minutes
	Rcpt      time.Duration // each RCPT reply; 4.5.3.2.3: 5 minutes
	DataInit  time.Duration // the 354 reply to DATA; 4.5.3.2.4: 2 minutes
	DataBlock time.Duration // each write of the body; 4.5.3.2.5: 3 minutes
	DataFinal time.Duration // the reply to the final dot; 4.5.3.2.6: 10 minutes
}

func (c *Client) timeout(d time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return c.CommandTimeout
}

func (c *Client) finalTimeout() time.Duration {
	if c.Timeouts.DataFinal > 0 {
		return c.Timeouts.DataFinal
	}
	return c.SubmissionTimeout
}

// afterFinalDot wraps an error reading the reply to the final dot, unless
// it is the server's reply. Any reply ends the transaction.
func (c *Client) afterFinalDot(err error) error {
	var se *SMTPError
	if err == nil || errors.As(err, &se) {
		c.inTx = false
		return err
	}
	return &DataSentError{Err: err}
}

// dataBlockWriter puts Timeouts.DataBlock on each write of a message body
// (RFC 5321 section 4.5.3.2.5).
type dataBlockWriter struct {
	c *Client
	w io.Writer
}

func (w *dataBlockWriter) Write(b []byte) (int, error) {
	if w.c.inData && w.c.Timeouts.DataBlock > 0 {
		w.c.conn.SetWriteDeadline(time.Now().Add(w.c.Timeouts.DataBlock))
		defer w.c.conn.SetWriteDeadline(time.Time{})
	}
	return w.w.Write(b)
}
