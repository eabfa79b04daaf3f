package fuse

import (
	"fmt"
	"log/slog"
	"regexp"
	"time"
)

// Options configure a mount. The zero value of each field means its
// default.
type Options struct {
	// Name selects the filesystem inside the store, so one store can hold
	// several. Default "default".
	Name string
	// CacheDir holds the write-back cache and its journal. Required. It
	// must be on a local disk, and only one mount may use it at a time.
	CacheDir string
	// CacheSize bounds the bytes of written data held in CacheDir that are
	// not yet in healstore. Writers wait (up to OpTimeout) when it is full.
	// Default 1 GiB.
	CacheSize int64
	// BlockSize is the data block size of new files: a write of any size
	// rewrites whole blocks, and each block is one healstore object.
	// Existing files keep the block size they were created with. Default
	// 4 MiB (the default store policy block: one stripe per file block);
	// 64 KiB to 64 MiB.
	BlockSize int
	// ReadCacheSize bounds the memory holding fetched blocks. Default
	// 64 MiB, or the read-ahead window plus two blocks when that is more,
	// plus the kernel's read-ahead on the mount (at most 16 MiB, rounded
	// up to whole blocks).
	ReadCacheSize int64
	// ReadAhead is how far ahead of a sequential reader blocks are fetched.
	// Default 64 MiB, and never less than two blocks; negative turns
	// read-ahead off. At most 4 blocks are fetched at once.
	ReadAhead int64
	// UploadWorkers upload dirty blocks in parallel. Default 8: a block
	// upload waits mostly on backend fsyncs, so more in flight go faster.
	UploadWorkers int
	// WritebackDelay is how long a partly written block may stay dirty
	// before it is uploaded without an fsync asking. Full blocks go at
	// once. Default 2s.
	WritebackDelay time.Duration
	// OpTimeout bounds every call into the store and every wait for the
	// cache (fsync, a write waiting for room): when it passes, the request
	// fails with EIO instead of hanging. Default 2m.
	OpTimeout time.Duration
	// AllowOther lets users other than the one mounting use the mount
	// (FUSE allow_other; non-root users need user_allow_other in
	// /etc/fuse.conf).
	AllowOther bool
	// NoKernelWriteback turns off the kernel's write-back page cache
	// (FUSE writeback_cache), so every write reaches the filesystem at
	// once. Slower for small writes; for debugging.
	NoKernelWriteback bool
	// Force takes over the filesystem even when the metastore says another
	// live mount holds it.
	Force bool
	// Debug logs every FUSE request.
	Debug bool
	// Logger receives warnings and errors. Default slog.Default().
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultName           = "default"
	DefaultCacheSize      = 1 << 30
	DefaultBlockSize      = 4 << 20
	DefaultReadCacheSize  = 64 << 20
	DefaultReadAhead      = 64 << 20
	DefaultUploadWorkers  = 8
	DefaultWritebackDelay = 2 * time.Second
	DefaultOpTimeout      = 2 * time.Minute

	// GCPercent is the garbage collector's target (GOGC) a mount process
	// should run with; healstore mount sets it unless GOGC is set. A mount
	// churns through block-sized buffers (fetched blocks leave the read
	// cache, uploads come and go), and at Go's default of 100 the heap
	// grows to twice what is live before old blocks are collected: a 1 GiB
	// sequential read through the mount touched about 700 MiB of memory
	// new to the process, each page a fault the kernel must serve (on VMs,
	// often the host too). At 50 it touched about 220 MiB and took half
	// the CPU (see docs/benchmarks.md). The collector's extra work is
	// small: block buffers hold no pointers, so marking skips them.
	GCPercent = 50

	minBlockSize = 64 << 10
	maxBlockSize = 64 << 20
	// MinBlockSize and MaxBlockSize bound Options.BlockSize.
	MinBlockSize = minBlockSize
	MaxBlockSize = maxBlockSize
	// maxCacheBlocks bounds the cache files held open (one per dirty
	// block): a block is charged at least CacheSize/maxCacheBlocks bytes.
	maxCacheBlocks = 8192
)

var fsNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// withDefaults fills zero fields and checks the result.
func (o Options) withDefaults() (Options, error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.ReadAhead == 0 {
		o.ReadAhead = DefaultReadAhead
	}
	if o.ReadCacheSize == 0 {
		// Room for the read-ahead window, the kernel's read-ahead (which
		// moves the window's start ahead of the reader), the block being
		// read and one more, so fetched blocks are not evicted before
		// they are read.
		o.ReadCacheSize = max(DefaultReadCacheSize, max(o.ReadAhead, 2*int64(o.BlockSize))+2*int64(o.BlockSize))
		if o.ReadAhead > 0 {
			o.ReadCacheSize += roundUp(min(o.ReadAhead, maxKernelReadAhead), int64(o.BlockSize))
		}
	}
	if o.UploadWorkers == 0 {
		o.UploadWorkers = DefaultUploadWorkers
	}
	if o.WritebackDelay == 0 {
		o.WritebackDelay = DefaultWritebackDelay
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = DefaultOpTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case !fsNameRE.MatchString(o.Name):
		return o, fmt.Errorf("fuse options: name %q: use 1-64 of [A-Za-z0-9._-]", o.Name)
	case o.CacheDir == "":
		return o, fmt.Errorf("fuse options: cache dir is empty")
	case o.BlockSize < minBlockSize || o.BlockSize > maxBlockSize:
		return o, fmt.Errorf("fuse options: block size %d: must be between %d and %d", o.BlockSize, minBlockSize, maxBlockSize)
	case o.CacheSize < 2*int64(o.BlockSize):
		return o, fmt.Errorf("fuse options: cache size %d: must hold at least two blocks (%d bytes)", o.CacheSize, 2*o.BlockSize)
	case o.ReadCacheSize < 0:
		return o, fmt.Errorf("fuse options: read cache size is negative")
	case o.UploadWorkers < 1:
		return o, fmt.Errorf("fuse options: upload workers must be at least 1")
	case o.WritebackDelay < 0:
		return o, fmt.Errorf("fuse options: writeback delay is negative")
	case o.OpTimeout < 0:
		return o, fmt.Errorf("fuse options: op timeout is negative")
	}
	return o, nil
}

// roundUp rounds n up to a multiple of unit.
func roundUp(n, unit int64) int64 { return (n + unit - 1) / unit * unit }
