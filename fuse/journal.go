package fuse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// The journal records, for the write-back cache, which blocks hold data that
// is not yet in healstore and which file sizes are not yet in the metastore.
// A mount process that dies (SIGKILL, panic, OOM) leaves the cache files and
// the journal in the page cache; the next mount on the same boot replays
// them. Records are appended with plain write(2) and never fsynced: the
// journal only has to survive the death of the process, not of the machine.
// After a machine crash the next mount sees a different boot id and drops
// the cache, because cache files that were never fsynced cannot be trusted
// then (data that was fsynced through the mount is in healstore already).
//
// A record is 32 bytes, little endian:
//
//	0  u8   kind
//	1  3    zero
//	4  u32  CRC-32C of bytes 8..31 and the kind byte
//	8  u64  inode
//	16 u64  a (block index, or size)
//	24 u64  b (generation)
//
// A torn or corrupt record ends the replay: everything before it is used.

const (
	recDirty    = 1 // block a of inode holds cached data of generation b not yet uploaded
	recClean    = 2 // generation b of block a is in healstore
	recSize     = 3 // the inode's size is a, not yet committed to the metastore
	recSizeSync = 4 // the inode's size is committed
	recForget   = 5 // the inode is gone: drop everything recorded for it
	recDrop     = 6 // block a was dropped from the cache (truncated away)

	recLen = 32
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type jrec struct {
	kind uint8
	ino  uint64
	a, b uint64
}

func (r jrec) encode(buf []byte) {
	clear(buf[:recLen])
	buf[0] = r.kind
	binary.LittleEndian.PutUint64(buf[8:], r.ino)
	binary.LittleEndian.PutUint64(buf[16:], r.a)
	binary.LittleEndian.PutUint64(buf[24:], r.b)
	binary.LittleEndian.PutUint32(buf[4:], recCRC(buf))
}

func recCRC(buf []byte) uint32 {
	c := crc32.Update(0, crcTable, buf[8:recLen])
	return crc32.Update(c, crcTable, buf[:1])
}

// decodeRec decodes one recLen-byte record. The CRC does not cover bytes
// 1..3, so they are checked to be zero as encode writes them.
func decodeRec(buf []byte) (jrec, bool) {
	if binary.LittleEndian.Uint32(buf[4:]) != recCRC(buf) || buf[0] < recDirty || buf[0] > recDrop ||
		buf[1]|buf[2]|buf[3] != 0 {
		return jrec{}, false
	}
	return jrec{
		kind: buf[0],
		ino:  binary.LittleEndian.Uint64(buf[8:]),
		a:    binary.LittleEndian.Uint64(buf[16:]),
		b:    binary.LittleEndian.Uint64(buf[24:]),
	}, true
}

// blockKey names one block of one inode.
type blockKey struct {
	ino uint64
	idx uint64
}

// journalState is what a journal says is pending: the state the mirror
// keeps while running and what replay reconstructs.
type journalState struct {
	// dirty maps a block to the newest generation written to the cache
	// that is not yet known to be uploaded.
	dirty map[blockKey]uint64
	// sizes maps an inode to a size not yet committed to the metastore.
	sizes map[uint64]uint64
}

func newJournalState() *journalState {
	return &journalState{dirty: map[blockKey]uint64{}, sizes: map[uint64]uint64{}}
}

func (s *journalState) apply(r jrec) {
	k := blockKey{r.ino, r.a}
	switch r.kind {
	case recDirty:
		if g, ok := s.dirty[k]; !ok || r.b > g {
			s.dirty[k] = r.b
		}
	case recClean:
		if g, ok := s.dirty[k]; ok && r.b >= g {
			delete(s.dirty, k)
		}
	case recDrop:
		delete(s.dirty, k)
	case recSize:
		s.sizes[r.ino] = r.a
	case recSizeSync:
		delete(s.sizes, r.ino)
	case recForget:
		delete(s.sizes, r.ino)
		for k := range s.dirty {
			if k.ino == r.ino {
				delete(s.dirty, k)
			}
		}
	}
}

// records returns the minimal record list that reproduces s, in a stable
// order.
func (s *journalState) records() []jrec {
	var out []jrec
	for k, g := range s.dirty {
		out = append(out, jrec{kind: recDirty, ino: k.ino, a: k.idx, b: g})
	}
	for ino, sz := range s.sizes {
		out = append(out, jrec{kind: recSize, ino: ino, a: sz})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.ino != b.ino {
			return a.ino < b.ino
		}
		if a.kind != b.kind {
			return a.kind < b.kind
		}
		return a.a < b.a
	})
	return out
}

