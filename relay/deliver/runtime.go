package deliver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/netguard"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// runtime is the reloadable part of the configuration, parsed once: the
// SMTP client with its resolver, dialers, timeouts and budget, the routes,
// the retry schedule.
type runtime struct {
	set      Settings
	res      smtpclient.Resolver // caching
	client   *smtpclient.Client
	routes   []smtpclient.Transport
	matchers []map[string]bool // per route: domains ("*" = all)
	schedule []time.Duration
	pools    pools // egress pools (source.go)
}

// runtimeBuilder holds what outlives a reload (injected resolver and
// dialers, the connection gauge) and builds a runtime from settings.
type runtimeBuilder struct {
	log      zerolog.Logger
	res      smtpclient.Resolver // caching; nil: built from each Settings
	dialer   smtpclient.Dialer   // nil: built from each Settings
	mxDialer smtpclient.Dialer
	policies smtpclient.PolicyStore // nil: from each Settings
	conns    smtpclient.Gauge
	stsKV    jetstream.KeyValue   // MTA-STS cache (nil: MTA-STS off)
	sts      smtpclient.STSSource // MTA-STS source given as is (tls check); nil: from stsKV
}

func newRuntimeBuilder(o Options) runtimeBuilder {
	b := runtimeBuilder{log: o.Logger, dialer: o.Dialer, mxDialer: o.MXDialer, policies: o.Policies, conns: o.Conns,
		stsKV: o.MTASTS}
	if o.Resolver != nil {
		b.res = smtpclient.NewCache(o.Resolver)
	}
	return b
}

// resolver is the injected resolver, prev's when delivery.dns did not
// change (its cache stays warm), or a new caching one for delivery.dns.
func (b runtimeBuilder) resolver(d config.DNS, prev *runtime) (smtpclient.Resolver, error) {
	if b.res != nil {
		return b.res, nil
	}
	if prev != nil && slices.Equal(prev.set.DNS.Servers, d.Servers) && prev.set.DNS.Timeout == d.Timeout &&
		prev.set.DNS.DNSSEC == d.DNSSEC {
		return prev.res, nil
	}
	r, err := smtpclient.NewResolver(smtpclient.DNSOptions{Servers: d.Servers, Timeout: d.Timeout.D(),
		TrustAD: d.TrustAD()})
	if err != nil {
		return nil, fmt.Errorf("deliver: delivery.dns: %w", err)
	}
	return smtpclient.NewCache(r), nil
}

