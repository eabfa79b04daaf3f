package local

import (
	"os"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sync rounds hand their fsyncs to the kernel all at once through Linux
// native AIO (io_submit(2) with IOCB_CMD_FSYNC, Linux 4.18 and later): the
// kernel runs each as vfs_fsync in a worker thread, so the fsyncs of a
// round (and of the rounds of every backend in the process) run in
// parallel, and no goroutine sits in a blocking fsync call. A goroutine in
// a blocking system call keeps its P until the runtime's monitor takes it
// back (20 µs to 10 ms later), so with GOMAXPROCS 2 the rounds' fsyncs ran
// about two at a time whatever the number of goroutines. Completions are
// signalled on an eventfd that the runtime's poller watches.
//
// An fsync through AIO is the same vfs_fsync as fsync(2) and reports the
// same errors. Where AIO is not available (io_setup fails: an old kernel,
// a seccomp filter, the system's aio-max-nr reached), the fsyncs run as
// system calls on parallel goroutines instead.

const (
	aioCmdFsync  = 2      // IOCB_CMD_FSYNC
	aioFlagResfd = 1 << 0 // IOCB_FLAG_RESFD: signal aio_resfd on completion
	// aioDepth bounds the fsyncs in flight in the process (the size of
	// the one AIO context); a round with more submits them in turns.
	aioDepth = 256
)

// aioIocb is struct iocb (linux/aio_abi.h), little-endian layout.
type aioIocb struct {
	data      uint64
	key       uint32
	rwFlags   int32
	opcode    uint16
	reqprio   int16
	fildes    uint32
	buf       uint64
	nbytes    uint64
	offset    int64
	reserved2 uint64
	flags     uint32
	resfd     uint32
}

// aioEvent is struct io_event.
type aioEvent struct {
	data uint64
	obj  uint64
	res  int64
	res2 int64
}

// aioEngine is the process's AIO context and the goroutine that reaps its
// completions.
type aioEngine struct {
	ctx   uintptr
	efd   *os.File // eventfd, non-blocking, read through the poller
	resfd uint32   // its descriptor (efd.Fd would make it blocking)
	slots chan struct{}

	mu   sync.Mutex
	next uint64
	reqs map[uint64]aioReq // in flight, by iocb data
}

type aioReq struct {
	batch *aioBatch
	i     int
}

// aioBatch is one caller's fsyncs.
type aioBatch struct {
	mu   sync.Mutex
	left int
	errs []error
	done chan struct{}
}

func (b *aioBatch) finish(i int, err error) {
	b.mu.Lock()
	b.errs[i] = err
	b.left--
	last := b.left == 0
	b.mu.Unlock()
	if last {
		close(b.done)
	}
}

var (
	aioOnce   sync.Once
	aioShared *aioEngine // nil when AIO is not available
)

// aioEngineOrNil returns the process's AIO engine, starting it on first
// use, or nil when AIO is not available.
func aioEngineOrNil() *aioEngine {
	aioOnce.Do(func() {
		var probe uint16 = 1
		if *(*byte)(unsafe.Pointer(&probe)) != 1 {
			return // big-endian: aioIocb's layout does not match
		}
		var ctx uintptr
		if _, _, e := unix.Syscall(unix.SYS_IO_SETUP, aioDepth, uintptr(unsafe.Pointer(&ctx)), 0); e != 0 {
			return
		}
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			unix.Syscall(unix.SYS_IO_DESTROY, ctx, 0, 0)
			return
		}
		e := &aioEngine{
			ctx:   ctx,
			efd:   os.NewFile(uintptr(fd), "aio-eventfd"),
			resfd: uint32(fd),
			slots: make(chan struct{}, aioDepth),
			reqs:  map[uint64]aioReq{},
		}
		go e.reap()
		aioShared = e
	})
	return aioShared
}

// fsync fsyncs every fd at once and returns each one's error. The fds must
// stay open until it returns.
func (e *aioEngine) fsync(fds []int) []error {
	b := &aioBatch{left: len(fds), errs: make([]error, len(fds)), done: make(chan struct{})}
	if len(fds) == 0 {
		return b.errs
	}
	cbs := make([]aioIocb, len(fds))
	ptrs := make([]*aioIocb, len(fds))
	for i := 0; i < len(fds); {
		// Take a slot for each request, as many as are free, never
		// waiting for one: the context is shared by every backend of
		// the process, and a disk whose fsyncs hang keeps its slots.
		n := 0
		for i+n < len(fds) {
			select {
			case e.slots <- struct{}{}:
				n++
				continue
			default:
			}
			break
		}
		if n == 0 {
			// Every slot is in use: the rest run as system calls on
			// goroutines, as without AIO, so one stuck backend never
			// holds up the sync rounds of the others.
			for j, err := range fsyncParallel(fds[i:]) {
				b.finish(i+j, err)
			}
			break
		}
		e.mu.Lock()
		for j := i; j < i+n; j++ {
			e.next++
			e.reqs[e.next] = aioReq{batch: b, i: j}
			cbs[j] = aioIocb{data: e.next, opcode: aioCmdFsync, fildes: uint32(fds[j]),
				flags: aioFlagResfd, resfd: e.resfd}
			ptrs[j] = &cbs[j]
		}
		e.mu.Unlock()
		done := e.submit(ptrs[i : i+n])
		runtime.KeepAlive(cbs)
		// What the kernel refused (none on Linux 4.18 and later, but a
		// descriptor that cannot be fsynced, or a kernel without AIO
		// fsync, says EINVAL) is fsynced here, in parallel.
		if done < n {
			e.mu.Lock()
			for j := i + done; j < i+n; j++ {
				delete(e.reqs, cbs[j].data)
				<-e.slots
			}
			e.mu.Unlock()
			for k, err := range fsyncParallel(fds[i+done : i+n]) {
				b.finish(i+done+k, err)
			}
		}
		i += n
	}
	<-b.done
	return b.errs
}

