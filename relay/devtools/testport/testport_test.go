package testport

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// candidates makes pick return ps in turn (then the last one forever),
// restored at test end.
func candidates(t *testing.T, ps ...int) {
	old := pick
	t.Cleanup(func() { pick = old })
	i := 0
	pick = func() int {
		p := ps[min(i, len(ps)-1)]
		i++
		return p
	}
}

// freeNow is n distinct ports in the range that nothing holds at the
// moment (reserved together, then released).
func freeNow(t *testing.T, n int) []int {
	var ps []int
	var releases []func()
	for range n {
		p, release, err := Reserve()
		if err != nil {
			t.Fatal(err)
		}
		ps, releases = append(ps, p), append(releases, release)
	}
	for _, r := range releases {
		r()
	}
	return ps
}

func TestReserveSkipsHeldAndBusyPorts(t *testing.T) {
	ps := freeNow(t, 4)
	a, b, c, d := ps[0], ps[1], ps[2], ps[3]
	// b is held by "another process": the same lock on another open file.
	f, err := os.OpenFile(filepath.Join(Dir(), strconv.Itoa(b)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	// c has a listener of some program that does not use this package.
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", c))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	candidates(t, a, a, b, c, d)
	p1, release1, err := Reserve()
	if err != nil || p1 != a {
		t.Fatalf("first reservation %d, %v; want %d", p1, err, a)
	}
	p2, release2, err := Reserve()
	if err != nil || p2 != d {
		t.Fatalf("second reservation %d, %v; want %d (%d is held here, %d by another holder, %d is listened on)",
			p2, err, d, a, b, c)
	}
	// Held ports are free to bind for the server they were picked for.
	srv, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p1))
	if err != nil {
		t.Fatalf("binding the reserved port: %v", err)
	}
	srv.Close()

	release1()
	release1() // twice is harmless
	release2()
	candidates(t, a)
	p3, release3, err := Reserve()
	if err != nil || p3 != a {
		t.Fatalf("after release: %d, %v; want %d again", p3, err, a)
	}
	release3()
}

func TestReserveGivesUpWhenNothingIsFree(t *testing.T) {
	p := Port(t)
	candidates(t, p)
	if _, _, err := Reserve(); err == nil {
		t.Fatal("a held port was handed out twice")
	}
}

func TestPortsDistinct(t *testing.T) {
	ps := Ports(t, 50)
	seen := map[int]bool{}
	for _, p := range ps {
		if seen[p] || p < low || p >= high {
			t.Fatalf("port %d repeated or out of range in %v", p, ps)
		}
		seen[p] = true
	}
}
