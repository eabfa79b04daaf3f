package local

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/healstore/healstore/backends"
	"golang.org/x/sys/unix"
)

// The last instance to close a backend leaves its index in packs/index,
// so the next Open reads one file instead of one header per value (20,000
// values took 2.3-3.3 s to index from cold packs on the test VM).
//
// Every instance holds a shared flock on packs/lock while it is open. At
// Close, an instance lets go of it and writes the index only if it then
// gets the lock exclusively (no other instance is open), after reading
// what other instances appended while it was open and dropping the
// records they punched (their space is a hole now: one lseek each). Open
// takes the shared lock (waiting for an index being written), and trusts
// the index only if every pack it names is there with the size it
// recorded, no other pack is, and nobody appends to any of them. The file
// stays while nothing changes: the first change by any instance (an
// append, a punch, a pack removed) removes it durably first (touch), so
// an index never describes packs that changed after it, a crash after a
// change leaves none, and a session that only reads leaves it in place.
//
// Layout (integers little-endian):
//
//	magic "HSPIDX01"
//	uint32 packs, then per pack: uint32 id, int64 size
//	uint64 the last sequence number given
//	uint32 records, then per record: uint16 key length, key, uint32 pack
//	id, int64 offset, uint32 value length, uint32 value CRC-32C, uint64
//	sequence number
//	uint32 CRC-32C of everything before it
const (
	indexName  = "index"
	indexMagic = "HSPIDX01"
	lockName   = "lock"
)

// lockShared opens packs/lock and takes its shared lock, waiting at most
// lockWait for an instance writing the index. Called with s.mu held.
func (s *packs) lockShared() {
	f, err := os.OpenFile(filepath.Join(s.dir, lockName), os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return // no index will be written by this instance
	}
	for deadline := time.Now().Add(lockWait); ; {
		err := withFd(f, func(fd int) error { return unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB) })
		if err == nil {
			s.lock = f
			return
		}
		if time.Now().After(deadline) {
			// Go on without: the index written meanwhile is read (or
			// found stale) by the Open below, and this instance writes
			// none.
			f.Close()
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lockWait bounds how long Open waits for another instance writing its
// index at Close.
const lockWait = 10 * time.Second

// saveIndex writes the index of the last instance of a backend to close.
// Failing is harmless: the next Open reads the packs. Called with s.mu
// held, before the packs are closed.
func (s *packs) saveIndex() error {
	if s.lock == nil || s.noDir || s.noPunch.Load() {
		return nil // without holes, punched records could not be told
	}
	if s.indexOnDisk {
		if _, err := os.Stat(filepath.Join(s.dir, indexName)); err == nil {
			return nil // nothing changed since it was read
		}
		s.indexOnDisk = false // another instance changed the packs
	}
	s.lock.Close() // this instance's shared lock
	s.lock = nil
	excl, err := os.Open(filepath.Join(s.dir, lockName))
	if err != nil {
		return err
	}
	defer excl.Close()
	if !tryLock(excl) {
		return nil // another instance is open: the last to close writes it
	}
	if err := s.refresh(true); err != nil {
		return err
	}
	sizes := map[uint32]int64{}
	for id, p := range s.byID {
		if p.busy > 0 || (!p.mine && !p.settled) {
			return nil // an append in flight, here or in a stopped instance's pack
		}
		// The records the index names must be on the disk before it is.
		if err := p.f.Sync(); err != nil {
			return err
		}
		fi, err := p.f.Stat()
		if err != nil {
			return err
		}
		sizes[id] = fi.Size()
	}
	// Records other instances punched (deleted or replaced) while this one
	// was open are holes now.
	for key, l := range s.index {
		var data int64
		err := withFd(l.p.f, func(fd int) (err error) {
			data, err = unix.Seek(fd, l.off, unix.SEEK_DATA)
			return err
		})
		switch {
		case errors.Is(err, unix.ENXIO) || (err == nil && data != l.off):
			delete(s.index, key)
		case err != nil:
			return err // never drop a record on a doubt: the next Open reads the packs
		}
	}
	tmp := filepath.Join(s.dir, indexName+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	err = writeIndex(f, sizes, s.seq, s.index)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, indexName))
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func writeIndex(w io.Writer, sizes map[uint32]int64, seq uint64, index map[string]packLoc) error {
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)
	var b [32]byte
	bw.WriteString(indexMagic)
	binary.LittleEndian.PutUint32(b[:], uint32(len(sizes)))
	bw.Write(b[:4])
	for id, size := range sizes {
		binary.LittleEndian.PutUint32(b[:], id)
		binary.LittleEndian.PutUint64(b[4:], uint64(size))
		bw.Write(b[:12])
	}
	binary.LittleEndian.PutUint64(b[:], seq)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(index)))
	bw.Write(b[:12])
	for key, l := range index {
		binary.LittleEndian.PutUint16(b[:], uint16(len(key)))
		bw.Write(b[:2])
		bw.WriteString(key)
		binary.LittleEndian.PutUint32(b[:], l.p.id)
		binary.LittleEndian.PutUint64(b[4:], uint64(l.off))
		binary.LittleEndian.PutUint32(b[12:], l.n)
		binary.LittleEndian.PutUint32(b[16:], l.crc)
		binary.LittleEndian.PutUint64(b[20:], l.seq)
		bw.Write(b[:28])
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(b[:], crc.Sum32())
	_, err := w.Write(b[:4])
	return err
}

