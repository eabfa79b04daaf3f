package local

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"unsafe"

	"github.com/healstore/healstore/backends"
)

// Values of at most packMax bytes are appended to pack files, one per
// backend in turn, instead of getting a file each. Making a value durable
// in its own file costs a new inode, a rename and an fsync of both the
// file and its directory, each a journal commit; an append to a pack
// costs one fsync of one file, and a sync round of many values one fsync
// per pack. Measured on this project's VMs (14 backends on one disk, one
// value each, in parallel): 105 KiB values durable in 9.9-11.1 ms as
// files, 4.1-5.6 ms appended to packs; 420 KiB values in 11.2 and 7.9 ms.
//
// Pack layout: <path>/data/packs/<8 hex digits>.pack, numbered in the
// order they were made. A pack is a run of records, each starting on a
// 4 KiB boundary (direct I/O writes whole aligned blocks):
//
//	0  magic "HSP1"
//	4  flags, uint16, 0
//	6  key length, uint16
//	8  value length, uint32
//	12 CRC-32C of the value
//	16 sequence number, uint64: later records of a key replace earlier ones
//	24 CRC-32C of bytes 0-23 and the key
//	28 zero, uint32
//	32 key, then the value, then zeros to the next 4 KiB boundary
//
// (all integers little-endian). How packs are appended to, indexed,
// shared between processes and reclaimed: packs.go.
const (
	defaultPackMax   = 1 << 20
	defaultPackLimit = 1 << 30 // a pack takes no new record past this
	recHeader        = 32
	recMagic         = "HSP1"
	recAlign         = dioAlign
	packSuffix       = ".pack"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recHead is a record's parsed header.
type recHead struct {
	key   string
	n     uint32 // value bytes
	crc   uint32 // CRC-32C of the value
	seq   uint64
	flags uint16
}

// recordSize is the bytes a record of a key and value of these lengths
// takes, padding included.
func recordSize(keyLen, n int) int64 {
	return alignUp(int64(recHeader + keyLen + n))
}

func alignUp(n int64) int64 { return (n + recAlign - 1) &^ (recAlign - 1) }

// encodeRecord writes the record of key and value into buf (at least
// recordSize long; the padding is zeroed) and returns its length.
func encodeRecord(buf []byte, key string, value []byte, seq uint64) int {
	size := int(recordSize(len(key), len(value)))
	b := buf[:size]
	encodeHeader(b, recHead{key: key, n: uint32(len(value)), crc: crc32.Checksum(value, castagnoli), seq: seq})
	n := copy(b[recHeader+len(key):], value)
	clear(b[recHeader+len(key)+n:])
	return size
}

// encodeHeader writes h's header and key to the start of b.
func encodeHeader(b []byte, h recHead) {
	copy(b, recMagic)
	binary.LittleEndian.PutUint16(b[4:], h.flags)
	binary.LittleEndian.PutUint16(b[6:], uint16(len(h.key)))
	binary.LittleEndian.PutUint32(b[8:], h.n)
	binary.LittleEndian.PutUint32(b[12:], h.crc)
	binary.LittleEndian.PutUint64(b[16:], h.seq)
	copy(b[recHeader:], h.key)
	binary.LittleEndian.PutUint32(b[24:], headerCRC(b[:24], h.key))
	binary.LittleEndian.PutUint32(b[28:], 0)
}

func headerCRC(fixed []byte, key string) uint32 {
	c := crc32.Update(0, castagnoli, fixed)
	return crc32.Update(c, castagnoli, []byte(key))
}

// errNoRecord says the bytes at a record boundary hold no record: a hole,
// a torn write, the zeros after the last record, or damage.
var errNoRecord = errors.New("no record")

// parseHeader parses the header at the start of b, which holds the first
// bytes of a record (at least its header and key when there is one). It
// checks everything the header can vouch for: a record that passes names
// a valid key and a value no longer than max.
func parseHeader(b []byte, max int) (recHead, error) {
	if len(b) < recHeader || string(b[:4]) != recMagic {
		return recHead{}, errNoRecord
	}
	h := recHead{
		flags: binary.LittleEndian.Uint16(b[4:]),
		n:     binary.LittleEndian.Uint32(b[8:]),
		crc:   binary.LittleEndian.Uint32(b[12:]),
		seq:   binary.LittleEndian.Uint64(b[16:]),
	}
	kl := int(binary.LittleEndian.Uint16(b[6:]))
	if len(b) < recHeader+kl {
		return recHead{}, fmt.Errorf("%w: key of %d bytes past the header block", errNoRecord, kl)
	}
	key := string(b[recHeader : recHeader+kl])
	if headerCRC(b[:24], key) != binary.LittleEndian.Uint32(b[24:]) {
		return recHead{}, fmt.Errorf("%w: header checksum mismatch", errNoRecord)
	}
	// A header whose checksum holds but whose fields do not is not a torn
	// write: it was written so, by a newer or foreign format.
	if h.flags != 0 || binary.LittleEndian.Uint32(b[28:]) != 0 {
		return recHead{}, fmt.Errorf("%w: unknown flags %#x (a newer format?)", errNoRecord, h.flags)
	}
	if int64(h.n) > int64(max) {
		return recHead{}, fmt.Errorf("%w: value of %d bytes, packs hold at most %d", errNoRecord, h.n, max)
	}
	if err := backends.CheckKey(key); err != nil {
		return recHead{}, fmt.Errorf("%w: %v", errNoRecord, err)
	}
	h.key = key
	return h, nil
}

// alignedBuf returns n bytes starting on a recAlign boundary.
func alignedBuf(n int) []byte {
	b := make([]byte, n+recAlign)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % recAlign); r != 0 {
		off = recAlign - r
	}
	return b[off : off+n : off+n]
}
