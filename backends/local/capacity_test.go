package local

import (
	"context"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCapacityNamesItsFileSystem: backends on one file system report the
// same Device, so a sum of capacities (the mount's statfs) counts that
// disk once; /dev/shm is another file system and reports another. A
// backend with a quota has space of its own and names none.
func TestCapacityNamesItsFileSystem(t *testing.T) {
	ctx := context.Background()
	device := func(b *Backend) string {
		t.Helper()
		defer b.Close()
		r, err := b.Probe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r.Capacity.Device
	}
	a, b := device(openT(t, 0)), device(openT(t, 0))
	if a == "" || a != b {
		t.Fatalf("two backends under one temporary directory: devices %q and %q", a, b)
	}
	// A quota on that file system names it too, with its figures.
	qb := openT(t, 1<<30)
	r, err := qb.Probe(ctx)
	qb.Close()
	if err != nil {
		t.Fatal(err)
	}
	if q := r.Capacity; q.Device != a || q.Limit != 1<<30 || q.DeviceTotal <= 0 || q.DeviceFree <= 0 || q.Free > q.DeviceFree {
		t.Fatalf("backend with a quota: %+v; want device %q with the file system's figures", q, a)
	}
	var tmp, shm unix.Statfs_t
	if unix.Statfs(t.TempDir(), &tmp) != nil || unix.Statfs("/dev/shm", &shm) != nil || tmp.Fsid == shm.Fsid {
		t.Log("no second file system with its own id to compare with")
		return
	}
	dir, err := os.MkdirTemp("/dev/shm", "healstore-capacity-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	other, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	if d := device(other); d == "" || d == a {
		t.Fatalf("backend on /dev/shm: device %q, the temporary directory's %q", d, a)
	}
}