// indexFile is a parsed index.
type indexFile struct {
	sizes   map[uint32]int64
	seq     uint64
	records map[string]indexRecord
}

type indexRecord struct {
	pack uint32
	loc  packLoc // without its pack
}

// crcReader feeds what it reads to a CRC.
type crcReader struct {
	r   io.Reader
	crc hash.Hash32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc.Write(p[:n])
	return n, err
}

// readIndex parses an index file and checks everything it can alone: its
// checksum, keys, value sizes, and that every record lies inside its pack.
// max is the largest value packed.
func readIndex(r io.Reader, max int) (*indexFile, error) {
	crc := crc32.New(castagnoli)
	br := bufio.NewReaderSize(r, 256<<10)
	cr := &crcReader{r: br, crc: crc}
	var b [32]byte
	read := func(n int) ([]byte, error) {
		if _, err := io.ReadFull(cr, b[:n]); err != nil {
			return nil, fmt.Errorf("cut short: %w", err)
		}
		return b[:n], nil
	}
	h, err := read(len(indexMagic) + 4)
	if err != nil {
		return nil, err
	}
	if string(h[:len(indexMagic)]) != indexMagic {
		return nil, fmt.Errorf("not a pack index (magic %q)", h[:len(indexMagic)])
	}
	npacks := binary.LittleEndian.Uint32(h[len(indexMagic):])
	ix := &indexFile{sizes: map[uint32]int64{}, records: map[string]indexRecord{}}
	for range npacks {
		p, err := read(12)
		if err != nil {
			return nil, err
		}
		id, size := binary.LittleEndian.Uint32(p), int64(binary.LittleEndian.Uint64(p[4:]))
		if size < 0 {
			return nil, fmt.Errorf("pack %08x: size %d", id, size)
		}
		if _, dup := ix.sizes[id]; dup {
			return nil, fmt.Errorf("pack %08x named twice", id)
		}
		ix.sizes[id] = size
	}
	p, err := read(12)
	if err != nil {
		return nil, err
	}
	ix.seq = binary.LittleEndian.Uint64(p)
	nrec := binary.LittleEndian.Uint32(p[8:])
	key := make([]byte, 0, 256)
	for range nrec {
		p, err := read(2)
		if err != nil {
			return nil, err
		}
		kl := int(binary.LittleEndian.Uint16(p))
		if kl > 256 {
			return nil, fmt.Errorf("key of %d bytes", kl)
		}
		key = key[:kl]
		if _, err := io.ReadFull(cr, key); err != nil {
			return nil, fmt.Errorf("cut short: %w", err)
		}
		if err := backends.CheckKey(string(key)); err != nil {
			return nil, err
		}
		if p, err = read(28); err != nil {
			return nil, err
		}
		rec := indexRecord{pack: binary.LittleEndian.Uint32(p), loc: packLoc{
			off:    int64(binary.LittleEndian.Uint64(p[4:])),
			keyLen: uint16(kl),
			n:      binary.LittleEndian.Uint32(p[12:]),
			crc:    binary.LittleEndian.Uint32(p[16:]),
			seq:    binary.LittleEndian.Uint64(p[20:]),
		}}
		size, ok := ix.sizes[rec.pack]
		switch {
		case !ok:
			return nil, fmt.Errorf("key %s in pack %08x, which the index does not name", key, rec.pack)
		case int64(rec.loc.n) > int64(max):
			return nil, fmt.Errorf("key %s: value of %d bytes", key, rec.loc.n)
		case rec.loc.off < 0 || rec.loc.off%recAlign != 0 || rec.loc.off > size-recHeader-int64(kl)-int64(rec.loc.n):
			return nil, fmt.Errorf("key %s: record at %d outside its pack of %d bytes", key, rec.loc.off, size)
		case rec.loc.seq > ix.seq:
			return nil, fmt.Errorf("key %s: sequence number %d past the last given, %d", key, rec.loc.seq, ix.seq)
		}
		if _, dup := ix.records[string(key)]; dup {
			return nil, fmt.Errorf("key %s named twice", key)
		}
		ix.records[string(key)] = rec
	}
	want := crc.Sum32()
	if _, err := io.ReadFull(br, b[:4]); err != nil {
		return nil, fmt.Errorf("cut short: %w", err)
	}
	if got := binary.LittleEndian.Uint32(b[:4]); got != want {
		return nil, fmt.Errorf("checksum %08x, the contents say %08x", got, want)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, errors.New("bytes after the checksum")
	}
	return ix, nil
}

