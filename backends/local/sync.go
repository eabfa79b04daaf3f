package local

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/healstore/healstore/backends"
	"golang.org/x/sys/unix"
)

var _ backends.Syncer = (*Backend)(nil)

// PutNoSync implements backends.Syncer: Put without the two fsyncs (the
// file before its rename, the directory after). The value reaches the disk
// with the next syncfs(2) of the file system, which Sync runs.
func (b *Backend) PutNoSync(ctx context.Context, key string, value []byte) error {
	if err := b.begin(ctx, "put", key, true); err != nil {
		return err
	}
	b.deferred.register(key)
	err := b.put(key, value, false)
	b.deferred.finished(key, err == nil)
	return err
}

// Sync implements backends.Syncer. It flushes the whole file system the
// backend lives on with one syncfs(2): on a disk the backend shares with
// other busy writers it waits for their dirty data too, but it makes any
// number of values durable for the price of one journal commit, where
// fsyncing each file and its directory costs two calls per value.
//
// Concurrent Syncs share rounds: a Sync waits for the round in progress
// and starts a new one only if that round began before its values were
// written. syncfs reports a write-back error that struck any file of the
// file system since the previous round (Linux 5.8 and later); as the error
// does not say which file, every value written but not yet synced when it
// is reported counts as lost, and every Sync naming one of them fails.
func (b *Backend) Sync(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if err := b.begin(ctx, "sync", "", false); err != nil {
		return err
	}
	key, err := b.deferred.wait(ctx, keys)
	if err != nil {
		return backends.Wrap(b.name, "sync", key, kindOf(err), err)
	}
	return nil
}

// syncState tracks the values PutNoSync wrote until a syncfs round makes
// them durable.
type syncState struct {
	root   *os.File             // the data directory, held open: syncfs(2) reports errors per open file
	syncfs func(*os.File) error // the round's system call; tests replace it

	mu      sync.Mutex
	written uint64                // PutNoSyncs completed so far: a value's sequence number
	durable uint64                // every value numbered at most this is durable or lost
	pending map[string]pendingPut // values not yet durable, by key
	lost    map[string]error      // values a failed round may have lost, by key
	round   *syncRound            // the round in progress, if any
}

type pendingPut struct {
	seq     uint64 // number of the last completed write not yet durable; 0 if none
	writing int    // writes of the key in progress
}

type syncRound struct {
	upTo uint64 // values numbered at most this were written before the round began
	done chan struct{}
}

func (s *syncState) init(root string) error {
	f, err := os.Open(root)
	if err != nil {
		return err
	}
	s.root = f
	s.syncfs = syncfs
	s.pending = map[string]pendingPut{}
	s.lost = map[string]error{}
	return nil
}

// syncfs flushes the file system f lives on. Control keeps f's descriptor
// from being closed and reused while the call runs.
func syncfs(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Syncfs(int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("syncfs %s: %w", f.Name(), serr)
	}
	return nil
}

// close waits for the round in progress and releases the directory.
func (s *syncState) close() {
	s.mu.Lock()
	r := s.round
	s.mu.Unlock()
	if r != nil {
		<-r.done
	}
	if s.root != nil {
		s.root.Close()
	}
}

// register notes that a deferred write of key begins. It is pending from
// now, before any of its bytes are written, so that a write-back error a
// round reports while the write is still going on counts against it too.
func (s *syncState) register(key string) {
	s.mu.Lock()
	p := s.pending[key]
	p.writing++
	s.pending[key] = p
	s.mu.Unlock()
}

// finished records the end of a deferred write of key.
func (s *syncState) finished(key string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, found := s.pending[key]
	if !found {
		return // a failed round already counted it lost
	}
	p.writing--
	if ok {
		s.written++
		p.seq = s.written
		// A value written after a failed round is not lost; a Sync
		// naming key is about this value now.
		delete(s.lost, key)
	}
	if p.seq == 0 && p.writing == 0 {
		delete(s.pending, key)
		return
	}
	s.pending[key] = p
}

// forget drops what is known of key (it was deleted).
func (s *syncState) forget(key string) {
	s.mu.Lock()
	if p, ok := s.pending[key]; ok && p.writing == 0 {
		delete(s.pending, key)
	}
	delete(s.lost, key)
	s.mu.Unlock()
}

// wait returns once the values of keys are durable, or the first key found
// lost with the error of the round that lost it.
func (s *syncState) wait(ctx context.Context, keys []string) (string, error) {
	s.mu.Lock()
	for {
		var need uint64
		for _, k := range keys {
			if err, ok := s.lost[k]; ok {
				s.mu.Unlock()
				return k, err
			}
			if p, ok := s.pending[k]; ok && p.seq > need {
				need = p.seq
			}
		}
		if need <= s.durable {
			s.mu.Unlock()
			return "", nil
		}
		r := s.round
		if r == nil {
			r = &syncRound{upTo: s.written, done: make(chan struct{})}
			s.round = r
			go s.run(r)
		}
		s.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		s.mu.Lock()
	}
}

// run performs one round. It runs on its own goroutine so that a caller
// whose ctx ends can leave while the system call goes on.
func (s *syncState) run(r *syncRound) {
	err := s.syncfs(s.root)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, p := range s.pending {
		switch {
		case err != nil:
			// The error may come from any value written so far,
			// including writes still in progress: all count as lost.
			s.lost[k] = err
			delete(s.pending, k)
		case p.seq <= r.upTo && p.writing == 0:
			delete(s.pending, k)
		case p.seq <= r.upTo:
			p.seq = 0 // durable; another write of the key is under way
			s.pending[k] = p
		}
	}
	s.durable = r.upTo
	s.round = nil
	close(r.done)
}
