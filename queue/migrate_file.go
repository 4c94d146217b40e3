package queue

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The export file (migrate.go) is a sequence of framed records after a
// magic line: kind byte, uvarint payload length, payload, CRC-32 (IEEE) of
// kind and payload. It opens with one info record, then per stream one
// stream record (its configuration, JSON) followed by that stream's
// message records, and ends with one end record carrying the totals; a
// file without its end record is incomplete and never imported.
const (
	exportMagic = "jetrelay-migrate 1\n"

	recInfo   = 'I'
	recStream = 'S'
	recMsg    = 'M'
	recEnd    = 'E'

	// maxRecord bounds one record (a message is at most the embedded
	// max_payload, 8 MiB, plus headers); a larger length is corruption.
	maxRecord = 64 << 20
)

// exportInfo is the info record: the export's id (part of every imported
// message's Nats-Msg-Id) and when it was made.
type exportInfo struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Source  string    `json:"source"`
}

// exportEnd is the end record.
type exportEnd struct {
	Streams  int `json:"streams"`
	Messages int `json:"messages"`
}

// exportMsg is one stored message as exported.
type exportMsg struct {
	Seq     uint64
	Time    time.Time
	Subject string
	Header  nats.Header
	Data    []byte
}

// recordWriter writes framed records.
type recordWriter struct {
	w   *bufio.Writer
	buf []byte
}

func newRecordWriter(w io.Writer) (*recordWriter, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.WriteString(exportMagic); err != nil {
		return nil, err
	}
	return &recordWriter{w: bw}, nil
}

func (rw *recordWriter) write(kind byte, payload []byte) error {
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = kind
	n := 1 + binary.PutUvarint(hdr[1:], uint64(len(payload)))
	crc := crc32.NewIEEE()
	crc.Write(hdr[:1])
	crc.Write(payload)
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc.Sum32())
	for _, b := range [][]byte{hdr[:n], payload, sum[:]} {
		if _, err := rw.w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

func (rw *recordWriter) writeJSON(kind byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return rw.write(kind, b)
}

// writeMsg encodes m: uvarint seq, varint unix nanoseconds, subject,
// headers (JSON), data — each variable part length-prefixed.
func (rw *recordWriter) writeMsg(m exportMsg) error {
	hdr, err := json.Marshal(m.Header)
	if err != nil {
		return err
	}
	b := rw.buf[:0]
	b = binary.AppendUvarint(b, m.Seq)
	b = binary.AppendVarint(b, m.Time.UnixNano())
	b = binary.AppendUvarint(b, uint64(len(m.Subject)))
	b = append(b, m.Subject...)
	b = binary.AppendUvarint(b, uint64(len(hdr)))
	b = append(b, hdr...)
	b = append(b, m.Data...)
	rw.buf = b
	return rw.write(recMsg, b)
}

func (rw *recordWriter) flush() error { return rw.w.Flush() }

// recordReader reads framed records back, checking each one's CRC.
type recordReader struct {
	r   *bufio.Reader
	buf []byte
}

var errExportCorrupt = errors.New("queue: migration export file is corrupt")

func newRecordReader(f *os.File) (*recordReader, error) {
	br := bufio.NewReaderSize(f, 1<<20)
	magic := make([]byte, len(exportMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != exportMagic {
		return nil, fmt.Errorf("%w: bad magic", errExportCorrupt)
	}
	return &recordReader{r: br}, nil
}

// next returns the next record; the payload is valid until the next call.
func (rr *recordReader) next() (byte, []byte, error) {
	kind, err := rr.r.ReadByte()
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %v", errExportCorrupt, err)
	}
	n, err := binary.ReadUvarint(rr.r)
	if err != nil || n > maxRecord {
		return 0, nil, fmt.Errorf("%w: record length", errExportCorrupt)
	}
	if uint64(cap(rr.buf)) < n+4 {
		rr.buf = make([]byte, n+4)
	}
	b := rr.buf[:n+4]
	if _, err := io.ReadFull(rr.r, b); err != nil {
		return 0, nil, fmt.Errorf("%w: %v", errExportCorrupt, err)
	}
	crc := crc32.NewIEEE()
	crc.Write([]byte{kind})
	crc.Write(b[:n])
	if crc.Sum32() != binary.BigEndian.Uint32(b[n:]) {
		return 0, nil, fmt.Errorf("%w: checksum", errExportCorrupt)
	}
	return kind, b[:n], nil
}

// decodeMsg parses a message record; Data aliases payload.
func decodeMsg(payload []byte) (exportMsg, error) {
	var m exportMsg
	seq, n := binary.Uvarint(payload)
	if n <= 0 {
		return m, errExportCorrupt
	}
	m.Seq, payload = seq, payload[n:]
	ts, n := binary.Varint(payload)
	if n <= 0 {
		return m, errExportCorrupt
	}
	m.Time, payload = time.Unix(0, ts), payload[n:]
	subj, payload, ok := cutLen(payload)
	if !ok {
		return m, errExportCorrupt
	}
	m.Subject = string(subj)
	hdr, payload, ok := cutLen(payload)
	if !ok {
		return m, errExportCorrupt
	}
	if err := json.Unmarshal(hdr, &m.Header); err != nil {
		return m, fmt.Errorf("%w: header: %v", errExportCorrupt, err)
	}
	m.Data = payload
	return m, nil
}

// cutLen splits a uvarint-length-prefixed field off b.
func cutLen(b []byte) (field, rest []byte, ok bool) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return nil, nil, false
	}
	return b[n : n+int(l)], b[n+int(l):], true
}

// decodeStream parses a stream record.
func decodeStream(payload []byte) (jetstream.StreamConfig, error) {
	var cfg jetstream.StreamConfig
	if err := json.Unmarshal(payload, &cfg); err != nil {
		return cfg, fmt.Errorf("%w: stream: %v", errExportCorrupt, err)
	}
	return cfg, nil
}
