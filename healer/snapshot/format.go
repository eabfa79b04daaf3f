package snapshot

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
)

// The plaintext of a snapshot is a record stream:
//
//	magic   "HEALSNAP" 0x01
//	record* 'P' uvarint(len key) key uvarint(len value) value
//	end     'E' uvarint(number of records)
//
// Records come in ascending key order (each key once): the stream is one
// point-in-time view of the metastore.
const streamMagic = "HEALSNAP\x01"

const (
	tagPut = 'P'
	tagEnd = 'E'
)

// maxRecordLen bounds one key or value when reading, so a damaged stream
// cannot make the reader allocate gigabytes. Metastore values are at most
// a few MiB (an object record lists its stripes).
const maxRecordLen = 256 << 20

// ErrCorrupt marks a snapshot that cannot be read back: bad shards beyond
// what erasure coding repairs, a broken record stream, or a checksum that
// does not match the pointer's.
var ErrCorrupt = errors.New("snapshot corrupt")

// Volatile reports whether a metastore key holds a value that changes on
// its own while the data does not: backend records (every probe updates
// them), the snapshot status, scrub progress. A change to such a value
// alone does not make a snapshot due until MaxAge has passed; keys
// appearing or vanishing always count.
func Volatile(key []byte) bool {
	for _, p := range volatilePrefixes {
		if bytes.HasPrefix(key, []byte(p)) {
			return true
		}
	}
	return false
}

var volatilePrefixes = []string{"backend/", "meta/snapshot/", "meta/healer/scrub/"}

// Hashes identify the content of a record stream.
type Hashes struct {
	// Full is the SHA-256 of the whole stream.
	Full string
	// Significant is a SHA-256 over the records with the values of
	// Volatile keys left out.
	Significant string
}

// streamWriter writes a record stream and hashes it on the way.
type streamWriter struct {
	w       *bufio.Writer
	full    hash.Hash
	sig     hash.Hash
	records int64
	size    int64
	scratch [2 * binary.MaxVarintLen64]byte
}

func newStreamWriter(w io.Writer) (*streamWriter, error) {
	sw := &streamWriter{w: bufio.NewWriterSize(w, 256<<10), full: sha256.New(), sig: sha256.New()}
	if err := sw.raw([]byte(streamMagic)); err != nil {
		return nil, err
	}
	sw.sig.Write([]byte(streamMagic))
	return sw, nil
}

func (sw *streamWriter) raw(b []byte) error {
	sw.full.Write(b)
	sw.size += int64(len(b))
	_, err := sw.w.Write(b)
	return err
}

func (sw *streamWriter) uvarint(v uint64) []byte {
	return binary.AppendUvarint(sw.scratch[:0], v)
}

// put appends a put record.
func (sw *streamWriter) put(k, v []byte) error {
	head := append([]byte{tagPut}, sw.uvarint(uint64(len(k)))...)
	if err := sw.raw(head); err != nil {
		return err
	}
	if err := sw.raw(k); err != nil {
		return err
	}
	vl := sw.uvarint(uint64(len(v)))
	if err := sw.raw(vl); err != nil {
		return err
	}
	if err := sw.raw(v); err != nil {
		return err
	}
	sw.sig.Write(head)
	sw.sig.Write(k)
	if Volatile(k) {
		sw.sig.Write([]byte{0})
	} else {
		sw.sig.Write([]byte{1})
		sw.sig.Write(vl)
		sw.sig.Write(v)
	}
	sw.records++
	return nil
}

// finish writes the end record and flushes.
func (sw *streamWriter) finish() (Hashes, error) {
	end := append([]byte{tagEnd}, sw.uvarint(uint64(sw.records))...)
	if err := sw.raw(end); err != nil {
		return Hashes{}, err
	}
	sw.sig.Write(end)
	if err := sw.w.Flush(); err != nil {
		return Hashes{}, err
	}
	return Hashes{Full: hex.EncodeToString(sw.full.Sum(nil)), Significant: hex.EncodeToString(sw.sig.Sum(nil))}, nil
}

