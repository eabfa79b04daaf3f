package fuse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ObjectPrefix begins the names of the store objects that hold the blocks
// of a mount's files ("fs/<filesystem>/<inode>/<block>"). They are ordinary
// objects to the store, but changing one behind the mount's back changes a
// file in it, so tools that change objects leave this prefix alone.
const ObjectPrefix = "fs/"

// blobStore is what the filesystem needs of healstore for file data: one
// object per block. It is the root package's Store behind an interface, so
// the core can be tested with faults injected.
type blobStore interface {
	// PutBlock stores what r yields as the object name, replacing any old
	// version atomically (the old stripes go to garbage collection).
	PutBlock(ctx context.Context, name string, r io.Reader) error
	// GetBlock reads the whole object into memory of its exact size, or
	// returns an error matching errNoBlock when the object does not exist
	// and an error when it holds more than max bytes. Nothing is allocated
	// before the object is known to exist: a read of a sparse file's hole
	// would otherwise pay for a whole block of zeroed memory.
	GetBlock(ctx context.Context, name string, max int) ([]byte, error)
	// DeleteBlock removes the object; a missing object is not an error.
	DeleteBlock(ctx context.Context, name string) error
	// ListBlocks calls fn for every object name starting with prefix, in
	// ascending order, starting after the name after.
	ListBlocks(ctx context.Context, prefix, after string, fn func(name string) error) error
	// Capacity is the usable space of the store (after erasure coding).
	Capacity(ctx context.Context) (capacity, error)
}

var errNoBlock = errors.New("block object not found")

type capacity struct {
	Known       bool
	Total, Free uint64
}

// filesystem is the core: inodes and directories in the metastore, file
// data in blocks through the write-back cache. The go-fuse nodes (node.go)
// are thin adapters over it, so it can be tested without a mount.
type filesystem struct {
	opts   Options
	kv     kvStore
	blobs  blobStore
	prefix string // data object names start with this
	log    *slog.Logger
	// cacheDir/blocks holds one file per cached block.
	cacheDir string

	// metaMu serializes namespace changes (create, link, unlink, rename,
	// ...) and inode number allocation. Lock order: metaMu, then inode
	// mutexes in ascending inode number, then mu.
	metaMu   sync.Mutex
	nextIno  uint64
	inoLimit uint64

	mu     sync.Mutex
	inodes map[uint64]*inodeState

	gen     atomic.Uint64 // cache block generations
	journal *journal
	budget  *dirtyBudget
	rcache  *readCache
	up      *uploader

	fetchMu sync.Mutex
	fetches map[blockKey]*fetchCall

	prefetchSem chan struct{}
	// bootID identifies the running boot (replaced in tests).
	bootID func() []byte
	// crashPoint, set only by tests, is called with a step's name between
	// steps a crash of the process can fall between (those of a truncate,
	// and each object deleteBlocksFrom deletes), so a test can take the
	// state a crash there would leave.
	crashPoint func(step string)

	capMu   sync.Mutex
	capAt   time.Time
	capLast capacity

	bg     context.Context
	stopBg context.CancelFunc
	bgWG   sync.WaitGroup
}

// inodeState is the live state of one inode: its record as the filesystem
// sees it (which may be ahead of the metastore for size and mtime) and, for
// regular files, the blocks in the write-back cache.
type inodeState struct {
	ino  uint64
	mu   sync.Mutex
	cond *sync.Cond // on mu: an upload finished, a trim ended

	rec inode  // current view
	com inode  // as committed in the metastore
	raw []byte // committed record bytes, the compare-and-swap value

	attrDirty   bool // rec differs from com in size or times
	sizePending bool // the journal holds an uncommitted size
	staleBeyond bool // objects may exist in [blocks(size), Extent)
	trimming    bool // objects are being deleted; data changes wait
	gone        bool // record deleted; nothing may be written

	blocks   map[uint64]*cblock
	uploads  int // uploads in flight
	flushing int // flushes waiting for uploads
	errSeq   uint64
	lastErr  error
	dataVer  uint64 // bumped by every data change, guards read-cache fills
	cuts     uint64 // bumped by every truncate

	refs int // operations using the state (mu of filesystem)
	open int // open file handles
}

func (st *inodeState) evictable() bool {
	return st.refs == 0 && st.open == 0 && len(st.blocks) == 0 && st.uploads == 0 &&
		!st.attrDirty && !st.sizePending && !st.trimming
}

// maxIdleInodes bounds the clean, unused inode states kept in memory.
const maxIdleInodes = 4096

