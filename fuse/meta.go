package fuse

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"syscall"
	"time"
	"unicode/utf8"
)

// The filesystem's metadata lives in one namespaced key/value area of the
// store's metastore (Store.FSMeta). docs/fuse.md lists the layout:
//
//	"S"                      superblock (JSON)
//	"N"                      next unreserved inode number (8 bytes, big endian)
//	"I" ino                  inode record (JSON)
//	"D" parent name          directory entry: child ino (8) + type bits (4)
//	"O" ino                  orphan: nlink reached 0, data still to reclaim
//
// Numbers in keys are 8-byte big endian so scans run in numeric order.
// File data is not here: block i of inode n is the healstore object
// "fs/<name>/<n as 16 hex>/<i as 16 hex>".

const (
	keySuper  = "S"
	keyNext   = "N"
	pInode    = 'I'
	pDirent   = 'D'
	pOrphan   = 'O'
	rootIno   = 1
	inoChunk  = 1024 // inode numbers reserved per metastore commit
	maxName   = 255
	superVers = 1
)

var (
	errNoKey    = errors.New("key not found")
	errConflict = errors.New("metadata changed concurrently")
	errStop     = errors.New("stop scan")
)

// kvStore is the metadata area the filesystem needs: the root package's
// FSMeta, behind an interface so the core can be tested without a store.
// Get returns an error matching errNoKey for a missing key; Commit returns
// one matching errConflict when a condition fails; a Scan callback returns
// errStop to end the walk.
type kvStore interface {
	Get(ctx context.Context, key []byte) ([]byte, error)
	Scan(ctx context.Context, prefix, start []byte, fn func(k, v []byte) error) error
	Commit(ctx context.Context, b *kvBatch) error
}

type kvOp struct {
	key, value []byte
	del        bool
}

type kvCond struct {
	key     []byte
	value   []byte
	missing bool
}

// kvBatch is an atomic set of writes guarded by conditions.
type kvBatch struct {
	ops   []kvOp
	conds []kvCond
}

func (b *kvBatch) put(k, v []byte)        { b.ops = append(b.ops, kvOp{key: k, value: v}) }
func (b *kvBatch) del(k []byte)           { b.ops = append(b.ops, kvOp{key: k, del: true}) }
func (b *kvBatch) expect(k, v []byte)     { b.conds = append(b.conds, kvCond{key: k, value: v}) }
func (b *kvBatch) expectMissing(k []byte) { b.conds = append(b.conds, kvCond{key: k, missing: true}) }
func (b *kvBatch) empty() bool            { return len(b.ops) == 0 && len(b.conds) == 0 }
func u64(v uint64) []byte                 { return binary.BigEndian.AppendUint64(nil, v) }
func inodeKey(ino uint64) []byte          { return append([]byte{pInode}, u64(ino)...) }
func orphanKey(ino uint64) []byte         { return append([]byte{pOrphan}, u64(ino)...) }
func direntPrefix(parent uint64) []byte   { return append([]byte{pDirent}, u64(parent)...) }
func direntKey(parent uint64, name string) []byte {
	return append(direntPrefix(parent), name...)
}

// superblock is written once, when the filesystem is created.
type superblock struct {
	Version int       `json:"version"`
	Created time.Time `json:"created"`
}

// inode is one file, directory, symlink or special file. Times are Unix
// nanoseconds.
type inode struct {
	Mode  uint32 `json:"mode"` // type and permission bits (syscall.S_IF*)
	Uid   uint32 `json:"uid"`
	Gid   uint32 `json:"gid"`
	Nlink uint32 `json:"nlink"`
	Size  uint64 `json:"size"`
	Atime int64  `json:"atime"`
	Mtime int64  `json:"mtime"`
	Ctime int64  `json:"ctime"`
	Rdev  uint32 `json:"rdev,omitempty"`
	// Target of a symlink (see inodeRecord for one that is not UTF-8).
	Target string `json:"target,omitempty"`
	// BlockSize of a regular file's data blocks, fixed at creation.
	BlockSize uint32 `json:"block_size,omitempty"`
	// Extent bounds the data objects of a regular file: no block object
	// exists at an index >= Extent. It runs ahead of Size while blocks are
	// uploaded before the size is committed; objects between the size and
	// Extent may be stale and are deleted before the file grows over them.
	Extent uint64 `json:"extent,omitempty"`
}

func (n *inode) isDir() bool  { return n.Mode&syscall.S_IFMT == syscall.S_IFDIR }
func (n *inode) isReg() bool  { return n.Mode&syscall.S_IFMT == syscall.S_IFREG }
func (n *inode) isLink() bool { return n.Mode&syscall.S_IFMT == syscall.S_IFLNK }

// inodeRecord is an inode as stored. A symlink target that is not valid
// UTF-8 (Linux allows any bytes but NUL) goes in TargetRaw (base64 in the
// JSON) instead of Target: JSON strings carry only UTF-8, and
// encoding/json would replace the other bytes with U+FFFD.
type inodeRecord struct {
	inode
	TargetRaw []byte `json:"target_raw,omitempty"`
}

func (n *inode) encode() []byte {
	rec := inodeRecord{inode: *n}
	if !utf8.ValidString(n.Target) {
		rec.Target, rec.TargetRaw = "", []byte(n.Target)
	}
	b, err := json.Marshal(&rec)
	if err != nil {
		panic(err) // a struct of numbers, strings and bytes always encodes
	}
	return b
}

func decodeInode(ino uint64, b []byte) (*inode, error) {
	var rec inodeRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("inode %d: corrupt record: %w", ino, err)
	}
	n := rec.inode
	if !validType(n.Mode) {
		return nil, fmt.Errorf("inode %d: corrupt record: mode %#o has no file type", ino, n.Mode)
	}
	if n.isReg() && n.BlockSize == 0 {
		return nil, fmt.Errorf("inode %d: corrupt record: regular file without block size", ino)
	}
	if rec.TargetRaw != nil {
		if n.Target != "" || utf8.Valid(rec.TargetRaw) {
			return nil, fmt.Errorf("inode %d: corrupt record: target_raw beside target, or valid UTF-8 (which goes in target)", ino)
		}
		n.Target = string(rec.TargetRaw)
	}
	return &n, nil
}

// dirent is a directory entry's value.
type dirent struct {
	ino  uint64
	mode uint32 // type bits only
}

func (d dirent) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, d.ino)
	return binary.BigEndian.AppendUint32(b, d.mode)
}

func decodeDirent(b []byte) (dirent, error) {
	if len(b) != 12 {
		return dirent{}, fmt.Errorf("corrupt directory entry (%d bytes)", len(b))
	}
	d := dirent{ino: binary.BigEndian.Uint64(b), mode: binary.BigEndian.Uint32(b[8:])}
	if d.mode&^syscall.S_IFMT != 0 || !validType(d.mode) {
		return dirent{}, fmt.Errorf("corrupt directory entry (mode %#o is not a file type)", d.mode)
	}
	return d, nil
}

// validType says whether mode's type bits name a file type the filesystem
// creates (the kernel turns a mknod of type 0 into a regular file).
func validType(mode uint32) bool {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFLNK, syscall.S_IFCHR,
		syscall.S_IFBLK, syscall.S_IFIFO, syscall.S_IFSOCK:
		return true
	}
	return false
}

// blocksFor is the number of blocks a file of size bytes spans.
func blocksFor(size uint64, bs uint32) uint64 {
	return (size + uint64(bs) - 1) / uint64(bs)
}
