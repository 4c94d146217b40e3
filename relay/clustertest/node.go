package clustertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Node is one `jetrelay serve` process with a fixed config and data_dir;
// it can be started again after a stop or kill, on the same ports.
type Node struct {
	Name       string // nats.server_name
	Dir        string // holds jetrelay.yaml, data/, node.log
	ConfigPath string
	SubmitAddr string // STARTTLS submission
	AdminAddr  string // /readyz, /metrics
	ClientAddr string // embedded NATS client port ("" with external NATS)
	RouteAddr  string // embedded NATS route port ("" with external NATS)

	bin   string
	args  []string     // default: serve --config ConfigPath
	downs atomic.Int64 // stops and kills so far

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Downs counts the stops and kills of this node so far: a reply wait that
// spans a change was cut short by the test, not by the relay.
func (n *Node) Downs() int64 { return n.downs.Load() }

// Start starts the process (it must not be running); output is appended
// to Dir/node.log.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("%s is already running", n.Name)
	}
	logf, err := os.OpenFile(filepath.Join(n.Dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	args := n.args
	if args == nil {
		args = []string{"serve", "--config", n.ConfigPath}
	}
	cmd := exec.Command(n.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the harness
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	n.cmd, n.exited = cmd, exited
	return nil
}

// Pid returns the running process's id, 0 when it is not running.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	select {
	case <-n.exited:
		return 0
	default:
		return n.cmd.Process.Pid
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (n *Node) Kill() error { return n.signal(syscall.SIGKILL, 0) }

// Stop sends SIGTERM and waits up to grace for a graceful exit, then kills.
func (n *Node) Stop(grace time.Duration) error { return n.signal(syscall.SIGTERM, grace) }

func (n *Node) signal(sig syscall.Signal, grace time.Duration) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil
	}
	n.downs.Add(1)
	err := n.cmd.Process.Signal(sig)
	if sig != syscall.SIGKILL {
		select {
		case <-n.exited:
		case <-time.After(grace):
			err = fmt.Errorf("%s did not exit within %s of %s; killed", n.Name, grace, sig)
			_ = n.cmd.Process.Kill()
		}
	}
	<-n.exited
	n.cmd = nil
	if errors.Is(err, os.ErrProcessDone) {
		err = nil
	}
	return err
}

// Exited reports whether the process ended on its own (it was started and
// nobody stopped it).
func (n *Node) Exited() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return true
	default:
		return false
	}
}

// Ready returns the HTTP status of GET /readyz (0 when it cannot be asked).
func (n *Node) Ready(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.AdminAddr+"/readyz", nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode
}

// LogTail returns the last max bytes of the node's log.
func (n *Node) LogTail(max int64) string {
	f, err := os.Open(filepath.Join(n.Dir, "node.log"))
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, max))
	return string(b)
}

// LogProblems returns up to max lines of the node's log at level warn or
// error (nats-server's own lines left out), the last ones.
func (n *Node) LogProblems(max int) string {
	b, err := os.ReadFile(filepath.Join(n.Dir, "node.log"))
	if err != nil {
		return ""
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if (strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"level":"error"`)) &&
			!strings.Contains(l, `"event":"nats_server"`) {
			out = append(out, l)
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return strings.Join(out, "\n")
}
