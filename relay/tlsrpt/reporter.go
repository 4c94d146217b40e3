package tlsrpt

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/dnsclient"
	"github.com/jetrelay/jetrelay/relay/netguard"
	"github.com/jetrelay/jetrelay/relay/smtpclient"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Enqueuer queues a message (queue.Queue).
type Enqueuer interface {
	Enqueue(ctx context.Context, m *queue.Message) error
}

// Signer DKIM-signs a whole message (dkim.Signer): the DKIM-Signature
// fields to prepend and a result, "none" when no key covers the From
// domain.
type Signer interface {
	Sign(msg []byte) (sigs []byte, result string, err error)
}

// unsigned is dkim.ResultNone.
const unsigned = "none"

// ReporterOptions configure NewReporter.
type ReporterOptions struct {
	KV  jetstream.KeyValue // from OpenBucket
	STS jetstream.KeyValue // relay/mtasts' cache, for sts policy strings (nil: none)
	// Queue takes reports by mail; Signer signs them (nil, or no key for
	// From's domain: reports go only to https endpoints).
	Queue  Enqueuer
	Signer Signer
	// DNS is delivery.dns: the _smtp._tls records, TLSA records and https
	// endpoints' addresses are looked up there.
	DNS      dnsclient.Options
	Guard    *netguard.Guard // delivery.denied_networks for https endpoints
	Roots    *x509.CertPool  // verify https endpoints (nil: system roots)
	From     string          // delivery.tls_rpt.from
	OrgName  string
	Contact  string
	TLSAPort int // delivery.port (0: 25)
	// Jitter is the longest extra wait after midnight (0: 30 minutes).
	Jitter      time.Duration
	PostTimeout time.Duration // one https POST (0: DefaultPostTimeout)
	Node        string        // written into markers
	Logger      zerolog.Logger
	Now         func() time.Time // nil: time.Now
}

// Reporter sends the daily reports.
type Reporter struct {
	o    ReporterOptions
	dns  *dnsclient.Client
	pol  policySource
	post *poster
	meta Meta
}

// NewReporter returns a Reporter.
func NewReporter(o ReporterOptions) (*Reporter, error) {
	if o.KV == nil {
		return nil, errors.New("tlsrpt: NewReporter needs KV")
	}
	at := strings.LastIndexByte(o.From, '@')
	if at <= 0 || at == len(o.From)-1 {
		return nil, fmt.Errorf("tlsrpt: from %q is not an address", o.From)
	}
	c, err := dnsclient.New(o.DNS)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: %w", err)
	}
	res, err := smtpclient.NewResolver(o.DNS)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: %w", err)
	}
	if o.TLSAPort <= 0 {
		o.TLSAPort = 25
	}
	if o.Jitter <= 0 {
		o.Jitter = 30 * time.Minute
	}
	if o.PostTimeout <= 0 {
		o.PostTimeout = DefaultPostTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := Meta{OrgName: o.OrgName, Contact: o.Contact, Submitter: strings.ToLower(o.From[at+1:])}
	if m.OrgName == "" {
		m.OrgName = m.Submitter
	}
	if m.Contact == "" {
		m.Contact = o.From
	}
	return &Reporter{o: o, dns: c, pol: policySource{sts: o.STS, dns: c, tlsaPort: o.TLSAPort},
		post: newPoster(res, o.Guard, o.Roots, o.PostTimeout), meta: m}, nil
}

// Sent says what SendDay did.
type Sent struct {
	Domains  int // domains with counts
	Reported int // reports sent by this call
	Skipped  int // no record, or already reported (marker)
	Failed   int
}

// SendDay sends the report of day (any time in it, UTC) to every domain
// counted that day and publishing a TLSRPT record, covering the day up to
// end (the day's last second for the nightly run, now for `send --now`).
// A domain already reported that day, by any node, is skipped.
func (r *Reporter) SendDay(ctx context.Context, day, end time.Time) (Sent, error) {
	counts, err := Read(ctx, r.o.KV, Day(day), "")
	if err != nil {
		return Sent{}, err
	}
	s := Sent{Domains: len(counts)}
	for _, d := range counts {
		switch err := r.sendDomain(ctx, d, day, end); {
		case errors.Is(err, errSkipped):
			s.Skipped++
		case err != nil:
			s.Failed++
			r.o.Logger.Warn().Err(err).Str("event", "tlsrpt").Str("domain", d.Domain).Str("day", d.Day).
				Msg("TLS-RPT report not sent")
		default:
			s.Reported++
		}
	}
	return s, ctx.Err()
}

var errSkipped = errors.New("skipped")

