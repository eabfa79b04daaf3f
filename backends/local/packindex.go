package local

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/healstore/healstore/backends"
	"golang.org/x/sys/unix"
)

// A backend leaves a checkpoint of its index in packs/index, so the next
// Open reads one file and the records appended since, instead of one
// header per value (20,000 values took 2.3-3.3 s to index from cold packs
// on the test VM). It is written at Close and, while the backend is open,
// each time max(ckptMin, values/16) records were appended since the last
// one, so after a crash (SIGKILL, power loss) Open reads at most about a
// sixteenth of the headers again.
//
// A checkpoint is a base, never the whole truth: for every pack it names
// the offset its records were indexed up to and the pack file's identity
// (inode and birth time). Open takes its records only for a pack that is
// still the same file and at least that long; reads on from that offset
// (appends since, by any instance, torn ones stepped over as in a full
// reading); drops each record whose first block is a hole now (punched
// since: deleted or replaced); and reads whole every pack it does not
// name, or names but finds changed (made again under the same number,
// shorter). A later record of a key read that way beats the checkpoint's
// by sequence number, as two records found in the packs do. So any
// instance may write one at any time from its own view, and an old one
// costs only a longer reading.
//
// Checkpoints need holes (a punched record must be told from a live one)
// and birth times; on a file system without either none is written, and
// Open reads the packs.
//
// Layout (integers little-endian):
//
//	magic "HSPIDX02"
//	uint32 packs, then per pack: uint32 id, int64 indexed up to, uint64
//	inode, int64 birth time seconds, uint32 birth time nanoseconds
//	uint64 the last sequence number given
//	uint32 records, then per record: uint16 key length, key, uint32 pack
//	id, int64 offset, uint32 value length, uint32 value CRC-32C, uint64
//	sequence number
//	uint32 CRC-32C of everything before it
const (
	indexName  = "index"
	indexMagic = "HSPIDX02"
	// ckptMin is the fewest appends between two checkpoints of an open
	// backend (more for a large index: a sixteenth of its records).
	ckptMin = 1024
)

// packIdent tells a pack file from another made later under its number.
type packIdent struct {
	ino       uint64
	btimeSec  int64
	btimeNsec uint32
}

// identOf returns f's identity, false where the file system has no birth
// times.
func identOf(f *os.File) (packIdent, bool) {
	var stx unix.Statx_t
	err := withFd(f, func(fd int) error {
		return unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_INO|unix.STATX_BTIME, &stx)
	})
	if err != nil || stx.Mask&unix.STATX_BTIME == 0 {
		return packIdent{}, false
	}
	return packIdent{ino: stx.Ino, btimeSec: stx.Btime.Sec, btimeNsec: stx.Btime.Nsec}, true
}

// indexPack is a pack as a checkpoint names it.
type indexPack struct {
	upto  int64 // its records before this offset are in the checkpoint
	ident packIdent
	p     *pack // when writing: the pack, synced before the checkpoint is written
}

// indexSnap is a checkpoint taken under s.mu, written without it.
type indexSnap struct {
	packs map[uint32]indexPack
	seq   uint64
	// A slice, not a map: copying 250,000 keys into a map under s.mu
	// stalled the backend 130-180 ms, into a slice 10-20 ms.
	recs []indexEntry
}

// snapshot copies what a checkpoint holds, or says none can be taken now:
// an append is in flight (its record's place is taken, its bytes maybe
// not written), or the file system lacks holes or birth times. Called
// with s.mu held.
func (s *packs) snapshot() (*indexSnap, bool) {
	if s.noDir || s.noPunch.Load() || !s.punchable() {
		return nil, false
	}
	snap := &indexSnap{packs: make(map[uint32]indexPack, len(s.byID)), seq: s.seq, recs: make([]indexEntry, 0, len(s.index))}
	for id, p := range s.byID {
		upto := p.scanned // another instance's pack: its whole records read so far
		if p.gapped {
			upto = min(upto, p.gap) // a record may be written there yet
		}
		if p.mine {
			if p.busy > 0 {
				return nil, false
			}
			upto = p.end
		}
		ident, ok := identOf(p.f)
		if !ok {
			return nil, false
		}
		snap.packs[id] = indexPack{upto: upto, ident: ident, p: p}
	}
	for k, l := range s.index {
		// A record at or past where its pack is named up to is read
		// again from there (readIndex takes no record past it).
		if ip, ok := snap.packs[l.p.id]; ok && ip.p == l.p && l.off+l.size() <= ip.upto {
			snap.recs = append(snap.recs, indexEntry{k, l})
		}
	}
	return snap, true
}

