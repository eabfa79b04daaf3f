package local

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The index from key to record lives in memory; Open builds it by reading
// each record's header. Delete punches the record out of its pack
// (fallocate(2) PUNCH_HOLE), so the space goes back to the file system at
// once, and a pack left with no record is removed. A record is never
// written twice, so a reader that raced a Delete reads the value or
// zeros, which its checksum rejects.
//
// A backend's directory may be open in several places at once: a tool
// beside the store in one process, two frontends sharing their metadata
// in etcd, a command beside the daemon. Files were safe that way by
// themselves; packs keep it so by four rules.
//   - An instance appends only to packs it made, and holds an exclusive
//     flock(2) on each while it may append to it. A pack nobody holds is
//     settled: nobody will append to it again.
//   - Any instance may punch a record it knows replaced or deleted.
//   - Only an instance holding a pack's lock removes it, and only after
//     reading it whole under the lock and finding no record.
//   - An instance's index lags behind the others' writes. A key it does
//     not know, a record it finds punched, a Delete and a List make it
//     look again (refresh): at pack files made since, at what was
//     appended to the packs others hold since it last read them, and at
//     the holes it stepped over there (an append that ended after a later
//     one).
//
// A key written by two instances at once ends with the record of the
// later sequence number (a clock reading), and an older record that no
// instance knew of can come back after a Delete; healstore writes each
// shard key from one place at a time and treats a value it does not
// reference as garbage.

// pack is one pack file.
type pack struct {
	id   uint32
	path string
	f    *os.File // reads, punches, and the lock while this instance appends
	w    *os.File // appends (O_DIRECT where the file system has it); nil unless appending

	// Under packs.mu:
	mine    bool  // made by this instance, which holds its lock until it retires it
	settled bool  // nobody appends to it any more, and it was read whole
	scanned int64 // records before this offset are indexed (a pack another instance appends to)
	end     int64 // where this instance's next record goes (mine)
	live    int   // records of the index in this pack
	busy    int   // appends reserved in this pack and not yet indexed

	// An append of the other instance may end before an earlier one has
	// written its record, which is then a hole below a whole record: a
	// punched record to a scan, which steps over it. gapped says a scan
	// did, first at gap, while the pack was still appended to. Such a
	// record is found by looking at the hole again (holes); once the
	// pack is settled catchUp reads it all again from gap, and no
	// checkpoint names the pack past gap.
	gapped bool
	gap    int64
	// holes are the holes in-flight scans stepped over, looked at again
	// at each catch-up so an append that ends late is found while the
	// pack is still appended to (not only once it is settled). A hole
	// that stays one past holeWait is a punched record and forgotten.
	holes []hole
}

// hole is a range of a pack with no data when a scan passed it.
type hole struct {
	off, end int64
	found    time.Time
}

// holeWait is how long a hole is looked at again: appends end within it
// (a write and a flush), a punched record never does. holesMax bounds the
// list; a hole dropped from it is still read once the pack is settled.
const (
	holeWait = time.Minute
	holesMax = 256
)

// packLoc is where a key's value is.
type packLoc struct {
	p      *pack
	off    int64 // record start
	keyLen uint16
	n      uint32
	crc    uint32
	seq    uint64
}

func (l packLoc) size() int64     { return recordSize(int(l.keyLen), int(l.n)) }
func (l packLoc) valueOff() int64 { return l.off + recHeader + int64(l.keyLen) }

// packs is a backend's pack files and its index of them.
type packs struct {
	dir   string // <path>/data/packs
	root  string // <path>/data, whose entry for dir must be durable
	max   int    // largest value packed
	limit int64  // pack size past which a new pack begins

	bufs sync.Pool // *[]byte, aligned record buffers

	mu          sync.Mutex
	index       map[string]packLoc
	byID        map[uint32]*pack
	cur         *pack                                         // the pack appended to; nil until the first append
	seq         uint64                                        // last sequence number given or seen
	dirMtime    time.Time                                     // of dir when it was last listed
	purged      []*pack                                       // packs forgotten as gone, closed with the backend
	noPunch     atomic.Bool                                   // a punch fell back to zeroing the record
	fallocate   func(fd int, mode uint32, off, n int64) error // unix.Fallocate; tests make it fail
	noDir       bool                                          // dir does not exist yet
	closed      bool
	headersRead int // record headers read by scan (tests)

	// Checkpoints of the index (packindex.go), under mu.
	fromIndex    bool // Open took records from a checkpoint
	changed      bool // an append, punch or pack removal since Open
	appended     int  // records appended since the last checkpoint was taken
	ckptMin      int  // appends between checkpoints, at least (ckptMin; tests lower it)
	ckptRunning  bool
	ckptWG       sync.WaitGroup
	ckptMu       sync.Mutex // a checkpoint's rename into place, against punch's removal of the index
	punchChecked bool
	punchOK      bool
}

