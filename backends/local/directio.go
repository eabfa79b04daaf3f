package local

import (
	"errors"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Large values are written with O_DIRECT: the page cache would cost a copy
// of every byte and, on a VM whose host takes back the guest's freed
// memory, a fault on every page cache page it allocates. A put of one
// 16 MiB block writes 22 MiB of shards (10+4), and the page cache copy was
// half of a put's CPU time. A shard is written once and read again only
// when a block is read, so its pages would mostly sit unused.
//
// Reads go through the page cache: a shard read again soon (a hot object,
// a block read by several readers) then comes from memory, three times
// faster than from the disk here, and a cold read costs the same either
// way.
//
// The aligned part of a value goes direct and the tail (under dioAlign
// bytes) through the page cache; fsync covers both. Anything that does not
// fit the rules (a value under dioMin, memory off a dioAlign boundary, a
// file system that refuses O_DIRECT) takes the buffered path, which is
// always correct.
const (
	dioAlign = 4096     // memory, offset and length alignment of direct I/O
	dioMin   = 64 << 10 // values below this go through the page cache
)

// directOK says whether p may be written with O_DIRECT.
func directOK(p []byte) bool {
	return len(p) >= dioMin && uintptr(unsafe.Pointer(&p[0]))%dioAlign == 0
}

// setDirect turns O_DIRECT on or off for f. File systems without direct
// I/O (tmpfs before Linux 6.6, some FUSE and network file systems) refuse
// it with EINVAL.
func setDirect(f *os.File, on bool) error {
	fd := int(f.Fd())
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if on {
		fl |= unix.O_DIRECT
	} else {
		fl &^= unix.O_DIRECT
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	return err
}

// writeValue writes value to f (new and empty) from offset 0: the
// aligned part with O_DIRECT when the backend and the memory allow it,
// the rest through the page cache.
func (b *Backend) writeValue(f *os.File, value []byte) error {
	if b.noDirect.Load() || !directOK(value) {
		_, err := f.Write(value)
		return err
	}
	if err := b.setDirect(f, true); err != nil {
		b.noDirect.Store(true) // this file system has no direct I/O
		_, err := f.Write(value)
		return err
	}
	n := len(value) &^ (dioAlign - 1)
	if _, err := f.Write(value[:n]); err != nil {
		if !errors.Is(err, syscall.EINVAL) {
			return err
		}
		// The file system takes O_DIRECT but not this alignment: start
		// over through the page cache and stop trying.
		b.noDirect.Store(true)
		n = 0
	}
	// Turning it off again should not fail; if it does, the put fails and
	// writeFile removes the temporary file with the value's first part.
	if err := b.setDirect(f, false); err != nil {
		return err
	}
	_, err := f.WriteAt(value[n:], int64(n))
	return err
}
