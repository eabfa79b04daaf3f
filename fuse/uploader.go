package fuse

import (
	"sync"
	"time"
)

// uploader sends dirty blocks to healstore in the background with a few
// workers. A block goes at once when it is urgent (a sequential writer
// filled it, or a flush waits for it), when the write-back cache is under
// pressure (oldest first), or when it has been dirty for WritebackDelay.
type uploader struct {
	f     *filesystem
	delay time.Duration

	mu      sync.Mutex
	cond    *sync.Cond
	items   map[blockKey]*upItem
	stopped bool
	wg      sync.WaitGroup
}

type upItem struct {
	since     time.Time
	urgent    bool
	notBefore time.Time
}

func newUploader(f *filesystem, workers int, delay time.Duration) *uploader {
	u := &uploader{f: f, delay: delay, items: map[blockKey]*upItem{}}
	u.cond = sync.NewCond(&u.mu)
	for range workers {
		u.wg.Add(1)
		go u.work()
	}
	// Wake the workers now and then: ages pass and retry times come
	// without anyone signalling.
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-f.bg.Done():
				u.mu.Lock()
				u.stopped = true
				u.cond.Broadcast()
				u.mu.Unlock()
				return
			case <-t.C:
				u.kick()
			}
		}
	}()
	return u
}

// add queues block k (idempotent); urgent sends it without waiting.
func (u *uploader) add(k blockKey, urgent bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	it := u.items[k]
	if it == nil {
		it = &upItem{since: time.Now()}
		u.items[k] = it
	}
	if urgent {
		it.urgent = true
		it.notBefore = time.Time{}
		u.cond.Signal()
	}
}

// retry queues k again after a failed upload, not before delay has passed.
func (u *uploader) retry(k blockKey, delay time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.items[k] = &upItem{since: time.Now(), urgent: true, notBefore: time.Now().Add(delay)}
}

// kick wakes the workers to look again (the cache filled up, time passed).
func (u *uploader) kick() {
	u.mu.Lock()
	u.cond.Broadcast()
	u.mu.Unlock()
}

// next picks the block to upload now, waiting until there is one. ok is
// false when the filesystem is shutting down.
func (u *uploader) next() (blockKey, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for {
		if u.stopped {
			return blockKey{}, false
		}
		now := time.Now()
		pressure := u.f.budget.pressure()
		var best blockKey
		var bestIt *upItem
		for k, it := range u.items {
			if now.Before(it.notBefore) {
				continue
			}
			if !it.urgent && !pressure && now.Sub(it.since) < u.delay {
				continue
			}
			if bestIt == nil || (it.urgent && !bestIt.urgent) ||
				(it.urgent == bestIt.urgent && it.since.Before(bestIt.since)) {
				best, bestIt = k, it
			}
		}
		if bestIt != nil {
			delete(u.items, best)
			return best, true
		}
		u.cond.Wait()
	}
}

func (u *uploader) work() {
	defer u.wg.Done()
	for {
		k, ok := u.next()
		if !ok {
			return
		}
		u.f.upload(k)
	}
}

// wait returns when every worker has stopped (after f.bg is cancelled).
func (u *uploader) wait() { u.wg.Wait() }