// openPacks indexes the packs under root and returns them with the bytes
// of the values indexed.
func openPacks(root string, max int, limit int64) (*packs, int64, error) {
	s := &packs{dir: filepath.Join(root, "packs"), root: root, max: max, limit: limit,
		index: map[string]packLoc{}, byID: map[uint32]*pack{}, ckptMin: ckptMin, fallocate: unix.Fallocate}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ents, err := os.ReadDir(s.dir); err == nil {
		s.removeOldIndexTemps(ents)
		var ids []uint32
		for _, e := range ents {
			if id, ok := packID(e.Name()); ok {
				ids = append(ids, id)
			}
		}
		if err := s.loadIndex(ids); err != nil {
			// Read the packs whole instead.
			s.reset()
		}
	}
	if err := s.refresh(true); err != nil {
		s.closeAllLocked()
		return nil, 0, err
	}
	// Records read beyond a checkpoint are worth the next one (at Close,
	// if not before).
	s.changed = s.headersRead > 0
	var used int64
	for _, l := range s.index {
		used += int64(l.n)
	}
	return s, used, nil
}

// refresh brings the index up to date with the pack files: it reads the
// packs it has not seen and what was appended to the unsettled ones
// since it last read them. always lists the directory even when its
// modification time says nothing was made or removed. Called with s.mu
// held; it does I/O (on a miss, a Delete, a List: not on the hot path of
// a single instance, where it costs one stat).
func (s *packs) refresh(always bool) error {
	fi, err := os.Stat(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		s.noDir = true
		return nil
	}
	if err != nil {
		return err
	}
	s.noDir = false
	// Modification times are coarse (a clock tick), so a directory
	// changed in the last second is listed again whatever its time says.
	if always || !fi.ModTime().Equal(s.dirMtime) || time.Since(fi.ModTime()) < time.Second {
		ents, err := os.ReadDir(s.dir)
		if err != nil {
			return err
		}
		var ids []uint32
		for _, e := range ents {
			if always && strings.HasPrefix(e.Name(), tmpPrefix) {
				removeAbandoned(filepath.Join(s.dir, e.Name()))
				continue
			}
			if id, ok := packID(e.Name()); ok {
				if p, known := s.byID[id]; known {
					s.purgeIfGone(p) // a new file of the same number is read as new
				}
				if _, known := s.byID[id]; !known {
					ids = append(ids, id)
				}
			}
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		for _, id := range ids {
			p, err := s.openPack(id)
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since the listing
			}
			if err != nil {
				return err
			}
			if err := s.catchUp(p); err != nil {
				return err
			}
		}
		s.dirMtime = fi.ModTime()
	}
	for _, p := range s.byID {
		if !p.settled && !p.mine {
			if err := s.catchUp(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeAbandoned removes a pack made under a temporary name by an
// instance that stopped before giving it its number: nobody holds it, and
// it is old (its maker locks it right after making it, so a new one may
// be unlocked for a moment).
func removeAbandoned(path string) {
	removeAbandonedTemp(path, 10*time.Minute)
}

func packID(name string) (uint32, bool) {
	if !strings.HasSuffix(name, packSuffix) || len(name) != 8+len(packSuffix) {
		return 0, false
	}
	id, err := strconv.ParseUint(strings.TrimSuffix(name, packSuffix), 16, 32)
	return uint32(id), err == nil
}

// catchUp indexes the records of another instance's pack p that it has
// not read yet. A pack nobody holds is settled: read to its end, once; a
// pack another instance appends to is read up to its first record not
// whole (it may be an append in flight), and from there next time.
// Called with s.mu held.
func (s *packs) catchUp(p *pack) error {
	settled := tryLock(p.f)
	if settled {
		defer unlock(p.f)
	}
	fi, err := p.f.Stat()
	if err != nil {
		return fmt.Errorf("read %s: %w", p.path, err)
	}
	from := p.scanned
	if settled && p.gapped {
		from = min(from, p.gap) // the appends in flight then have ended
	}
	if !settled {
		if err := s.rescanHoles(p); err != nil {
			return fmt.Errorf("read %s: %w", p.path, err)
		}
	}
	scanned, err := s.scan(p, from, fi.Size(), !settled)
	if err != nil {
		return fmt.Errorf("read %s: %w", p.path, err)
	}
	p.scanned = scanned
	if settled {
		p.settled, p.gapped, p.holes = true, false, nil
		s.maybeDropLocked(p, true)
	}
	return nil
}

// rescanHoles reads the holes of p that earlier in-flight scans stepped
// over again, indexing the records written there since. What is still a
// hole stays listed with the time it was first found. Called with s.mu
// held.
func (s *packs) rescanHoles(p *pack) error {
	old := p.holes
	p.holes = nil
	now := time.Now()
	for i, h := range old {
		if now.Sub(h.found) > holeWait {
			continue
		}
		n := len(p.holes)
		stop, err := s.scan(p, h.off, h.end, true)
		if err != nil {
			p.holes = append(p.holes, old[i:]...)
			return err
		}
		for j := n; j < len(p.holes); j++ {
			p.holes[j].found = h.found // found again, not new
		}
		if stop < h.end {
			// A record not whole yet: looked at again from there.
			p.noteHole(stop, h.end, h.found)
		}
	}
	return nil
}

// noteHole lists [off, end) as a hole to look at again.
func (p *pack) noteHole(off, end int64, found time.Time) {
	if off >= end {
		return
	}
	if len(p.holes) >= holesMax {
		p.holes = p.holes[1:]
	}
	p.holes = append(p.holes, hole{off: off, end: end, found: found})
}

// tryLock takes f's exclusive lock if nobody holds it.
func tryLock(f *os.File) bool {
	return withFd(f, func(fd int) error { return unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) }) == nil
}

func unlock(f *os.File) {
	withFd(f, func(fd int) error { return unix.Flock(fd, unix.LOCK_UN) })
}

// openPack opens pack id, made by another instance or an earlier one.
func (s *packs) openPack(id uint32) (*pack, error) {
	p := &pack{id: id, path: s.packPath(id)}
	f, err := os.OpenFile(p.path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	p.f = f
	s.byID[id] = p
	return p, nil
}

func (s *packs) packPath(id uint32) string {
	return filepath.Join(s.dir, fmt.Sprintf("%08x%s", id, packSuffix))
}

// newPack makes a pack for this instance to append to. It is made under
// a temporary name and locked before it gets its number (a link, which
// fails when the number is taken, as O_EXCL would), so no other instance
// ever sees it unlocked and, finding it empty, removes it. Called with
// s.mu held.
func (s *packs) newPack() (*pack, error) {
	if err := s.makeDir(); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.dir, tmpPrefix+"*"+packSuffix)
	if errors.Is(err, fs.ErrNotExist) {
		// The packs directory was removed behind the backend: make it
		// again if the data directory is there.
		s.noDir = true
		if err = s.makeDir(); err == nil {
			f, err = os.CreateTemp(s.dir, tmpPrefix+"*"+packSuffix)
		}
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("%s: %w", s.root, errRootGone)
		}
		return nil, err
	}
	p := &pack{f: f, mine: true, settled: true}
	ok := false
	defer func() {
		if !ok {
			if p.w != nil {
				p.w.Close()
			}
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if !tryLock(f) {
		return nil, fmt.Errorf("%s: locked by another instance as it was made", f.Name())
	}
	if p.w, err = openAppend(f.Name()); err != nil {
		return nil, err
	}
	nextID := func() uint32 {
		id := uint32(0)
		for pid := range s.byID {
			id = max(id, pid+1)
		}
		return id
	}
	p.id = nextID()
	for tries := 0; ; tries++ {
		p.path = s.packPath(p.id)
		err := os.Link(f.Name(), p.path)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || tries >= 16 {
			return nil, err
		}
		// Another instance took the number: read the packs made since,
		// and take the number after them.
		if err := s.refresh(true); err != nil {
			return nil, err
		}
		p.id = max(p.id+1, nextID())
	}
	os.Remove(f.Name())
	if err := syncDir(s.dir); err != nil {
		os.Remove(p.path)
		return nil, err
	}
	ok = true
	s.byID[p.id] = p
	return p, nil
}

// openAppend opens a pack for appends, with O_DIRECT when the file system
// takes it (see directio.go); the records are aligned for it.
func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
	if errors.Is(err, unix.EINVAL) {
		f, err = os.OpenFile(path, os.O_WRONLY, 0)
	}
	return f, err
}

// scan indexes the records of p between from and size and returns where
// it stopped. It reads one header block per record and skips holes
// (punched records) with SEEK_DATA. In a pack another instance appends
// to (inFlight), a record is indexed only whole (its value checked), and
// the scan stops at the first block that is not a whole record: the
// record being written there is read next time. Elsewhere such blocks
// (torn by a crash, or damaged) are stepped over. Called with s.mu held.
func (s *packs) scan(p *pack, from, size int64, inFlight bool) (int64, error) {
	buf := make([]byte, recAlign)
	off := from
	for off < size {
		var data int64
		err := withFd(p.f, func(fd int) (err error) {
			data, err = unix.Seek(fd, off, unix.SEEK_DATA)
			return err
		})
		if inFlight && (errors.Is(err, unix.ENXIO) || (err == nil && data > off)) {
			if !p.gapped {
				p.gapped, p.gap = true, off // maybe an append not written yet
			}
			end := size
			if err == nil {
				end = min(data&^(recAlign-1), size)
			}
			p.noteHole(off, end, time.Now())
		}
		if errors.Is(err, unix.ENXIO) {
			return size, nil // only holes from here on
		}
		if err == nil && data > off {
			off = data &^ (recAlign - 1)
		}
		n, err := p.f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return off, err
		}
		s.headersRead++
		h, err := parseHeader(buf[:n], s.max)
		l := packLoc{p: p, off: off, keyLen: uint16(len(h.key)), n: h.n, crc: h.crc, seq: h.seq}
		whole := err == nil && off+l.size() <= size
		if whole && inFlight {
			_, verr := s.readValue(l, nil)
			whole = verr == nil
		}
		if !whole {
			if inFlight {
				return off, nil
			}
			off += recAlign
			continue
		}
		off += l.size()
		s.add(h.key, l, !inFlight)
	}
	return off, nil
}

// add indexes record l of key, found by a scan. Of two records of one key
// the later wins (a crash, or another instance, came between writing it
// and punching the earlier), unless it is torn (never acknowledged). The
// loser is punched when its pack is settled or this instance's (in a
// pack another instance appends to, its owner may still need it).
// Called with s.mu held.
func (s *packs) add(key string, l packLoc, readWhole bool) {
	s.seq = max(s.seq, l.seq)
	old, ok := s.index[key]
	if ok && old.p != l.p && s.purgeIfGone(old.p) {
		// The index still named a pack removed behind this instance (a
		// wiped disk): its record is no value any more, so it loses
		// whatever the sequence numbers say. They are clock readings; a
		// clock set back gives the record written since the lower one,
		// and the contest below would punch the only copy.
		old, ok = packLoc{}, false
	}
	if !ok {
		s.index[key] = l
		l.p.live++
		return
	}
	if old.p == l.p && old.off == l.off {
		return // read again
	}
	win, lose := l, old
	if old.seq > l.seq || (old.seq == l.seq && old.p.id > l.p.id) {
		win, lose = old, l
	}
	if readWhole {
		if _, err := s.readValue(win, nil); err != nil {
			win, lose = lose, win
		}
	}
	if win != old {
		old.p.live--
		l.p.live++
		s.index[key] = win
	}
	switch {
	case lose.p.settled || lose.p.mine || (lose.p == l.p && readWhole):
		s.punch(lose)
	case lose.p != l.p && tryLock(lose.p.f):
		// Nobody appends to it, though it is not read on yet: a pack a
		// checkpoint named, at Open. Left, its record would come back
		// when the pack is read whole again (the key deleted meanwhile).
		s.punch(lose)
		unlock(lose.p.f)
	}
}

// get returns the location of key's value, looking at the packs again
// when key is not in the index or its pack is gone.
func (s *packs) get(key string) (packLoc, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookup(key, false)
}

// lookup is get with s.mu held; fresh looks at the packs again even when
// the index has key (another instance may hold a later record of it).
func (s *packs) lookup(key string, fresh bool) (packLoc, bool) {
	l, ok := s.index[key]
	if ok && s.purgeIfGone(l.p) {
		ok = false
	}
	if (fresh || !ok) && s.refresh(false) == nil {
		l, ok = s.index[key]
	}
	return l, ok
}

// purgeIfGone purges p if it is gone and says whether it was. Called
// with s.mu held.
func (s *packs) purgeIfGone(p *pack) bool {
	if !p.gone() {
		return false
	}
	s.purge(p)
	return true
}

// purge forgets a pack that is gone (see gone) and its records: the key
// may have been written again since, to a new pack. Called with s.mu
// held.
func (s *packs) purge(p *pack) {
	for k, l := range s.index {
		if l.p == p {
			delete(s.index, k)
		}
	}
	p.live = 0
	delete(s.byID, p.id)
	if s.cur == p {
		s.cur = nil
	}
	// List the directory on the next look, whatever its time says: the
	// pack may come back with it (a volume mounted again) unchanged.
	s.dirMtime = time.Time{}
	if p.busy == 0 {
		// Closed now, letting go of its lock: the directory may come
		// back (a volume mounted again), and other instances should find
		// the pack settled.
		if p.w != nil {
			p.w.Close()
			p.w = nil
		}
		p.f.Close()
		return
	}
	// An append is still writing to it: closed with the backend, its
	// lock let go when that append ends (finishRetire).
	s.purged = append(s.purged, p)
}

// known returns the location of key's value as the index has it, without
// looking at the packs (the hot paths: a key just written, a sync round).
func (s *packs) known(key string) (packLoc, bool) {
	s.mu.Lock()
	l, ok := s.index[key]
	s.mu.Unlock()
	return l, ok
}

// errTorn says a record's value failed its checksum.
var errTorn = errors.New("the value fails its checksum in its pack (a write torn by a crash, or a damaged disk)")

// read returns key's value. A record found punched or replaced since the
// index was made (by this instance or another) is dropped and the packs
// looked at again. A key rewritten as fast as it is read (a Put punches
// the record it replaces at once) takes a few tries; staleTries bounds
// them.
func (s *packs) read(key string, alloc func(n int) []byte) ([]byte, bool, error) {
	l, ok := s.get(key)
	for try := 0; ok; try++ {
		v, err := s.readValue(l, alloc)
		if err == nil {
			return v, true, nil
		}
		if try >= staleTries || s.holds(l) {
			return nil, true, err // the record is there: torn, or the disk failed
		}
		l, ok = s.stale(key, l)
	}
	return nil, false, nil
}

// readRange returns length bytes of key's value from off (less at its
// end). Unlike read it does not check the value's checksum, which covers
// the whole value (a shard's own header has its checksum); it checks that
// the record was not punched while it read.
func (s *packs) readRange(key string, off, length int64) ([]byte, bool, error) {
	l, ok := s.get(key)
	for try := 0; ok; try++ {
		n := int64(l.n)
		buf := make([]byte, max(0, min(length, n-off)))
		_, err := l.p.f.ReadAt(buf, l.valueOff()+min(off, n))
		if s.holds(l) {
			return buf, true, err
		}
		if try >= staleTries {
			return nil, true, fmt.Errorf("%s: record at %d replaced while read: %w", l.p.path, l.off, errTorn)
		}
		l, ok = s.stale(key, l)
	}
	return nil, false, nil
}

// staleTries bounds the records a read tries when each is replaced while
// it reads: a writer's append takes far longer than a read, so a reader
// wins within a few tries even against many writers of one key.
const staleTries = 100

// stale drops record l of key from the index (punched or replaced
// behind this instance) and looks key up again.
func (s *packs) stale(key string, l packLoc) (packLoc, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now, ok := s.index[key]; ok && now == l {
		delete(s.index, key)
		l.p.live--
	}
	return s.lookup(key, false)
}

// holds says whether the record at l may still be there: its header is
// intact, or cannot be read for an error of the disk (EIO and the like:
// dropping the record from the index then would hide a value the next
// reading of the packs finds, and a checkpoint would leave it out for
// good). A hole (punched: zeros), the pack's end, or a pack closed (it
// was removed) say it is gone.
func (s *packs) holds(l packLoc) bool {
	buf := make([]byte, recHeader+int(l.keyLen))
	if _, err := l.p.f.ReadAt(buf, l.off); err != nil {
		return !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed)
	}
	h, err := parseHeader(buf, s.max)
	return err == nil && h.seq == l.seq && len(h.key) == int(l.keyLen)
}

// readValue reads l's value into memory from alloc (or new memory) and
// checks it against its checksum.
func (s *packs) readValue(l packLoc, alloc func(n int) []byte) ([]byte, error) {
	var buf []byte
	if alloc != nil {
		buf = alloc(int(l.n))
	}
	if len(buf) < int(l.n) {
		buf = make([]byte, l.n)
	}
	buf = buf[:l.n]
	if _, err := l.p.f.ReadAt(buf, l.valueOff()); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: record at %d cut short: %w", l.p.path, l.off, errTorn)
		}
		return nil, err
	}
	if crc32.Checksum(buf, castagnoli) != l.crc {
		return nil, fmt.Errorf("%s: record at %d: %w", l.p.path, l.off, errTorn)
	}
	return buf, nil
}

