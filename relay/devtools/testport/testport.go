// Package testport hands tests and developer tools loopback TCP ports for
// servers whose addresses must be known before they start: the routes of
// a NATS cluster name every node's port, a config file names the
// listener a node will open, a node restarts on the port it had.
//
// Picking a port by listening on 127.0.0.1:0 and closing the listener is
// not safe for that: the port comes from the kernel's ephemeral range, so
// the next :0 listener or outgoing connection — in this process, or in
// another test binary `go test ./...` runs at the same time — can take it
// before the server binds it, and a cluster route can then reach another
// test's server. (CI saw both: a node that never joined, a route refused
// for a foreign secret.) A reservation here is
//
//   - below the ephemeral range (net.ipv4.ip_local_port_range starts at
//     32768 by default; ports come from 20000–31999), so neither :0
//     listeners nor outgoing connections are handed it by the kernel;
//   - held with an exclusive flock(2) on a file named after the port in a
//     shared directory, so no other process using this package picks it
//     while it is held (the kernel drops the lock when the process exits,
//     crashed or not: nothing stale is left);
//   - bound once before it is handed out, so a port some other program
//     listens on is skipped.
package testport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

const (
	low  = 20000
	high = 32000 // exclusive
	// tries bounds the search; with a few hundred ports held at once a
	// random pick is free almost always.
	tries = 2000
)

var (
	mu   sync.Mutex
	held = map[int]*os.File{} // this process's reservations
	// pick is the next candidate port (a seam for the package's test).
	pick = func() int { return low + rand.IntN(high-low) }
)

// Dir is where the lock files live (shared by every process on the host).
func Dir() string { return filepath.Join(os.TempDir(), "jetrelay-testports") }

// Reserve finds a free loopback port and holds it until release is
// called (or the process ends).
func Reserve() (port int, release func(), err error) {
	if err := os.MkdirAll(Dir(), 0o777); err != nil {
		return 0, nil, err
	}
	// Shared by every user's test runs, like the temp dir itself (best
	// effort: it fails when another user created it, who did the same).
	_ = os.Chmod(Dir(), 0o777|os.ModeSticky)
	for range tries {
		p := pick()
		if f, ok := tryReserve(p); ok {
			return p, func() { releasePort(p, f) }, nil
		}
	}
	return 0, nil, errors.New("testport: no free loopback port found")
}

func tryReserve(p int) (*os.File, bool) {
	mu.Lock()
	defer mu.Unlock()
	if held[p] != nil {
		return nil, false
	}
	// Read-only is enough for flock, and lets another user lock a file
	// this one created.
	f, err := os.OpenFile(filepath.Join(Dir(), strconv.Itoa(p)), os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		f.Close() // closing drops the lock
		return nil, false
	}
	l.Close()
	held[p] = f
	return f, true
}

func releasePort(p int, f *os.File) {
	mu.Lock()
	defer mu.Unlock()
	if held[p] == f {
		delete(held, p)
		f.Close()
	}
}

// Port reserves a port for the rest of the test (released at cleanup,
// after the cleanups registered later — the servers on it — have run).
func Port(t testing.TB) int {
	t.Helper()
	p, release, err := Reserve()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return p
}

// Ports is n distinct ports, as Port.
func Ports(t testing.TB, n int) []int {
	t.Helper()
	ps := make([]int, n)
	for i := range ps {
		ps[i] = Port(t)
	}
	return ps
}

// Addr is "127.0.0.1:<Port(t)>".
func Addr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", Port(t))
}