// submit submits the iocbs and returns how many the kernel took (a prefix).
func (e *aioEngine) submit(ptrs []*aioIocb) int {
	done := 0
	for done < len(ptrs) {
		n, _, errno := unix.Syscall(unix.SYS_IO_SUBMIT, e.ctx, uintptr(len(ptrs)-done), uintptr(unsafe.Pointer(&ptrs[done])))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 || n == 0 {
			break
		}
		done += int(n)
	}
	return done
}

// reap waits for completions and hands them to their batches. It blocks
// in the poller (on the eventfd), not in a system call.
func (e *aioEngine) reap() {
	var buf [8]byte
	evs := make([]aioEvent, 64)
	var zero unix.Timespec
	wait := unix.Timespec{Nsec: 10e6}
	for {
		timeout := &zero
		if _, err := e.efd.Read(buf[:]); err != nil {
			// Not expected; wait in io_getevents itself instead, so
			// completions are never left behind.
			timeout = &wait
		}
		for {
			min := 0
			if timeout != &zero {
				min = 1
			}
			n, _, errno := unix.Syscall6(unix.SYS_IO_GETEVENTS, e.ctx, uintptr(min), uintptr(len(evs)),
				uintptr(unsafe.Pointer(&evs[0])), uintptr(unsafe.Pointer(timeout)), 0)
			if errno == unix.EINTR {
				continue
			}
			if errno != 0 || n == 0 {
				break
			}
			for _, ev := range evs[:n] {
				e.mu.Lock()
				r, ok := e.reqs[ev.data]
				delete(e.reqs, ev.data)
				e.mu.Unlock()
				if !ok {
					continue
				}
				<-e.slots
				var err error
				if ev.res < 0 {
					err = unix.Errno(-ev.res)
				}
				r.batch.finish(r.i, err)
			}
			if int(n) < len(evs) {
				break
			}
		}
	}
}

// syncPaths opens and fsyncs every path (files and directories) at once,
// and returns each one's error (a *os.PathError: open or fsync). A
// write-back error that struck a file before it was opened here, and that
// nobody has reported yet, is reported to this descriptor too (Linux 4.13
// and later).
//
// The paths are opened and fsynced syncChunk at a time, so a long round
// holds a bounded number of descriptors (running out of them would look
// like lost values).
func syncPaths(paths []string) []error {
	errs := make([]error, len(paths))
	for lo := 0; lo < len(paths); lo += syncChunk {
		hi := min(lo+syncChunk, len(paths))
		syncPathsChunk(paths[lo:hi], errs[lo:hi])
	}
	return errs
}

// syncChunk bounds the descriptors one round holds open at once.
const syncChunk = 64

// syncPathsChunk is syncPaths for at most syncChunk paths, errors into errs.
func syncPathsChunk(paths []string, errs []error) {
	fds := make([]int, 0, len(paths))
	idx := make([]int, 0, len(paths))
	for i, p := range paths {
		fd, err := openRetry(p)
		if err != nil {
			errs[i] = &os.PathError{Op: "open", Path: p, Err: err}
			continue
		}
		fds = append(fds, fd)
		idx = append(idx, i)
	}
	var ferrs []error
	if e := aioEngineOrNil(); e != nil {
		ferrs = e.fsync(fds)
	} else {
		ferrs = fsyncParallel(fds)
	}
	for j, fd := range fds {
		unix.Close(fd)
		if ferrs[j] != nil {
			errs[idx[j]] = &os.PathError{Op: "fsync", Path: paths[idx[j]], Err: ferrs[j]}
		}
	}
}

// openRetry opens path for fsync, retrying when a signal interrupts the
// open (network and FUSE file systems return EINTR when Go's preemption
// signal arrives; os.Open retries the same way).
func openRetry(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// fsyncRetry is fsync(2), retried on EINTR as os.File.Sync does.
func fsyncRetry(fd int) error {
	for {
		if err := unix.Fsync(fd); err != unix.EINTR {
			return err
		}
	}
}

// fsyncParallel fsyncs the fds on up to syncWorkers goroutines (this one
// included).
func fsyncParallel(fds []int) []error {
	errs := make([]error, len(fds))
	var next sync.Mutex
	i := 0
	work := func() {
		for {
			next.Lock()
			j := i
			i++
			next.Unlock()
			if j >= len(fds) {
				return
			}
			errs[j] = fsyncRetry(fds[j])
		}
	}
	var wg sync.WaitGroup
	for range min(syncWorkers, len(fds)) - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work()
		}()
	}
	work()
	wg.Wait()
	return errs
}