// gone says whether p's file is no longer at its path: removed or moved
// away behind the backend (a wiped disk, an unmounted volume, an operator
// moving the directory). Its records are then lost to the store even
// though the open file still reads them, and appends to it would be lost
// with them. One stat of the path, as a file per value costs an open.
func (p *pack) gone() bool {
	var path, open unix.Stat_t
	if err := unix.Stat(p.path, &path); err != nil {
		return true
	}
	if withFd(p.f, func(fd int) error { return unix.Fstat(fd, &open) }) != nil {
		return true
	}
	return path.Ino != open.Ino || path.Dev != open.Dev
}

// withFd runs fn on f's descriptor, which stays open (not closed, its
// number not reused) until fn returns: packs are closed while other
// goroutines may still hold their records, and a punch through a number
// reused by another file would destroy that file's data.
func withFd(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// buffer returns an aligned buffer of at least n bytes.
func (s *packs) buffer(n int) *[]byte {
	if v, ok := s.bufs.Get().(*[]byte); ok && cap(*v) >= n {
		*v = (*v)[:n]
		return v
	}
	b := alignedBuf(int(max(alignUp(int64(n)), 128<<10)))[:n]
	return &b
}

// append writes key's value as a new record; durable says whether to
// fsync it before indexing it. It returns the location it replaced, if
// any (the caller releases it).
func (s *packs) append(key string, value []byte, durable bool) (old packLoc, had bool, err error) {
	size := recordSize(len(key), len(value))
	bp := s.buffer(int(size))
	defer s.bufs.Put(bp)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return packLoc{}, false, errPacksClosed
	}
	if s.cur != nil {
		// Removed behind the backend (a wiped disk, an unmounted
		// volume): appends to it would be lost. startPack makes a new one
		// or says the data directory is gone.
		s.purgeIfGone(s.cur)
	}
	if s.cur == nil || (s.cur.end > 0 && s.cur.end+size > s.limit) {
		if err := s.startPack(); err != nil {
			s.mu.Unlock()
			return packLoc{}, false, err
		}
	}
	// Sequence numbers order the records of a key across instances and
	// restarts: a clock reading, and always past every one seen.
	s.seq = max(s.seq+1, uint64(time.Now().UnixNano()))
	p := s.cur
	l := packLoc{p: p, off: p.end, keyLen: uint16(len(key)), n: uint32(len(value)), seq: s.seq}
	p.end += size
	p.busy++
	w := p.w
	s.mu.Unlock()

	encodeRecord(*bp, key, value, l.seq)
	l.crc = binary.LittleEndian.Uint32((*bp)[12:])
	_, err = w.WriteAt(*bp, l.off)
	if err == nil && durable {
		err = w.Sync()
		if err == nil && p.gone() {
			err = fmt.Errorf("%s: %w", p.path, errRootGone)
		}
	}
	s.mu.Lock()
	p.busy--
	if err != nil {
		s.mu.Unlock()
		s.release(l) // whatever part of it reached the file
		return packLoc{}, false, err
	}
	s.appended++
	s.changed = true
	old, had = s.index[key]
	if had && old.seq > l.seq && old.p != p && s.purgeIfGone(old.p) {
		// A record in a pack removed behind this instance is no value
		// (see add): it never beats this one, however the clock went.
		old, had = packLoc{}, false
	}
	if had && old.seq > l.seq {
		// A Put of the same key that began later finished first: it
		// wins, and this record is what the caller releases.
		s.finishRetire(p)
		s.maybeCheckpoint()
		s.mu.Unlock()
		return l, true, nil
	}
	s.index[key] = l
	p.live++
	if had {
		old.p.live--
	}
	s.finishRetire(p)
	s.maybeCheckpoint()
	s.mu.Unlock()
	return old, had, nil
}