// Record is one entry of a record stream.
type Record struct {
	Key   []byte
	Value []byte
}

// streamReader reads a record stream, hashing what it reads.
type streamReader struct {
	r       *bufio.Reader
	full    hash.Hash
	records int64
	last    []byte
	done    bool
}

func newStreamReader(r io.Reader) (*streamReader, error) {
	sr := &streamReader{r: bufio.NewReaderSize(r, 256<<10), full: sha256.New()}
	magic := make([]byte, len(streamMagic))
	if _, err := io.ReadFull(sr.r, magic); err != nil {
		return nil, fmt.Errorf("%w: stream header: %w", ErrCorrupt, err)
	}
	if string(magic) != streamMagic {
		return nil, fmt.Errorf("%w: not a healstore snapshot stream (or a newer format)", ErrCorrupt)
	}
	sr.full.Write(magic)
	return sr, nil
}

func (sr *streamReader) byte() (byte, error) {
	c, err := sr.r.ReadByte()
	if err != nil {
		return 0, err
	}
	sr.full.Write([]byte{c})
	return c, nil
}

func (sr *streamReader) uvarint() (uint64, error) {
	var buf [binary.MaxVarintLen64]byte
	for i := range buf {
		c, err := sr.byte()
		if err != nil {
			return 0, err
		}
		buf[i] = c
		if c < 0x80 {
			v, n := binary.Uvarint(buf[:i+1])
			if n <= 0 {
				return 0, errors.New("bad varint")
			}
			return v, nil
		}
	}
	return 0, errors.New("varint too long")
}

func (sr *streamReader) bytes() ([]byte, error) {
	n, err := sr.uvarint()
	if err != nil {
		return nil, err
	}
	if n > maxRecordLen {
		return nil, fmt.Errorf("record of %d bytes", n)
	}
	// Grow b as the data arrives instead of allocating n bytes up front:
	// a damaged or hostile length must not cost up to maxRecordLen before
	// the stream turns out to be shorter.
	const step = 64 << 10
	b := make([]byte, 0, min(n, step))
	for uint64(len(b)) < n {
		m := int(min(n-uint64(len(b)), step))
		b = slices.Grow(b, m)
		if _, err := io.ReadFull(sr.r, b[len(b):len(b)+m]); err != nil {
			return nil, err
		}
		b = b[:len(b)+m]
	}
	sr.full.Write(b)
	return b, nil
}

// next returns the next record, or io.EOF after the end record (which must
// be followed by nothing).
func (sr *streamReader) next() (Record, error) {
	if sr.done {
		return Record{}, io.EOF
	}
	bad := func(err error) (Record, error) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Record{}, fmt.Errorf("%w: record %d: %w", ErrCorrupt, sr.records+1, err)
	}
	tag, err := sr.byte()
	if err != nil {
		return bad(err)
	}
	switch tag {
	case tagPut:
		k, err := sr.bytes()
		if err != nil {
			return bad(err)
		}
		if len(k) == 0 {
			return bad(errors.New("empty key"))
		}
		if sr.last != nil && bytes.Compare(k, sr.last) <= 0 {
			return bad(fmt.Errorf("key %q does not follow %q", k, sr.last))
		}
		v, err := sr.bytes()
		if err != nil {
			return bad(err)
		}
		sr.last = k
		sr.records++
		return Record{Key: k, Value: v}, nil
	case tagEnd:
		n, err := sr.uvarint()
		if err != nil {
			return bad(err)
		}
		if int64(n) != sr.records {
			return bad(fmt.Errorf("end record counts %d records, the stream held %d", n, sr.records))
		}
		if _, err := sr.r.ReadByte(); !errors.Is(err, io.EOF) {
			return bad(errors.New("data after the end record"))
		}
		sr.done = true
		return Record{}, io.EOF
	default:
		return bad(fmt.Errorf("unknown record tag 0x%02x", tag))
	}
}

// sum is the SHA-256 of everything read so far.
func (sr *streamReader) sum() string { return hex.EncodeToString(sr.full.Sum(nil)) }
