package healstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healstore/healstore/healer"
)

// TestDaemonAPINeedsToken: the daemon's API changes the store only for a
// client with its token, which it writes 0600 in the store's dir; reading
// (status, metrics) needs none. Before, any user of the machine (or host
// of the network, on a private address) could drain, add and remove
// backends of the store.
func TestDaemonAPINeedsToken(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	t.Cleanup(func() { // after the daemon stopped
		if _, err := os.Stat(filepath.Join(hs.cfg.Dir, DaemonTokenFile)); !os.IsNotExist(err) {
			t.Errorf("token file left after the daemon stopped: %v", err)
		}
	})
	addr := startDaemon(t, hs)
	ctx := context.Background()
	path := filepath.Join(hs.cfg.Dir, DaemonTokenFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	token, err := DaemonToken(hs.cfg)
	if err != nil || len(token) != 64 {
		t.Fatalf("token %q: %v", token, err)
	}
	for _, c := range []*healer.Client{{Addr: addr}, {Addr: addr, Token: strings.Repeat("0", 64)}} {
		err := c.Drain(ctx, "b1")
		if err == nil || !strings.Contains(err.Error(), DaemonTokenFile) {
			t.Fatalf("drain with token %q: %v, want a refusal naming the token file", c.Token, err)
		}
		if _, err := c.Status(ctx); err != nil {
			t.Fatalf("status without the token: %v", err)
		}
	}
	if st, err := hs.s.HealStatus(ctx); err != nil || st.Backends[0].State != "up" {
		t.Fatalf("b1 after refused drains: %+v %v", st, err)
	}
	if _, err := (&healer.Client{Addr: addr, Token: token}).SetSettings(ctx, nil, nil); err != nil {
		t.Fatalf("settings with the token: %v", err)
	}
}
