package healstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
)

// markerGets counts the identity marker reads of backends it wraps, and
// holds each until every wrapped backend has asked (or a while passed):
// reads made one after another never all get in.
type markerGets struct {
	mu      sync.Mutex
	asked   map[string]bool
	want    int
	allIn   chan struct{}
	overlap bool
}

type markerGetBackend struct {
	backends.Backend
	g *markerGets
}

func (b markerGetBackend) Get(ctx context.Context, key string) ([]byte, error) {
	if key == MarkerKey {
		g := b.g
		g.mu.Lock()
		g.asked[b.Name()] = true
		if len(g.asked) == g.want {
			g.overlap = true
			close(g.allIn)
		}
		g.mu.Unlock()
		select {
		case <-g.allIn:
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return b.Backend.Get(ctx, key)
}

// Opening a store reads every backend's identity marker at once, and not
// from a backend that did not answer its probe: each such read waited out
// the backend's call deadline (30 s) in turn, so with two hung S3
// servers every command took more than a minute before it began.
func TestMarkersReadAtOnceSkippingSilentBackends(t *testing.T) {
	s := newTestStore(t, testOpts{})
	g := &markerGets{asked: map[string]bool{}, want: 5, allIn: make(chan struct{})}
	for _, name := range []string{"b0", "b1", "b2", "b3", "b4"} {
		setBackend(t, s, name, func(b backends.Backend) backends.Backend { return markerGetBackend{b, g} })
	}
	// b5 did not answer its probe when the store opened.
	silent := s.handleOf("b5")
	silent.mu.Lock()
	silent.probeErr = backends.Errorf("b5", "probe", "", backends.ErrUnavailable, "no answer")
	silent.mu.Unlock()
	setBackend(t, s, "b5", func(b backends.Backend) backends.Backend { return markerGetBackend{b, g} })

	if err := s.writeMarkers(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.asked["b5"] {
		t.Error("the marker of a backend that did not answer its probe was read")
	}
	if !g.overlap {
		t.Errorf("marker reads did not overlap: %d of 5 in flight at once", len(g.asked))
	}
}