func newFilesystem(kv kvStore, blobs blobStore, opts Options) (*filesystem, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	f := &filesystem{
		opts:        opts,
		kv:          kv,
		blobs:       blobs,
		prefix:      ObjectPrefix + opts.Name + "/",
		log:         opts.Logger,
		cacheDir:    opts.CacheDir,
		inodes:      map[uint64]*inodeState{},
		budget:      newDirtyBudget(opts.CacheSize),
		rcache:      newReadCache(opts.ReadCacheSize),
		fetches:     map[blockKey]*fetchCall{},
		prefetchSem: make(chan struct{}, 4),
		bootID:      bootID,
	}
	f.bg, f.stopBg = context.WithCancel(context.Background())
	if err := os.MkdirAll(filepath.Join(f.cacheDir, "blocks"), 0o700); err != nil {
		return nil, fmt.Errorf("cache dir: %w", err)
	}
	return f, nil
}

// opCtx bounds one operation by OpTimeout. The FUSE request's own context
// is not used: it is cancelled by any signal the calling process gets
// (including the Go runtime's preemption signal), which would fail
// requests at random.
func (f *filesystem) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(f.bg, f.opts.OpTimeout)
}

func (f *filesystem) blockName(k blockKey) string {
	return fmt.Sprintf("%s%016x/%016x", f.prefix, k.ino, k.idx)
}

func (f *filesystem) inodePrefix(ino uint64) string {
	return fmt.Sprintf("%s%016x/", f.prefix, ino)
}

func nowNs() int64 { return time.Now().UnixNano() }

// format creates the superblock and root directory of a new filesystem;
// an existing one is left alone.
func (f *filesystem) format(ctx context.Context, uid, gid uint32) error {
	if _, err := f.kv.Get(ctx, []byte(keySuper)); err == nil {
		return nil
	} else if !errors.Is(err, errNoKey) {
		return fmt.Errorf("read superblock: %w", err)
	}
	now := nowNs()
	root := inode{Mode: syscall.S_IFDIR | 0o755, Uid: uid, Gid: gid, Nlink: 2, Atime: now, Mtime: now, Ctime: now}
	sb := fmt.Appendf(nil, `{"version":%d,"created":%q}`, superVers, time.Now().UTC().Format(time.RFC3339Nano))
	var b kvBatch
	b.expectMissing([]byte(keySuper))
	b.put([]byte(keySuper), sb)
	b.put([]byte(keyNext), u64(rootIno+1))
	b.put(inodeKey(rootIno), root.encode())
	if err := f.kv.Commit(ctx, &b); err != nil && !errors.Is(err, errConflict) {
		return fmt.Errorf("create filesystem %s: %w", f.opts.Name, err)
	}
	return nil
}

// allocIno hands out a new inode number, reserving a chunk in the
// metastore when the current one is used up. Numbers are never reused, so
// a stale reference (a journal record, a read-cache entry) can never name
// a different file. Called with metaMu held.
func (f *filesystem) allocIno(ctx context.Context) (uint64, error) {
	if f.nextIno >= f.inoLimit {
		raw, err := f.kv.Get(ctx, []byte(keyNext))
		if err != nil {
			return 0, fmt.Errorf("read inode counter: %w", err)
		}
		if len(raw) != 8 {
			return 0, fmt.Errorf("corrupt inode counter")
		}
		next := beU64(raw)
		var b kvBatch
		b.expect([]byte(keyNext), raw)
		b.put([]byte(keyNext), u64(next+inoChunk))
		if err := f.kv.Commit(ctx, &b); err != nil {
			return 0, fmt.Errorf("reserve inode numbers: %w", err)
		}
		f.nextIno, f.inoLimit = next, next+inoChunk
	}
	ino := f.nextIno
	f.nextIno++
	return ino, nil
}

// get returns the live state of ino, loading it from the metastore, with a
// reference the caller gives back with put.
func (f *filesystem) get(ctx context.Context, ino uint64) (*inodeState, error) {
	f.mu.Lock()
	if st := f.inodes[ino]; st != nil {
		st.refs++
		f.mu.Unlock()
		return st, nil
	}
	f.mu.Unlock()
	raw, err := f.kv.Get(ctx, inodeKey(ino))
	if errors.Is(err, errNoKey) {
		return nil, syscall.ENOENT
	}
	if err != nil {
		return nil, fmt.Errorf("read inode %d: %w", ino, err)
	}
	rec, err := decodeInode(ino, raw)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if st := f.inodes[ino]; st != nil {
		st.refs++
		return st, nil
	}
	st := f.newState(ino, rec, raw)
	st.refs = 1
	f.inodes[ino] = st
	return st, nil
}

func (f *filesystem) newState(ino uint64, rec *inode, raw []byte) *inodeState {
	st := &inodeState{ino: ino, rec: *rec, com: *rec, raw: raw, blocks: map[uint64]*cblock{}}
	st.cond = sync.NewCond(&st.mu)
	if rec.isReg() && rec.Extent > blocksFor(rec.Size, rec.BlockSize) {
		st.staleBeyond = true
	}
	return st
}

