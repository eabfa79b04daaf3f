package local

import (
	"context"
	"errors"
	"path/filepath"
	"sync"

	"github.com/healstore/healstore/backends"
)

var _ backends.Syncer = (*Backend)(nil)

// syncWorkers bounds the fsyncs one round runs at once without AIO.
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
// Every file and directory of the round is fsynced at once (syncPaths:
// through AIO where the kernel offers it), the files and their directories
// in parallel: each fsync makes its own part durable (the data, the entry),
// and the round reports only when all are done. When fan-out directories
// were made since the root was last fsynced, the root is fsynced too (their
// entries in it).
func (b *Backend) fsyncValues(all []string) map[string]error {
	dirs := map[string][]string{}
	paths := make([]string, 0, 2*len(all)+1)
	// Packed values need their pack fsynced: one fsync for all of them.
	packed := map[string][]string{}
	keys := make([]string, 0, len(all))
	for _, k := range all {
		if l, ok := b.packs.known(k); ok {
			packed[l.p.path] = append(packed[l.p.path], k)
			continue
		}
		keys = append(keys, k)
	}
	for _, k := range keys {
		d := b.dirOf(k)
		dirs[d] = append(dirs[d], k)
		paths = append(paths, filepath.Join(d, fileName(k)))
	}
	dirKeys := make([][]string, 0, len(dirs))
	for d, ks := range dirs {
		paths = append(paths, d)
		dirKeys = append(dirKeys, ks)
	}
	// The generation is read before the root's fsync begins (see makeDir).
	b.dirMu.Lock()
	gen, rootDue := b.dirGen, b.rootGen < b.dirGen
	b.dirMu.Unlock()
	if rootDue {
		paths = append(paths, b.root)
	}
	nfile := len(paths)
	packKeys := make([][]string, 0, len(packed))
	for p, ks := range packed {
		paths = append(paths, p)
		packKeys = append(packKeys, ks)
	}
	perrs := b.syncPaths(paths)
	errs := map[string]error{}
	fail := func(err error, keys ...string) {
		for _, k := range keys {
			if errs[k] == nil {
				errs[k] = err
			}
		}
	}
	for i, k := range keys {
		if perrs[i] != nil {
			fail(perrs[i], k)
		}
	}
	for j, ks := range dirKeys {
		if err := perrs[len(keys)+j]; err != nil {
			fail(err, ks...)
		}
	}
	for j, ks := range packKeys {
		if err := perrs[nfile+j]; err != nil {
			fail(err, ks...)
		}
	}
	if rootDue {
		if err := perrs[nfile-1]; err != nil {
			// A failure fails every value of the round (which of them
			// sit in a new directory is not tracked); the next round
			// tries the root again.
			fail(err, keys...)
		} else {
			b.dirMu.Lock()
			b.rootGen = max(b.rootGen, gen)
			b.dirMu.Unlock()
		}
	}
	return errs
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
