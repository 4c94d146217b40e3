package submit

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/emersion/go-smtp"
)

// Memory for message data (issue 12, point 7).
//
// A message is held in memory exactly once while it is checked, signed and
// stored: it is read into one buffer that keeps headroom free in front of
// the data, and the fields submission adds (Received, Message-ID, Date) and
// the DKIM-Signature fields are written into that headroom, so the stored
// message is a sub-slice of the read buffer, not a copy. queue.Enqueue
// slices it into body chunks without copying. (Before: the read buffer, the
// message with the added fields, and the signed message — three copies.)
// Only a message that must be rewritten (bare LF normalised, long lines
// re-encoded) gets a second buffer.
//
// The buffer grows by doubling up to growLinearFrom (1 MiB, beyond which
// messages are rare); past that the data goes into blocks of that size that
// are joined into one buffer of the exact size at the end, so a large
// message is allocated about twice (not the 4-5 times of geometric growth)
// and over-allocated by nothing. While blocks are joined both are held and
// charged to the inflight budget, which is why max_inflight_bytes must be
// at least twice max_message_bytes. A SIZE= declared at MAIL sizes the
// buffer at once (exactly one allocation).
//
// Streaming chunks to JetStream while the data arrives was not done: the
// DKIM-Signature and Received fields belong in front of the first chunk but
// are known only at the end, and 250 may be sent only once every part is
// stored anyway, so holding the message once costs the same memory bound.
const (
	headroom       = 8 << 10 // Received + Message-ID + Date + a few DKIM-Signature fields
	readBufStart   = 16 << 10
	growLinearFrom = 1 << 20
)

// Buffers with room for up to 256 KiB of message are pooled in doubling
// classes, so that a stream of 100 KiB messages reuses its buffers instead
// of allocating one per message (a quarter of what the 100 KiB load
// allocated, docs/performance.md#pooled-spools); a buffer is charged to the
// budget at its class's size, at most twice what it holds. Larger ones are
// allocated per message and left to the GC.
var bufClasses = [...]int{readBufStart, 32 << 10, 64 << 10, 128 << 10, 256 << 10}

var bufPools [len(bufClasses)]sync.Pool

// bufClass is the smallest class with room for n octets of message, or -1.
func bufClass(n int) int {
	for i, c := range bufClasses {
		if n <= c {
			return i
		}
	}
	return -1
}

// getBuf returns an empty buffer of class i (headroom included in its
// capacity).
func getBuf(i int) []byte {
	if b, ok := bufPools[i].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, headroom+bufClasses[i])
}

// inflight bounds the message data all connections of this process hold in
// memory at once. It is per process on purpose: it protects this process's
// heap, which no other node shares (unlike rates and bans, which live in
// JetStream).
type inflight struct {
	max  int64
	used atomic.Int64
}

// fits reports whether n more bytes would fit now (a hint at MAIL; DATA
// takes its bytes with take).
func (b *inflight) fits(n int64) bool { return n <= 0 || b.used.Load()+n <= b.max }

// take charges n bytes, or reports false and charges nothing.
func (b *inflight) take(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *inflight) give(n int64) { b.used.Add(-n) }

// spool is one message's buffer: the message is buf[off:], with off octets
// of headroom in front. held is what it charged to the budget.
type spool struct {
	buf       []byte
	off       int
	held      int64
	blockHeld int64 // charged by blocks being filled (see readSpool)
	budget    *inflight
	pooled    bool // buf came from bufPools and goes back there
}

// readSpool reads the whole transfer, at most limit octets (go-smtp limits
// DATA and BDAT already; this bounds memory even if it did not). sizeHint
// is the SIZE= from MAIL (0: none). When the budget cannot hold the data,
// the buffer is released, the rest of the transfer is read and discarded
// and the error is errInflight (RFC 5321 §4.3.2: the reply follows the
// final "."). The caller must call release.
func readSpool(r io.Reader, budget *inflight, limit, sizeHint int64) (*spool, error) {
	sp := &spool{off: headroom, budget: budget}
	if sizeHint > readBufStart && sizeHint <= limit {
		if !sp.grow(int(sizeHint) + 2) { // a final CRLF may be added
			return sp, discard(r, errInflight)
		}
	} else {
		if !budget.take(headroom + readBufStart) {
			return sp, discard(r, errInflight)
		}
		sp.buf = getBuf(0)[:headroom]
		sp.held, sp.pooled = headroom+readBufStart, true
	}
	var blocks [][]byte // past growLinearFrom: filled blocks, joined at the end
	lr := io.LimitReader(r, limit+1)
	var total int64
	for {
		if len(sp.buf) == cap(sp.buf) {
			ok := true
			switch size := len(sp.buf) - headroom; {
			case blocks == nil && size < growLinearFrom:
				ok = sp.grow(min(2*size, int(limit)+2))
			default:
				blocks = append(blocks, sp.buf[headroom:])
				ok = sp.newBlock()
			}
			if !ok { // nothing stays charged while the rest is drained
				sp.releaseBlocks(blocks)
				sp.release()
				return sp, discard(r, errInflight)
			}
		}
		n, err := lr.Read(sp.buf[len(sp.buf):cap(sp.buf)])
		sp.buf = sp.buf[:len(sp.buf)+n]
		if total += int64(n); total > limit {
			sp.releaseBlocks(blocks)
			sp.release()
			return sp, discard(r, smtp.ErrDataTooLarge)
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) {
			sp.releaseBlocks(blocks)
			return sp, err
		}
		if !sp.join(blocks) {
			return sp, discard(r, errInflight)
		}
		return sp, nil
	}
}