// lookupLive returns the state of ino only if it is in memory.
func (f *filesystem) lookupLive(ino uint64) *inodeState {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.inodes[ino]
	if st != nil {
		st.refs++
	}
	return st
}

// put gives back a reference; idle clean states beyond maxIdleInodes are
// dropped (the metastore has everything they hold).
func (f *filesystem) put(st *inodeState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st.refs--
	if st.refs > 0 || len(f.inodes) <= maxIdleInodes {
		return
	}
	if st.mu.TryLock() {
		if st.evictable() && f.inodes[st.ino] == st {
			delete(f.inodes, st.ino)
		}
		st.mu.Unlock()
	}
}

// installNew adds the state of an inode just created.
func (f *filesystem) installNew(ino uint64, rec *inode, raw []byte) *inodeState {
	st := f.newState(ino, rec, raw)
	st.refs = 1
	f.mu.Lock()
	f.inodes[ino] = st
	f.mu.Unlock()
	return st
}

// commitLocked writes st.rec to the metastore (compare-and-swap on the
// last committed bytes), with the size commitSizeLocked allows: durable
// is a size the caller knows to be in healstore (0 for none). Called
// with st.mu held.
func (f *filesystem) commitLocked(ctx context.Context, st *inodeState, durable uint64) error {
	var b kvBatch
	rec, raw := f.stageLocked(&b, st, durable)
	if err := f.kv.Commit(ctx, &b); err != nil {
		return fmt.Errorf("commit inode %d: %w", st.ino, err)
	}
	f.committedLocked(st, rec, raw)
	return nil
}

// stageLocked adds st.rec (its size as commitSizeLocked allows) to b
// guarded by the committed value and returns the record and its bytes;
// committedLocked must follow a successful commit.
func (f *filesystem) stageLocked(b *kvBatch, st *inodeState, durable uint64) (inode, []byte) {
	rec := st.rec
	rec.Size = f.commitSizeLocked(st, durable)
	raw := rec.encode()
	b.expect(inodeKey(st.ino), st.raw)
	b.put(inodeKey(st.ino), raw)
	return rec, raw
}

// commitSizeLocked is the size a commit of st may record. A committed
// size must never cover data that is not in healstore: the write-back
// cache does not survive a machine restart (nor the loss of the cache
// directory), and a file committed longer than its uploaded blocks would
// then read zeros where its unsynced writes were, or, past a truncate
// whose cut block was not uploaded yet, the bytes the truncate cut away.
// So a size beyond the committed one is recorded only when no block
// between the two holds cached data not yet uploaded; otherwise the
// commit keeps the committed size, or durable if the caller knows more
// is in healstore (a flush: what it uploaded). The full size then stays
// pending (attrDirty, sizePending and the journal's size record, which
// a restart on the same boot replays with the cached blocks) until a
// commit can record it, at the latest at fsync and close. Shrinking is
// always allowed: it exposes nothing. Called with st.mu held.
func (f *filesystem) commitSizeLocked(st *inodeState, durable uint64) uint64 {
	size, com := st.rec.Size, st.com.Size
	if size <= com || size <= durable || !st.rec.isReg() {
		return size
	}
	bs := uint64(st.rec.BlockSize)
	lo, hi := com/bs, blocksFor(size, st.rec.BlockSize)
	for idx, b := range st.blocks {
		if idx >= lo && idx < hi && b.dirty() {
			return max(com, durable)
		}
	}
	return size
}

// committedLocked records a successful commit of rec (st.rec, perhaps
// with a smaller size) as raw.
func (f *filesystem) committedLocked(st *inodeState, rec inode, raw []byte) {
	st.raw = raw
	st.com = rec
	if rec.Size != st.rec.Size {
		return // the size stays pending
	}
	st.attrDirty = false
	if st.sizePending {
		st.sizePending = false
		f.noteJournalErr(f.journal.sizeSynced(st.ino))
	}
}

// reached calls the test hook crashPoint, if set, at step.
func (f *filesystem) reached(step string) {
	if f.crashPoint != nil {
		f.crashPoint(step)
	}
}

// noteJournalErr logs a journal failure once per call site; the journal
// keeps the error until it has rewritten its file (see journal.append).
func (f *filesystem) noteJournalErr(err error) {
	if err != nil {
		f.log.Error("healstore fuse: write-back journal", "err", err)
	}
}

// errno maps an error to what the kernel gets: an Errno passes through;
// anything else is logged and becomes EIO.
func (f *filesystem) errno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	f.log.Warn("healstore fuse: "+op+" failed", "err", err)
	return syscall.EIO
}

func beU64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}