// startPack makes the next pack and appends to it from now on. Called
// with s.mu held; it does I/O, once per limit bytes appended.
func (s *packs) startPack() error {
	p, err := s.newPack()
	if err != nil {
		return err
	}
	if old := s.cur; old != nil {
		s.retire(old)
	}
	s.cur = p
	return nil
}

// makeDir makes the packs directory, durably, if it is not there.
func (s *packs) makeDir() error {
	if !s.noDir {
		return nil
	}
	// Mkdir, not MkdirAll: a data directory that vanished is an outage
	// (see makeDir of the backend).
	if err := os.Mkdir(s.dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("%s: %w", s.root, errRootGone)
		}
		return err
	}
	if err := syncDir(s.root); err != nil {
		return err
	}
	s.noDir = false
	return nil
}

// retire stops appending to p (full, or gone). Called with s.mu held.
func (s *packs) retire(p *pack) {
	if s.cur == p {
		s.cur = nil
	}
	s.finishRetire(p)
}

// finishRetire closes the append descriptor of a retired pack and lets go
// of its lock once no append into it is in progress; the pack is then
// settled for every instance. Called with s.mu held.
func (s *packs) finishRetire(p *pack) {
	if p == s.cur || p.busy > 0 || !p.mine {
		return
	}
	if p.w != nil {
		p.w.Close()
		p.w = nil
	}
	p.mine = false
	p.settled = true
	p.scanned = p.end // every record in it is this instance's, indexed
	if s.byID[p.id] == p {
		s.maybeDropLocked(p, true) // still locked: nobody else removes it meanwhile
	}
	unlock(p.f) // a no-op if it was removed (closed)
}