// newBlock starts a new block of growLinearFrom octets (laid out like the
// first buffer, headroom included, so that the read loop treats every
// buffer alike); the filled one stays charged in blockHeld.
func (sp *spool) newBlock() bool {
	c := int64(headroom + growLinearFrom)
	if !sp.budget.take(c) {
		return false
	}
	sp.blockHeld += sp.held
	sp.held, sp.pooled = c, false
	sp.buf = make([]byte, headroom, headroom+growLinearFrom)
	return true
}

// join copies the filled blocks and the current buffer into one buffer of
// exactly the message's size (plus a CRLF normalize may add): a large
// message is copied once at the end instead of at every growth step.
func (sp *spool) join(blocks [][]byte) bool {
	if blocks == nil {
		return true
	}
	defer sp.releaseBlocks(blocks)
	n := len(sp.buf) - headroom
	for _, b := range blocks {
		n += len(b)
	}
	c := int64(headroom + n + 2)
	if !sp.budget.take(c) {
		sp.release()
		return false
	}
	nb := make([]byte, headroom, headroom+n+2)
	for _, b := range blocks {
		nb = append(nb, b...)
	}
	nb = append(nb, sp.buf[headroom:]...)
	sp.release()
	sp.buf, sp.held = nb, c
	return true
}

// releaseBlocks gives back what the filled blocks charged.
func (sp *spool) releaseBlocks([][]byte) {
	sp.budget.give(sp.blockHeld)
	sp.blockHeld = 0
}

// grow moves the data into a buffer with room for n octets of message
// (a pooled class's if one is large enough), charging it to the budget
// first; false when the budget has no room.
func (sp *spool) grow(n int) bool {
	class := bufClass(n)
	if class >= 0 {
		n = bufClasses[class]
	}
	c := int64(headroom + n)
	if !sp.budget.take(c) {
		return false
	}
	var nb []byte
	if class >= 0 {
		nb = getBuf(class)
	} else {
		nb = make([]byte, 0, headroom+n)
	}
	nb = nb[:max(len(sp.buf), headroom)]
	copy(nb, sp.buf)
	sp.release()
	sp.buf, sp.held, sp.pooled = nb, c, class >= 0
	return true
}

// release gives the buffer back (to its pool if it came from one) and its
// budget.
func (sp *spool) release() {
	if sp.pooled {
		if i := bufClass(cap(sp.buf) - headroom); i >= 0 && bufClasses[i] == cap(sp.buf)-headroom {
			b := sp.buf[:0]
			bufPools[i].Put(&b)
		}
	}
	sp.budget.give(sp.held)
	sp.buf, sp.held, sp.pooled = nil, 0, false
}

// message returns the data read (aliasing the buffer).
func (sp *spool) message() []byte { return sp.buf[sp.off:] }

// discard drains the rest of the transfer so that the reply follows the
// final ".", then returns err.
func discard(r io.Reader, err error) error {
	if _, derr := io.Copy(io.Discard, r); derr != nil && !errors.Is(err, smtp.ErrDataTooLarge) {
		return derr
	}
	return err
}

// framed is a message with free space in front: prepend writes there
// instead of copying the message (or copies once when it does not fit).
type framed struct {
	buf []byte
	off int
}

// frame returns msg ready for prepending: in place when msg is sp's
// message or a suffix of it (header fields removed in place, meta.go),
// else with fresh headroom.
func frame(sp *spool, msg []byte) framed {
	if sp != nil && len(msg) > 0 && sp.off > 0 && len(sp.buf)-len(msg) >= sp.off &&
		&msg[0] == &sp.buf[len(sp.buf)-len(msg)] {
		return framed{buf: sp.buf, off: len(sp.buf) - len(msg)}
	}
	nb := make([]byte, headroom+len(msg))
	copy(nb[headroom:], msg)
	return framed{buf: nb, off: headroom}
}

func (f *framed) prepend(b []byte) {
	if len(b) > f.off {
		nb := make([]byte, len(b)+len(f.buf)-f.off)
		copy(nb[len(b):], f.buf[f.off:])
		f.buf, f.off = nb, len(b)
	}
	f.off -= len(b)
	copy(f.buf[f.off:], b)
}

func (f *framed) bytes() []byte { return f.buf[f.off:] }
