package smtp

import (
	"crypto/tls"
	"errors"
	"time"
)

// StartTLS upgrades the connection with STARTTLS (RFC 3207) after the
// greeting and EHLO (as set by Hello), runs the TLS handshake at once,
// within CommandTimeout, and says EHLO again over TLS with the same name:
// the server's greeting is not repeated (RFC 3207 section 4.2). A nil
// config is a zero tls.Config; an empty ServerName is taken from Dial's
// address.
//
// A refused STARTTLS is an *SMTPError and the connection stays usable in
// plaintext. A failed handshake returns the crypto/tls error and closes the
// connection (every later call returns the same error): after the 220 no
// plaintext may follow. Use Client.TLSConnectionState to inspect the
// result.
func (c *Client) StartTLS(config *tls.Config) error {
	if err := c.hello(); err != nil {
		return err
	}
	if _, ok := c.ext["STARTTLS"]; !ok {
		return errors.New("smtp: server doesn't support STARTTLS")
	}
	if err := c.startTLS(config); err != nil {
		return err
	}
	tc := c.conn.(*tls.Conn)
	tc.SetDeadline(time.Now().Add(c.CommandTimeout))
	err := tc.Handshake()
	tc.SetDeadline(time.Time{})
	if err != nil {
		c.replyErr = err
		c.text.Close()
		return err
	}
	return c.hello()
}