// remove drops key from the index and punches its record, after looking
// at the packs again (another instance may hold a later record of it).
// It returns what was removed.
func (s *packs) remove(key string) (packLoc, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		// Closed after the caller's check: the packs' descriptors are
		// gone, and a punch through them would do nothing, silently.
		return packLoc{}, false, errPacksClosed
	}
	l, ok := s.lookup(key, true)
	if ok {
		delete(s.index, key)
		l.p.live--
		s.releaseLocked(l)
	}
	return l, ok, nil
}

// errPacksClosed fails a pack operation that raced the backend's Close.
var errPacksClosed = errors.New("backend is closed")

// release punches a record that the index no longer holds and removes
// its pack if that was the pack's last record.
func (s *packs) release(l packLoc) {
	s.mu.Lock()
	s.releaseLocked(l)
	s.mu.Unlock()
}

// releaseLocked is release with s.mu held: the punch and the index change
// are one step for every other caller, so a pack read again in between
// (maybeDropLocked) never finds the record of a key just deleted.
func (s *packs) releaseLocked(l packLoc) {
	s.punch(l)
	s.maybeDropLocked(l.p, false)
}

// punch gives a record's space back to the file system. Where the file
// system cannot punch a hole, the record is zeroed instead (see below),
// so no later Open finds it.
func (s *packs) punch(l packLoc) {
	s.changed = true
	err := withFd(l.p.f, func(fd int) error {
		return s.fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, l.off, l.size())
	})
	if err != nil && !errors.Is(err, os.ErrClosed) {
		// A file system without holes, or one that needs space to make
		// one (ext4 splitting an extent on a full disk). The whole record
		// is overwritten in place (no new space), so neither a reading of
		// the packs (its header is gone) nor a checkpoint that names it
		// (its value fails its checksum) brings it back; the checkpoint
		// goes too, as it would list the key until then, and none is
		// written from now on (snapshot).
		s.noPunch.Store(true)
		s.ckptMu.Lock()
		os.Remove(filepath.Join(s.dir, indexName))
		s.ckptMu.Unlock()
		zero := make([]byte, min(l.size(), 1<<20))
		for off := l.off; off < l.off+l.size(); off += int64(len(zero)) {
			n := min(int64(len(zero)), l.off+l.size()-off)
			l.p.f.WriteAt(zero[:n], off) // best effort: a record left is garbage collected again
		}
	}
}

