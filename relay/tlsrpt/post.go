package tlsrpt

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/jetrelay/jetrelay/relay/netguard"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// HTTPS report submission limits.
const (
	DefaultPostTimeout = 30 * time.Second
	maxResponseBytes   = 16 << 10
	maxResponseHeaders = 16 << 10
)

// poster POSTs reports to https rua endpoints (RFC 8460 §5.4): the host's
// address through delivery.dns.servers, the dial through the denied-
// networks guard, WebPKI plus delivery.tls.ca_file, no proxy, no
// redirects, the whole exchange and the response bounded.
type poster struct {
	client *http.Client
}

func newPoster(res smtpclient.Resolver, guard *netguard.Guard, roots *x509.CertPool, timeout time.Duration) *poster {
	d := guard.Dialer(&net.Dialer{Timeout: timeout})
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips := []net.IP{net.ParseIP(host)}
		if ips[0] == nil {
			a, err := res.LookupIP(ctx, host)
			if err != nil {
				return nil, err
			}
			ips = a.IPs
		}
		last := fmt.Errorf("%s has no address", host)
		for _, ip := range ips {
			c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			last = err
		}
		return nil, last
	}
	tr := &http.Transport{DialContext: dial, Proxy: nil,
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: timeout, ResponseHeaderTimeout: timeout, DisableKeepAlives: true,
		MaxResponseHeaderBytes: maxResponseHeaders}
	return &poster{client: &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// post sends one gzipped report; any 2xx is success (§5.4).
func (p *poster) post(ctx context.Context, url string, gz []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(gz))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", MediaType)
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