// journal is the append-only record file plus an in-memory mirror of what
// it says, so it can be compacted without reading it back.
type journal struct {
	path string

	mu      sync.Mutex
	f       *os.File
	size    int64
	mirror  *journalState
	buf     [recLen]byte
	compact int64 // rewrite when the file grows past this
	err     error // write error, until a rewrite succeeds
	retryAt time.Time
}

// readJournal parses the journal at path; a missing file is an empty
// journal. It stops at the first bad record.
func readJournal(path string) (*journalState, int, error) {
	st := newJournalState()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open journal: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 64*recLen)
	n := 0
	for {
		m, err := io.ReadFull(f, buf)
		for off := 0; off+recLen <= m; off += recLen {
			r, ok := decodeRec(buf[off : off+recLen])
			if !ok {
				return st, n, nil
			}
			st.apply(r)
			n++
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return st, n, nil
		}
		if err != nil {
			return nil, n, fmt.Errorf("read journal: %w", err)
		}
	}
}

// openJournal starts a fresh journal file holding exactly st (the replayed
// state), replacing whatever was there.
func openJournal(dir string, st *journalState) (*journal, error) {
	j := &journal{path: filepath.Join(dir, "journal"), mirror: st, compact: 16 << 20}
	if err := j.rewriteLocked(); err != nil {
		return nil, err
	}
	return j, nil
}

// rewriteLocked writes the mirror to a new file and renames it over the
// journal. The rename is atomic, so a crash leaves the old or new journal.
func (j *journal) rewriteLocked() error {
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	recs := j.mirror.records()
	out := make([]byte, len(recs)*recLen)
	for i, r := range recs {
		r.encode(out[i*recLen:])
	}
	if _, err := f.Write(out); err != nil {
		f.Close()
		return fmt.Errorf("journal: %w", err)
	}
	if err := os.Rename(tmp, j.path); err != nil {
		f.Close()
		return fmt.Errorf("journal: %w", err)
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f = f
	j.size = int64(len(out))
	if j.compact < 4*j.size {
		j.compact = 4 * j.size
	}
	return nil
}

// append writes one record. A failed write is remembered and returned by
// later calls: the file then misses records, and a replay of it would
// bring back what they superseded (a size since committed and changed).
// The mirror keeps up meanwhile, and the file is rewritten from it (at
// most once a second, and at close) until that succeeds, which ends the
// failure.
func (j *journal) append(r jrec) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.mirror.apply(r)
	if j.err != nil {
		if time.Now().Before(j.retryAt) {
			return j.err
		}
		if err := j.rewriteLocked(); err != nil {
			j.retryAt = time.Now().Add(time.Second)
			return j.err
		}
		j.err = nil
		return nil
	}
	r.encode(j.buf[:])
	if _, err := j.f.Write(j.buf[:]); err != nil {
		j.err = fmt.Errorf("journal write: %w", err)
		j.retryAt = time.Now().Add(time.Second)
		return j.err
	}
	j.size += recLen
	if j.size > j.compact {
		if err := j.rewriteLocked(); err != nil {
			j.err = err
			j.retryAt = time.Now().Add(time.Second)
			return err
		}
	}
	return nil
}

func (j *journal) dirty(ino, idx, gen uint64) error {
	return j.append(jrec{kind: recDirty, ino: ino, a: idx, b: gen})
}
func (j *journal) clean(ino, idx, gen uint64) error {
	return j.append(jrec{kind: recClean, ino: ino, a: idx, b: gen})
}
func (j *journal) drop(ino, idx uint64) error {
	return j.append(jrec{kind: recDrop, ino: ino, a: idx})
}
func (j *journal) setSize(ino, size uint64) error {
	return j.append(jrec{kind: recSize, ino: ino, a: size})
}
func (j *journal) sizeSynced(ino uint64) error {
	return j.append(jrec{kind: recSizeSync, ino: ino})
}
func (j *journal) forget(ino uint64) error {
	return j.append(jrec{kind: recForget, ino: ino})
}

// pending reports how many blocks and sizes the journal still holds.
func (j *journal) pending() (blocks, sizes int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.mirror.dirty), len(j.mirror.sizes)
}

// close compacts the journal (to an empty file after a clean flush) and
// closes it.
func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	// The rewrite also repairs a file that missed records.
	err := j.rewriteLocked()
	cerr := j.f.Close()
	j.f = nil
	if err == nil {
		err = cerr
	}
	return err
}
