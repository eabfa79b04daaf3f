//go:build linux

package healstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// TestDaemonObjectsSocketNeverOpenToOthers: the objects socket is never
// reachable at its path with a mode other than 0600. Bound there
// directly, it has the umask's mode (0777 under umask 0, 0775 under the
// common 0002) until a chmod, and a connection made in that window stays
// open after it, with the store's objects behind it. The kernel's own
// record of the metadata directory (inotify) says whether the socket's
// mode changed after it appeared there.
func TestDaemonObjectsSocketNeverOpenToOthers(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	defer syscall.Close(fd)
	if _, err := syscall.InotifyAddWatch(fd, hs.cfg.MetadataDir,
		syscall.IN_CREATE|syscall.IN_MOVED_TO|syscall.IN_ATTRIB); err != nil {
		t.Fatal(err)
	}
	// Twice: the second start finds the first's socket, as after a crash.
	for range 2 {
		ln, ok, err := hs.s.listenObjects()
		if err != nil || !ok {
			t.Fatalf("listen: %v %v", ok, err)
		}
		ln.Close()
	}
	var events []string
	buf := make([]byte, 64<<10)
	for {
		n, err := syscall.Read(fd, buf)
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := string(bytes.TrimRight(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			if name != ObjectsSocketName {
				continue
			}
			switch {
			case ev.Mask&syscall.IN_ATTRIB != 0:
				events = append(events, "attrib")
			case ev.Mask&syscall.IN_CREATE != 0:
				events = append(events, "create")
			case ev.Mask&syscall.IN_MOVED_TO != 0:
				events = append(events, "moved_to")
			}
		}
	}
	if len(events) == 0 {
		t.Fatal("no socket appeared in the metadata directory")
	}
	for _, e := range events {
		if e == "attrib" {
			t.Fatalf("the socket's mode changed while it was at its path (events %v): it was reachable with the umask's mode before", events)
		}
	}
	if ents, _ := os.ReadDir(hs.cfg.MetadataDir); len(ents) > 0 {
		for _, e := range ents {
			if e.Name() != ObjectsSocketName && e.Type()&os.ModeSocket != 0 {
				t.Errorf("socket %s left in the metadata directory", e.Name())
			}
		}
	}

	// And a daemon started after all that serves on it.
	startDaemon(t, hs)
	sock := filepath.Join(hs.cfg.MetadataDir, ObjectsSocketName)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("objects socket: %v %v", fi, err)
	}
	d, err := DialDaemonObjects(context.Background(), hs.cfg, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
}