// sendDomain reports one domain's day: record, marker, then delivery.
func (r *Reporter) sendDomain(ctx context.Context, d *DomainCounts, day, end time.Time) error {
	if _, err := r.o.KV.Get(ctx, markerKey(d.Day, d.Domain)); err == nil {
		return errSkipped
	}
	ep, err := lookupRecord(ctx, r.dns, d.Domain)
	if errors.Is(err, errNoRecord) {
		return errSkipped
	} else if err != nil {
		return fmt.Errorf("_smtp._tls record: %w", err)
	}
	start := day.UTC().Truncate(24 * time.Hour)
	uid := queue.NewID()
	id := d.Day + "." + uid + "@" + r.meta.Submitter
	marker := []byte(id + " " + r.o.Node + " " + r.o.Now().UTC().Format(time.RFC3339))
	if _, err := r.o.KV.Create(ctx, markerKey(d.Day, d.Domain), marker); errors.Is(err, jetstream.ErrKeyExists) {
		return errSkipped // another node reports it
	} else if err != nil {
		return fmt.Errorf("marker: %w", err)
	}
	rep := r.pol.build(ctx, d, r.meta, start, end, id)
	gz, err := Gzip(&rep)
	if err != nil {
		return err
	}
	var errs []error
	if len(ep.Mailto) > 0 {
		fn := FileName(r.meta.Submitter, d.Domain, start, end, uid)
		errs = append(errs, r.mail(ctx, d.Domain, ep.Mailto, id, fn, gz))
	}
	for _, u := range ep.HTTPS {
		pctx, cancel := context.WithTimeout(ctx, r.o.PostTimeout)
		if err := r.post.post(pctx, u, gz); err != nil {
			errs = append(errs, fmt.Errorf("POST %s: %w", u, err))
		}
		cancel()
	}
	r.o.Logger.Info().Str("event", "tlsrpt").Str("domain", d.Domain).Str("day", d.Day).Str("report_id", id).
		Int("mailto", len(ep.Mailto)).Int("https", len(ep.HTTPS)).Msg("TLS-RPT report sent")
	return errors.Join(errs...)
}

// mail signs the §5.3 message and queues it, one entry per recipient
// domain, marked TLSReport (delivered whatever the TLS policy, §3) and
// NOTIFY=NEVER (a report that cannot be delivered makes no DSN).
func (r *Reporter) mail(ctx context.Context, domain string, to []string, id, fileName string, gz []byte) error {
	if r.o.Queue == nil || r.o.Signer == nil {
		return errors.New("reports by mail need the queue and a DKIM signer")
	}
	now := r.o.Now().UTC()
	msg := compose(mailOptions{From: r.o.From, Submitter: r.meta.Submitter, Domain: domain, To: to,
		ReportID: id, FileName: fileName, Now: now}, gz)
	sigs, result, err := r.o.Signer.Sign(msg)
	if err != nil {
		return fmt.Errorf("DKIM: %w", err)
	}
	if result == unsigned {
		return fmt.Errorf("no DKIM key signs for %s: not sent by mail (RFC 8460 §5.3)", r.meta.Submitter)
	}
	body := append(sigs, msg...)
	byDomain := map[string]*queue.Envelope{}
	var entries []*queue.Envelope
	for _, addr := range to {
		dom := strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
		e := byDomain[dom]
		if e == nil {
			e = &queue.Envelope{MsgID: "<" + id + ">", From: r.o.From, Domain: dom, Arrival: now,
				Size: int64(len(body)), TLSReport: true}
			byDomain[dom] = e
			entries = append(entries, e)
		}
		e.Rcpts = append(e.Rcpts, queue.Recipient{Addr: addr, Notify: []string{"NEVER"}})
	}
	return r.o.Queue.Enqueue(ctx, &queue.Message{Body: body, Entries: entries})
}

// Run sends the previous day's reports now (a restart or a late node
// catches up; markers keep it to one per domain) and then every day
// shortly after midnight UTC, after a random delay of up to Jitter. When
// some domains failed (a DNS error, say) it tries those again an hour
// later, until the day ends.
func (r *Reporter) Run(ctx context.Context) error {
	for {
		now := r.o.Now().UTC()
		yesterday := now.Truncate(24 * time.Hour).Add(-time.Second)
		sent, err := r.SendDay(ctx, yesterday, yesterday)
		if err != nil && ctx.Err() == nil {
			r.o.Logger.Warn().Err(err).Str("event", "tlsrpt").Msg("TLS-RPT reports of yesterday failed")
		}
		next := now.Truncate(24 * time.Hour).Add(24*time.Hour + jitter(r.o.Jitter))
		if retry := now.Add(retryFailedAfter); (err != nil || sent.Failed > 0) && retry.Before(next) {
			next = retry
		}
		t := time.NewTimer(next.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// retryFailedAfter is when Run tries failed domains of the day again.
const retryFailedAfter = time.Hour