// maybeDropLocked removes p if it holds no record. Only a settled pack
// is removed, under its lock (locked says this caller holds it already),
// and only after reading it whole again: another instance may have
// appended records this one never indexed. Called with s.mu held.
func (s *packs) maybeDropLocked(p *pack, locked bool) {
	if p.live > 0 || p.busy > 0 || p == s.cur || p.mine || !p.settled || s.byID[p.id] != p {
		return
	}
	if !locked {
		if !tryLock(p.f) {
			return // another instance is removing it
		}
		defer unlock(p.f)
	}
	// The count can be short of the records there (another instance
	// appended before it let go; a read error dropped a record from the
	// index): read the pack again, whole. Holes are skipped, so an empty
	// pack costs one seek.
	fi, err := p.f.Stat()
	if err == nil {
		p.scanned, err = s.scan(p, 0, fi.Size(), false)
	}
	if err != nil || p.live > 0 {
		return
	}
	s.dropPack(p)
}

// dropPack forgets p and removes its file. Called with s.mu held.
func (s *packs) dropPack(p *pack) {
	s.changed = true
	delete(s.byID, p.id)
	if p.w != nil {
		p.w.Close()
		p.w = nil
	}
	if !p.gone() { // never a file made at its path since
		os.Remove(p.path)
	}
	// An open *os.File closes for real once reads in progress end; later
	// reads fail with os.ErrClosed, and their keys are gone from the index.
	p.f.Close()
}