// punchable says whether the packs' file system punches holes, asking it
// once, on a file of its own: a pack may be appended to by another
// instance at any moment, and a punch past the end it was seen to have
// could land on a record just written there.
func (s *packs) punchable() bool {
	if s.punchChecked {
		return s.punchOK
	}
	f, err := os.CreateTemp(s.dir, indexName+".*"+indexTmpSuffix)
	if err != nil {
		return false // asked again at the next checkpoint
	}
	defer os.Remove(f.Name())
	defer f.Close()
	err = withFd(f, func(fd int) error {
		return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, recAlign)
	})
	s.punchChecked, s.punchOK = true, err == nil
	return s.punchOK
}

// maybeCheckpoint starts writing a checkpoint in the background when
// enough records were appended since the last. Called with s.mu held.
func (s *packs) maybeCheckpoint() {
	if s.ckptRunning || s.closed || s.appended < max(s.ckptMin, len(s.index)/16) {
		return
	}
	snap, ok := s.snapshot()
	if !ok {
		return // tried again after a later append
	}
	s.appended, s.ckptRunning = 0, true
	s.ckptWG.Add(1)
	go func() {
		defer s.ckptWG.Done()
		err := s.writeCheckpoint(snap)
		s.mu.Lock()
		s.ckptRunning = false
		if err != nil {
			s.appended += s.ckptMin // try again soon
		}
		s.mu.Unlock()
	}()
}

// saveIndex writes a checkpoint at Close, unless nothing changed since
// the one Open read. Called with s.mu held; s.closed is set, so no
// background checkpoint starts any more, and none is running.
func (s *packs) saveIndex() error {
	if !s.changed && s.fromIndex {
		return nil // a session that only read: the checkpoint is current
	}
	snap, ok := s.snapshot()
	if !ok || len(snap.packs) == 0 {
		return nil
	}
	return s.writeCheckpoint(snap)
}

// writeCheckpoint makes the records snap names durable in their packs,
// then writes snap to packs/index, atomically. Failing is harmless: the
// next Open reads more of the packs. It runs without s.mu; a pack closed
// meanwhile (removed: empty, or gone) is skipped, and Open finds it gone.
func (s *packs) writeCheckpoint(snap *indexSnap) error {
	for _, ip := range snap.packs {
		if err := ip.p.f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			return err
		}
	}
	f, err := os.CreateTemp(s.dir, indexName+".*"+indexTmpSuffix)
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = writeIndex(f, snap.packs, snap.seq, snap.recs)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		s.ckptMu.Lock()
		if s.noPunch.Load() {
			// A punch failed since the snapshot: it removed the index,
			// and this one may name the record it could not punch.
			err = errors.New("a punch failed: no checkpoint")
		} else {
			err = os.Rename(tmp, filepath.Join(s.dir, indexName))
		}
		s.ckptMu.Unlock()
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// indexTmpSuffix ends the names checkpoints are written under before
// they take their place; Open removes old ones (a writer that stopped).
const indexTmpSuffix = ".tmp"

// indexEntry is a record of a checkpoint being written.
type indexEntry struct {
	key string
	loc packLoc
}