// loadIndex reads packs/index, if there is one, and says whether it
// describes the packs ids exactly as they are now; then it has indexed
// them. An index that does not is removed. Called with s.mu held, before
// anything else.
func (s *packs) loadIndex(ids []uint32) (bool, error) {
	path := filepath.Join(s.dir, indexName)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	ix, rerr := readIndex(f, s.max)
	f.Close()
	// An index not trusted goes at once; a trusted one with the first
	// change (touch).
	s.indexOnDisk = true
	if rerr != nil || len(ix.sizes) != len(ids) {
		return false, s.touch()
	}
	for _, id := range ids {
		want, ok := ix.sizes[id]
		if !ok {
			return false, s.touch()
		}
		p, err := s.openPack(id)
		if err != nil {
			return false, err
		}
		fi, err := p.f.Stat()
		if err != nil {
			return false, err
		}
		if fi.Size() != want || !tryLock(p.f) {
			return false, s.touch() // changed since, or appended to now
		}
		unlock(p.f)
		p.settled, p.scanned = true, want
	}
	for key, r := range ix.records {
		l := r.loc
		l.p = s.byID[r.pack]
		l.p.live++
		s.index[key] = l
	}
	s.seq = ix.seq
	s.fromIndex = true
	return true, nil
}

// touch removes the index left on disk, durably, before this instance
// changes the packs for the first time. Called with s.mu held.
//
// An instance that could not take the shared lock (lockShared gave up)
// is invisible to a closing one, which may write an index while it is
// open: it looks for one before every change.
func (s *packs) touch() error {
	if !s.indexOnDisk && (s.lock != nil || s.noDir) {
		return nil
	}
	err := os.Remove(filepath.Join(s.dir, indexName))
	if err == nil {
		err = syncDir(s.dir)
	} else if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if err != nil {
		return err
	}
	s.indexOnDisk = false
	return nil
}