// list returns the keys starting with prefix and their sizes, after
// looking at the packs again.
func (s *packs) list(prefix string) (map[string]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.byID {
		if p.gone() {
			s.purge(p)
		}
	}
	if err := s.refresh(false); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for k, l := range s.index {
		if strings.HasPrefix(k, prefix) {
			out[k] = int64(l.n)
		}
	}
	return out, nil
}

// closeAll closes every pack (letting go of their locks); later calls
// fail.
func (s *packs) closeAll() {
	s.mu.Lock()
	was := s.closed
	s.closed = true // no checkpoint starts from now on
	s.mu.Unlock()
	s.ckptWG.Wait() // and the one running ends (it takes s.mu at its end)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !was {
		s.saveIndex() // best effort: without it the next Open reads more of the packs
	}
	s.closeAllLocked()
}

func (s *packs) closeAllLocked() {
	s.closed = true
	for _, p := range append(s.purged, mapValues(s.byID)...) {
		if p.w != nil {
			p.w.Close()
		}
		p.f.Close()
	}
}

func mapValues(m map[uint32]*pack) []*pack {
	out := make([]*pack, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	return out
}

// reset forgets every pack and record (closing the packs): an index found
// stale at Open is dropped for a reading of the packs.
func (s *packs) reset() {
	for _, p := range s.byID {
		p.f.Close()
	}
	s.byID = map[uint32]*pack{}
	s.index = map[string]packLoc{}
	s.seq = 0
	s.fromIndex = false
}
