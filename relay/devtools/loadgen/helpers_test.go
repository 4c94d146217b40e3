package loadgen

import (
	"crypto/tls"
	"io"
	"net"
)

// proxyTLS accepts implicit-TLS connections on ln and relays each in the
// clear to target, until ln is closed.
func proxyTLS(ln net.Listener, cfg *tls.Config, target string) {
	tl := tls.NewListener(ln, cfg)
	for {
		c, err := tl.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{})
			go func() {
				_, _ = io.Copy(up, c)
				up.(*net.TCPConn).CloseWrite()
				close(done)
			}()
			_, _ = io.Copy(c, up)
			c.Close()
			<-done
		}()
	}
}
