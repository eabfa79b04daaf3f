package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/healstore/healstore/backends"
)

var _ backends.Syncer = (*Backend)(nil)

// syncWorkers bounds the directories one round fsyncs at once.
const syncWorkers = 16

// PutNoSync implements backends.Syncer: Put without its two fsyncs (the
// file before the rename, the directory after). A later Sync makes the
// value durable.
func (b *Backend) PutNoSync(ctx context.Context, key string, value []byte) error {
	if err := b.begin(ctx, "put", key, true); err != nil {
		return err
	}
	b.deferred.register(key)
	err := b.put(key, value, false)
	b.deferred.finished(key, err == nil)
	return err
}

// Sync implements backends.Syncer. A round fsyncs every value written
// without sync so far, and each directory that holds one, all in
// parallel: the file system's journal commits them together, where Put's
// file-then-directory fsyncs cost two commits one after the other per
// value. Concurrent Syncs share rounds: a Sync waits for the round in
// progress and starts a new one only if that round began before its
// values were written.
//
// Only the values' own files and directories are flushed, not the whole
// file system (syncfs(2)): on a disk shared with busy writers, their dirty
// data would otherwise delay every write.
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

// fsyncValues makes the files of keys and their directories durable. It
// returns the error of each key whose file or directory failed, a file
// that vanished included: Delete forgets a key before a round could miss
// its file, so a file missing here was removed behind the backend's back
// (a wiped disk), and its value is lost.
//
// When fan-out directories were made since the root was last fsynced, the
// root is fsynced too (their entries in it).
func (b *Backend) fsyncValues(keys []string) map[string]error {
	dirs := map[string][]string{}
	for _, k := range keys {
		d := b.dirOf(k)
		dirs[d] = append(dirs[d], k)
	}
	var mu sync.Mutex
	errs := map[string]error{}
	fail := func(err error, keys ...string) {
		mu.Lock()
		for _, k := range keys {
			errs[k] = err
		}
		mu.Unlock()
	}
	// One task per directory: its values' files, then the directory. On
	// a journalling file system (ext4) the first file's fsync commits the
	// directory's new entries with it, so the directory's own fsync is
	// cheap right after; running the two in parallel cost a goroutine per
	// value, and with busy cores each waited milliseconds for a thread.
	// Directories run in parallel; the last task runs on this goroutine,
	// so a round of one value starts no goroutine at all.
	tasks := make([]func(), 0, len(dirs)+1)
	if b.rootDue() {
		tasks = append(tasks, func() {
			// A failure fails every value of the round (which of
			// them sit in a new directory is not tracked); the next
			// round tries the root again.
			if err := b.syncRoot(); err != nil {
				fail(err, keys...)
			}
		})
	}
	for d, ks := range dirs {
		tasks = append(tasks, func() {
			for _, k := range ks {
				if err := fsyncPath(filepath.Join(d, fileName(k))); err != nil {
					fail(err, k)
				}
			}
			if err := b.fsyncDir(d); err != nil {
				fail(err, ks...)
			}
		})
	}
	sem := make(chan struct{}, syncWorkers)
	var wg sync.WaitGroup
	for i, fn := range tasks {
		if i == len(tasks)-1 {
			fn()
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn()
		}()
	}
	wg.Wait()
	return errs
}

// fsyncPath opens a file and fsyncs it. A write-back error that struck the
// file before it was opened, and that nobody has reported yet, is reported
// to this descriptor too (Linux 4.13 and later).
func fsyncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	return nil
}

// syncState tracks the values PutNoSync wrote until a round makes them
// durable.
type syncState struct {
	// flush makes the values of keys durable and returns the error of
	// each key it could not; Backend.fsyncValues, or a test's stand-in.
	flush func(keys []string) map[string]error

	mu      sync.Mutex
	written uint64                // PutNoSyncs completed so far: a value's sequence number
	durable uint64                // every value numbered at most this is durable or lost
	pending map[string]pendingPut // values not yet durable, by key
	lost    map[string]error      // values whose round failed, by key
	round   *syncRound            // the round in progress, if any
	closed  bool
}

type pendingPut struct {
	seq     uint64 // number of the last completed write not yet durable; 0 if none
	writing int    // writes of the key in progress
}

type syncRound struct {
	upTo uint64 // values numbered at most this were written before the round began
	done chan struct{}
}

func (s *syncState) init(flush func([]string) map[string]error) {
	s.flush = flush
	s.pending = map[string]pendingPut{}
	s.lost = map[string]error{}
}

// close waits for the round in progress.
func (s *syncState) close() {
	s.mu.Lock()
	s.closed = true
	r := s.round
	s.mu.Unlock()
	if r != nil {
		<-r.done
	}
}

// register notes that a deferred write of key begins.
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
	p := s.pending[key]
	p.writing--
	if ok {
		s.written++
		p.seq = s.written
		// A Sync naming key is about this new value now.
		delete(s.lost, key)
	}
	if p.seq == 0 && p.writing <= 0 {
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
// lost with the error that lost it.
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
			if s.closed {
				s.mu.Unlock()
				return "", errors.New("backend is closed")
			}
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
// whose ctx ends can leave while the fsyncs go on.
func (s *syncState) run(r *syncRound) {
	s.mu.Lock()
	var keys []string
	for k, p := range s.pending {
		if p.seq != 0 && p.seq <= r.upTo {
			keys = append(keys, k)
		}
	}
	s.mu.Unlock()
	errs := s.flush(keys)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		p, ok := s.pending[k]
		if !ok || p.seq > r.upTo || p.seq == 0 {
			continue // deleted, or written again meanwhile: a later round's
		}
		if err := errs[k]; err != nil {
			s.lost[k] = err
		}
		if p.writing > 0 {
			p.seq = 0 // that value is settled; another write of key is under way
			s.pending[k] = p
			continue
		}
		delete(s.pending, k)
	}
	s.durable = r.upTo
	s.round = nil
	close(r.done)
}
