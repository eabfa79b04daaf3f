package local

import (
	"errors"
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Large values move between memory and the disk with O_DIRECT: the page
// cache would cost a copy of every byte and, on a VM whose host takes back
// the guest's freed memory, a fault on every page cache page it allocates.
// A put of one 16 MiB block writes 22 MiB of shards (10+4), and the page
// cache copy was half of a put's CPU time. The store keeps no use for
// those pages: it reads a shard again only to repair or when its own
// block cache misses.
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

// directOK says whether p may be written or read with O_DIRECT.
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
	if err := setDirect(f, false); err != nil {
		return err
	}
	_, err := f.WriteAt(value[n:], int64(n))
	return err
}

// readWhole reads the file at p into a buffer of its size: with O_DIRECT
// when the backend and the size allow it, else with one read through the
// page cache (os.ReadFile allocates more and reads again to see the end).
func (b *Backend) readWhole(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := int(fi.Size())
	if size >= dioMin && !b.noDirect.Load() {
		// A direct read asks for whole blocks and gets the file's end.
		buf := make([]byte, (size+dioAlign-1)&^(dioAlign-1))
		direct := directOK(buf)
		if direct && b.setDirect(f, true) != nil {
			b.noDirect.Store(true) // this file system has no direct I/O
			direct = false
		}
		if direct {
			n, err := readAt(f, buf, 0)
			if err == nil {
				return buf[:min(n, size)], nil
			}
			if !errors.Is(err, syscall.EINVAL) {
				return nil, err
			}
			// Direct I/O with other alignment rules: read through the
			// page cache from now on.
			b.noDirect.Store(true)
			if err := setDirect(f, false); err != nil {
				return nil, err
			}
		}
	}
	buf := make([]byte, size)
	n, err := readAt(f, buf, 0)
	// A value replaced by a shorter one since the Stat reads short (Put
	// renames a new file over the old one, so f still reads the old one
	// whole; only a file changed in place can shrink).
	return buf[:n], err
}

// readAt reads from off until buf is full or the file ends, and says how
// many bytes it got. The end of the file is not an error.
func readAt(f *os.File, buf []byte, off int64) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := f.ReadAt(buf[n:], off+int64(n))
		n += k
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