// runtime builds the runtime for set; prev (nil at start) is the one in
// force, whose DNS cache is kept when delivery.dns is unchanged.
func (b runtimeBuilder) runtime(set Settings, prev *runtime) (*runtime, error) {
	client, res, err := b.client(set, prev)
	if err != nil {
		return nil, err
	}
	d := set.Delivery
	rt := &runtime{set: set, res: res, client: client, pools: newPools(set)}
	var errs []error
	for i, r := range d.Routes {
		tr, m, err := buildRoute(client, i, r)
		errs = append(errs, err)
		rt.routes, rt.matchers = append(rt.routes, tr), append(rt.matchers, m)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, s := range d.Retry.Schedule {
		rt.schedule = append(rt.schedule, s.D())
	}
	if len(rt.schedule) == 0 {
		rt.schedule = []time.Duration{time.Minute}
	}
	return rt, nil
}

// client builds the SMTP client for set: roots, resolver, dialers,
// policies, MTA-STS source (b.sts, else from b.stsKV), DANE and timeouts.
func (b runtimeBuilder) client(set Settings, prev *runtime) (*smtpclient.Client, smtpclient.Resolver, error) {
	d := set.Delivery
	roots, err := loadRoots(d.TLS.CAFile)
	if err != nil {
		return nil, nil, err
	}
	res, err := b.resolver(d.DNS, prev)
	if err != nil {
		return nil, nil, err
	}
	if b.dialer == nil {
		b.dialer = defaultDialer(d.SourceIP)
	}
	pol := b.policies
	if pol == nil {
		sp := smtpclient.StaticPolicies{Default: smtpclient.TLSPolicy(d.TLS.Default),
			Domains: map[string]smtpclient.TLSPolicy{}}
		for dom, p := range d.TLS.Domains {
			sp.Domains[strings.ToLower(dom)] = smtpclient.TLSPolicy(p)
		}
		pol = sp
	}
	mxDialer, err := b.guardedDialer(d)
	if err != nil {
		return nil, nil, err
	}
	sts := b.sts
	if sts == nil {
		if sts, err = b.stsSource(d, roots); err != nil {
			return nil, nil, err
		}
	}
	t := d.Timeouts
	client, err := smtpclient.New(smtpclient.Options{Dialer: b.dialer, MXDialer: mxDialer, Resolver: res,
		Logger: b.log, Hostname: set.Hostname, Roots: roots, Port: d.Port, Policies: pol, Conns: b.conns, STS: sts,
		MaxAddresses: d.MaxMXAddresses, AttemptTimeout: t.Attempt.D(), DANE: d.DANE.Enabled && d.DNS.TrustAD(),
		Timeouts: smtpclient.Timeouts{Connect: t.Connect.D(), Greeting: t.Greeting.D(), Mail: t.Mail.D(),
			Rcpt: t.Rcpt.D(), DataInit: t.DataInit.D(), DataBlock: t.DataBlock.D(), DataFinal: t.DataFinal.D(),
			Idle: t.Idle.D()}})
	if err != nil {
		return nil, nil, err
	}
	return client, res, nil
}

// guardedDialer is the dialer for MX hosts: Options.MXDialer as given (its
// owner guards it), else the route dialer behind the denied-networks guard
// (delivery.denied_networks minus delivery.allowed_networks). A *net.Dialer
// gets the guard as its Control hook, checked on the address the socket
// connects to; any other Dialer is checked on the address it is asked to
// dial, which is always an IP literal here (the client resolves names
// itself), so both see the address that is really dialled.
func (b runtimeBuilder) guardedDialer(d config.Delivery) (smtpclient.Dialer, error) {
	if b.mxDialer != nil {
		return b.mxDialer, nil
	}
	g, err := netguard.Parse(d.DeniedNetworks, d.AllowedNetworks)
	if err != nil {
		return nil, fmt.Errorf("deliver: %w", err)
	}
	if nd, ok := b.dialer.(*net.Dialer); ok {
		return g.Dialer(nd), nil
	}
	return checkedDialer{guard: g, next: b.dialer}, nil
}

// checkedDialer checks the address with the guard, then dials it.
type checkedDialer struct {
	guard *netguard.Guard
	next  smtpclient.Dialer
}

func (c checkedDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if err := c.guard.Control(network, address, nil); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return c.next.DialContext(ctx, network, address)
}

// DialFrom implements smtpclient.SourceDialer: the guard, then next from local.
func (c checkedDialer) DialFrom(ctx context.Context, network, address string, local netip.Addr) (net.Conn, error) {
	if err := c.guard.Control(network, address, nil); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return smtpclient.DialFrom(ctx, c.next, address, local)
}

// loadRoots is the system pool plus delivery.tls.ca_file.
func loadRoots(caFile string) (*x509.CertPool, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if caFile == "" {
		return roots, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("deliver: delivery.tls.ca_file: %w", err)
	}
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("deliver: delivery.tls.ca_file %s: no PEM certificates", caFile)
	}
	return roots, nil
}

func buildRoute(c *smtpclient.Client, i int, r config.Route) (smtpclient.Transport, map[string]bool, error) {
	host, port := splitHostPort(r.Host)
	plan := smtpclient.Plan{TLS: r.TLS, RequireTLS: r.TLS != "none", Verify: r.TLS != "none" && r.Verify(),
		ServerName: host}
	if r.Auth != nil {
		pass, ok := os.LookupEnv(r.Auth.PasswordEnv)
		if !ok {
			return nil, nil, fmt.Errorf("deliver: delivery.routes[%d].auth.password_env: %s is not set", i, r.Auth.PasswordEnv)
		}
		plan.User, plan.Pass = r.Auth.User, pass
	}
	m := map[string]bool{}
	for _, dom := range r.Domains {
		m[strings.ToLower(dom)] = true
	}
	key := fmt.Sprintf("route:%d:%s:%s:%v", i, r.Host, r.TLS, plan.Verify)
	return c.Route(smtpclient.Route{Key: key, Host: host, Port: port, Plan: plan}), m, nil
}

func splitHostPort(hp string) (string, int) {
	h, p, _ := net.SplitHostPort(hp)
	n, _ := strconv.Atoi(p)
	return h, n
}

// transport picks the route for env's domain (first match wins, "*" = all)
// or MX delivery with the domain's TLS policy; a TLS-RPT report gets MX
// delivery with opportunistic TLS whatever that policy (RFC 8460 §3).
func (rt *runtime) transport(ctx context.Context, env *queue.Envelope) (smtpclient.Transport, error) {
	dom := strings.ToLower(env.Domain)
	for i, m := range rt.matchers {
		if m["*"] || m[dom] {
			return rt.routes[i], nil
		}
	}
	if env.TLSReport {
		return rt.client.ReportMX(dom), nil
	}
	return rt.client.MX(ctx, dom, env.RequireTLS)
}