func writeIndex(w io.Writer, packs map[uint32]indexPack, seq uint64, index []indexEntry) error {
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)
	var b [32]byte
	bw.WriteString(indexMagic)
	binary.LittleEndian.PutUint32(b[:], uint32(len(packs)))
	bw.Write(b[:4])
	for id, ip := range packs {
		binary.LittleEndian.PutUint32(b[:], id)
		binary.LittleEndian.PutUint64(b[4:], uint64(ip.upto))
		binary.LittleEndian.PutUint64(b[12:], ip.ident.ino)
		binary.LittleEndian.PutUint64(b[20:], uint64(ip.ident.btimeSec))
		binary.LittleEndian.PutUint32(b[28:], ip.ident.btimeNsec)
		bw.Write(b[:32])
	}
	binary.LittleEndian.PutUint64(b[:], seq)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(index)))
	bw.Write(b[:12])
	for _, e := range index {
		key, l := e.key, e.loc
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
	packs   map[uint32]indexPack // without their *pack
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
	ix := &indexFile{packs: map[uint32]indexPack{}, records: map[string]indexRecord{}}
	for range npacks {
		p, err := read(32)
		if err != nil {
			return nil, err
		}
		id, upto := binary.LittleEndian.Uint32(p), int64(binary.LittleEndian.Uint64(p[4:]))
		if upto < 0 || upto%recAlign != 0 {
			return nil, fmt.Errorf("pack %08x: indexed up to %d", id, upto)
		}
		if _, dup := ix.packs[id]; dup {
			return nil, fmt.Errorf("pack %08x named twice", id)
		}
		ix.packs[id] = indexPack{upto: upto, ident: packIdent{
			ino:       binary.LittleEndian.Uint64(p[12:]),
			btimeSec:  int64(binary.LittleEndian.Uint64(p[20:])),
			btimeNsec: binary.LittleEndian.Uint32(p[28:]),
		}}
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
		ip, ok := ix.packs[rec.pack]
		size := ip.upto
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

// loadIndex takes the records of packs/index, if there is one, for the
// packs it names that are still the same files (ids: the packs there now),
// and sets where reading each of them goes on from (see the top of this
// file). A pack it does not take stays to be read whole; an index that
// cannot be read is ignored. Called with s.mu held, before anything else.
func (s *packs) loadIndex(ids []uint32) error {
	f, err := os.Open(filepath.Join(s.dir, indexName))
	if err != nil {
		return nil // none, or unreadable: the packs are read
	}
	ix, rerr := readIndex(f, s.max)
	f.Close()
	if rerr != nil {
		return nil
	}
	there := map[uint32]bool{}
	for _, id := range ids {
		there[id] = true
	}
	taken := map[uint32]*pack{}
	for id, ip := range ix.packs {
		if !there[id] {
			continue // removed since (emptied, or gone with its records)
		}
		p, err := s.openPack(id)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		fi, err := p.f.Stat()
		if err != nil {
			return err
		}
		if ident, ok := identOf(p.f); !ok || ident != ip.ident || fi.Size() < ip.upto {
			continue // another file under the number, or cut short: read whole
		}
		p.scanned = ip.upto
		taken[id] = p
	}
	for key, r := range ix.records {
		p := taken[r.pack]
		if p == nil {
			continue
		}
		var data int64
		err := withFd(p.f, func(fd int) (err error) {
			data, err = unix.Seek(fd, r.loc.off, unix.SEEK_DATA)
			return err
		})
		switch {
		case errors.Is(err, unix.ENXIO) || (err == nil && data != r.loc.off):
			continue // punched since: deleted or replaced
		case err != nil:
			return err // never keep a record on a doubt: the caller reads the packs
		}
		l := r.loc
		l.p = p
		s.index[key] = l
		p.live++
	}
	s.seq = max(s.seq, ix.seq)
	s.fromIndex = len(taken) > 0
	return nil
}

// removeOldIndexTemps removes checkpoints left half-written by a writer
// that stopped (older than any write takes). Called with s.mu held.
func (s *packs) removeOldIndexTemps(ents []os.DirEntry) {
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, indexName+".") || !strings.HasSuffix(name, indexTmpSuffix) {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > 10*time.Minute {
			os.Remove(filepath.Join(s.dir, name))
		}
	}
}
