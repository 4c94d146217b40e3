package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/netguard"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// Fetch bounds (RFC 8461 §3.3: senders bound the size and the time).
const (
	MaxPolicySize       = 64 << 10
	DefaultFetchTimeout = 20 * time.Second
	maxHeaderBytes      = 16 << 10
)

// fetchError is a failed fetch with its TLS-RPT result type.
type fetchError struct {
	kind string // smtpclient.FailSTSFetch, FailSTSInvalid or FailSTSWebPKI
	err  error
}

func (e *fetchError) Error() string { return e.kind + ": " + e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// fetcher gets policy files over HTTPS: addresses from the delivery
// resolver, connections through the denied-networks guard, certificates
// checked against roots (system plus delivery.tls.ca_file), no redirects,
// no proxy.
type fetcher struct {
	client *http.Client
	port   int
}

func newFetcher(res smtpclient.Resolver, guard *netguard.Guard, roots *x509.CertPool, port int, timeout time.Duration) *fetcher {
	d := guard.Dialer(&net.Dialer{Timeout: timeout})
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		a, err := res.LookupIP(ctx, host)
		if err != nil {
			return nil, err
		}
		if len(a.IPs) == 0 {
			return nil, fmt.Errorf("%s has no address", host)
		}
		var last error
		for _, ip := range a.IPs {
			c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			last = err
		}
		return nil, last
	}
	tr := &http.Transport{DialContext: dial, Proxy: nil, ForceAttemptHTTP2: false,
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: timeout, ResponseHeaderTimeout: timeout, MaxIdleConns: 1, DisableKeepAlives: true,
		MaxResponseHeaderBytes: maxHeaderBytes}
	return &fetcher{port: port, client: &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// fetch gets and parses domain's policy (RFC 8461 §3.3).
func (f *fetcher) fetch(ctx context.Context, domain string) (Policy, error) {
	host := "mta-sts." + domain
	if f.port != 443 {
		host += ":" + strconv.Itoa(f.port)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/.well-known/mta-sts.txt", nil)
	if err != nil {
		return Policy{}, &fetchError{smtpclient.FailSTSFetch, err}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return Policy{}, &fetchError{fetchKind(err), err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK { // redirects included (§3.3)
		return Policy{}, &fetchError{smtpclient.FailSTSFetch, fmt.Errorf("HTTP status %d", resp.StatusCode)}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(ct), "text/plain") {
		return Policy{}, &fetchError{smtpclient.FailSTSInvalid, fmt.Errorf("content type %q, not text/plain", ct)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return Policy{}, &fetchError{smtpclient.FailSTSFetch, err}
	}
	if len(body) > MaxPolicySize {
		return Policy{}, &fetchError{smtpclient.FailSTSInvalid, errors.New("policy larger than 64 KiB")}
	}
	p, err := ParsePolicy(body)
	if err != nil {
		return Policy{}, &fetchError{smtpclient.FailSTSInvalid, err}
	}
	return p, nil
}

// fetchKind tells a certificate failure (sts-webpki-invalid) from others.
func fetchKind(err error) string {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	if errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) {
		return smtpclient.FailSTSWebPKI
	}
	return smtpclient.FailSTSFetch
}
