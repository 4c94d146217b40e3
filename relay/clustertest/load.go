package clustertest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/time/rate"
)

// clientTimeout bounds every wait of the load's SMTP clients: far above
// what the relay promises, so that a hang is measured, not cut short.
const clientTimeout = 60 * time.Second

// Result is one submission attempt, with every reply it waited for.
type Result struct {
	Tag     string // Message-ID without <>, unique per attempt
	Node    string
	Code    int    // the reply that ended it: 250 after DATA, or the refusal; 0 = no reply (connection)
	Enh     string // its enhanced status code, "" when none
	Stage   string // conn, mail, rcpt, data (354), dot (end of data)
	Err     string // the refusal or connection error
	Start   time.Time
	DotAt   time.Time     // end of data sent (zero when it was not reached)
	End     time.Time     // the last reply (or error)
	MaxWait time.Duration // longest single reply wait
	// Exempt: the node was stopped or killed by the harness meanwhile.
	Exempt bool
}

// Accepted reports whether the relay answered 250 after DATA.
func (r Result) Accepted() bool { return r.Stage == "dot" && r.Code == 250 }

// Load sends messages at a bounded rate from Workers clients spread over
// the running nodes, keeping every Result.
type Load struct {
	c       *Cluster
	run     string
	workers int
	lim     *rate.Limiter
	seq     atomic.Int64

	mu      sync.Mutex
	results []Result
	// pinned, when set, sends only through these nodes.
	pinned []*Node

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartLoad starts workers sending perSecond messages in total.
func (c *Cluster) StartLoad(workers int, perSecond float64) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{c: c, run: randomHex(4), workers: workers, lim: rate.NewLimiter(rate.Limit(perSecond), 1), cancel: cancel}
	for i := 0; i < workers; i++ {
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.worker(ctx, i) }()
	}
	return l
}

// Stop ends the load and waits for the workers (each ends its current
// transaction first).
func (l *Load) Stop() {
	l.cancel()
	l.wg.Wait()
}

// Pin sends only through these nodes from now on (nil: all running).
func (l *Load) Pin(nodes ...*Node) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pinned = nodes
}

// Results returns a copy of every result so far.
func (l *Load) Results() []Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Result(nil), l.results...)
}

// AcceptedSince counts 250s whose end of data was sent after t.
func (l *Load) AcceptedSince(t time.Time, via *Node) int {
	n := 0
	for _, r := range l.Results() {
		if r.Accepted() && r.DotAt.After(t) && (via == nil || r.Node == via.Name) {
			n++
		}
	}
	return n
}

func (l *Load) add(r Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.results = append(l.results, r)
}

// target picks worker i's node: its home node when that runs, else the
// next running one.
func (l *Load) target(i int) *Node {
	l.mu.Lock()
	nodes := l.pinned
	l.mu.Unlock()
	if nodes == nil {
		nodes = l.c.Nodes
	}
	for k := 0; k < len(nodes); k++ {
		if n := nodes[(i+k)%len(nodes)]; n.Pid() != 0 {
			return n
		}
	}
	return nil
}

func (l *Load) worker(ctx context.Context, i int) {
	var cl *smtp.Client
	var at *Node
	defer func() {
		if cl != nil {
			cl.Close()
		}
	}()
	for ctx.Err() == nil {
		if err := l.lim.Wait(ctx); err != nil {
			return
		}
		n := l.target(i)
		if n == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if cl != nil && at != n {
			cl.Close()
			cl = nil
		}
		at = n
		var r Result
		cl, r = l.send(cl, n)
		l.add(r)
	}
}

// send submits one message through n over cl (dialling when nil); it
// returns the client to reuse (nil after any failure).
func (l *Load) send(cl *smtp.Client, n *Node) (*smtp.Client, Result) {
	tag := fmt.Sprintf("%s-%d@fault.test", l.run, l.seq.Add(1))
	r := Result{Tag: tag, Node: n.Name, Start: time.Now()}
	downs := n.Downs()
	// step runs one command, timing its reply wait.
	step := func(stage string, f func() error) error {
		t := time.Now()
		err := f()
		r.MaxWait = max(r.MaxWait, time.Since(t))
		if err != nil {
			r.Stage = stage
		}
		return err
	}
	var err error
	if cl == nil {
		err = step("conn", func() (e error) { cl, e = dial(n.SubmitAddr, l.c.Opts.User, l.c.Opts.Pass); return e })
	}
	var w *smtp.DataCommand
	var resp *smtp.DataResponse
	if err == nil {
		err = step("mail", func() error { return cl.Mail("fault@example.com", nil) })
	}
	if err == nil {
		err = step("rcpt", func() error { return cl.Rcpt("rcpt@example.net", nil) })
	}
	if err == nil {
		err = step("data", func() (e error) { w, e = cl.Data(); return e })
	}
	if err == nil {
		err = step("dot", func() (e error) {
			if _, e = w.Write(message(tag)); e != nil {
				return e
			}
			r.DotAt = time.Now()
			resp, e = w.CloseWithResponse()
			return e
		})
	}
	r.End = time.Now()
	r.Exempt = n.Downs() != downs || (err != nil && n.Pid() == 0)
	if err != nil {
		r.Err = err.Error()
		r.Code, r.Enh = replyCode(err)
		if cl != nil {
			cl.Close()
		}
		return nil, r
	}
	r.Stage, r.Code, r.Enh, r.Err = "dot", 250, "2.0.0", resp.StatusText
	return cl, r
}

// replyCode returns the SMTP code and enhanced code of err (0 when it is
// not an SMTP reply).
func replyCode(err error) (int, string) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return 0, ""
	}
	if se.EnhancedCode == smtp.NoEnhancedCode {
		return se.Code, ""
	}
	return se.Code, fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
}

// dial opens an authenticated STARTTLS session, every step bounded.
func dial(addr, user, pass string) (*smtp.Client, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(clientTimeout))
	cl, err := smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true}) // loopback test relay, self-signed
	if err != nil {
		conn.Close()
		return nil, err
	}
	cl.CommandTimeout, cl.SubmissionTimeout = clientTimeout, clientTimeout
	if err := cl.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

// message is a small RFC 5322 message whose Message-ID is tag.
func message(tag string) []byte {
	return []byte("From: fault@example.com\r\nTo: rcpt@example.net\r\nSubject: cluster fault test\r\n" +
		"Date: " + time.Now().UTC().Format(time.RFC1123Z) + "\r\nMessage-ID: <" + tag + ">\r\n\r\n" +
		strings.Repeat("The quick brown fox jumps over the lazy dog.\r\n", 20))
}
