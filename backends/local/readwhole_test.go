package local

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/healstore/healstore/backends"
	"golang.org/x/sys/unix"
)

// A signal interrupting the fstat of a Get (network and FUSE file systems
// return EINTR when Go's preemption signal arrives) is retried, as
// os.File.Stat did, not reported as the backend failing.
func TestGetRetriesInterruptedFstat(t *testing.T) {
	b := filesOnly(openT(t, 0))
	ctx := context.Background()
	if err := b.Put(ctx, "k", []byte("value")); err != nil {
		t.Fatal(err)
	}
	calls := 0
	b.fstat = func(fd int, st *unix.Stat_t) error {
		calls++
		if calls <= 2 {
			return unix.EINTR
		}
		return unix.Fstat(fd, st)
	}
	v, err := b.Get(ctx, "k")
	if err != nil || !bytes.Equal(v, []byte("value")) {
		t.Fatalf("Get after interrupted fstat: %q, %v", v, err)
	}
	// Another error is still the backend's.
	b.fstat = func(int, *unix.Stat_t) error { return unix.EIO }
	if _, err := b.Get(ctx, "k"); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("Get with fstat failing EIO: %v, want ErrUnavailable", err)
	}
}
