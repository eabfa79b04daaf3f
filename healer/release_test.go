package healer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/healstore/healstore/healer/provision"
	"github.com/healstore/healstore/metastore"
)

// A provisioned backend that goes down and is replaced gives its capacity
// back once it has been replaced for ReleaseReplacedAfter (never, when
// negative), and only then; objects stay readable throughout.
func TestReplacedBackendIsReleased(t *testing.T) {
	for _, tc := range []struct {
		name    string
		after   time.Duration
		release bool
	}{{"after delay", time.Hour, true}, {"never", -1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			var local *provision.Local
			e := newEnv(t, envOpts{backends: 6, cfg: Config{Grace: 0, SuspectAfter: 1, ReleaseReplacedAfter: Duration(tc.after)},
				provs: func(e *env) []provision.Provisioner {
					l, err := provision.NewLocal(provision.LocalConfig{Dir: filepath.Join(e.dir, "prov")})
					if err != nil {
						t.Fatal(err)
					}
					local = l
					return []provision.Provisioner{l}
				}})
			ctx := context.Background()
			now := time.Now()
			e.h.now = func() time.Time { return now }
			objs := e.fill(10, 40<<10)
			e.probe()
			victim, err := e.h.provision(ctx, false, "")
			if err != nil {
				t.Fatal(err)
			}
			for i := range 10 { // some land on the provisioned backend
				data := make([]byte, 30<<10)
				for j := range data {
					data[j] = byte(i + j)
				}
				n := "later-" + string(rune('a'+i))
				e.put(n, data)
				objs[n] = data
			}
			if e.onBackend(victim) == 0 {
				t.Fatal("provisioned backend holds nothing")
			}
			dir := filepath.Join(local.Dir(), victim)
			if _, err := os.Stat(dir); err != nil {
				t.Fatalf("provisioned backend's directory: %v", err)
			}

			e.kill(victim)
			e.probe() // grace 0: down at once, its stripes queued
			if rep := e.repairAll(); rep.Failed != 0 || rep.Remaining != 0 {
				t.Fatalf("repair %+v", rep)
			}
			e.probe()
			if st := e.state(victim); st != metastore.StateReplaced {
				t.Fatalf("victim is %s, want replaced", st)
			}
			if _, err := os.Stat(dir); err != nil {
				t.Fatalf("released before the delay: %v", err)
			}

			now = now.Add(2 * time.Hour)
			e.probe()
			_, statErr := os.Stat(dir)
			_, metaErr := e.meta.GetMeta(ctx, provisionedMeta(victim))
			if tc.release {
				if !errors.Is(statErr, os.ErrNotExist) {
					t.Fatalf("replaced backend's directory not released: %v", statErr)
				}
				if !errors.Is(metaErr, metastore.ErrNotFound) {
					t.Fatalf("released backend still recorded as provisioned: %v", metaErr)
				}
			} else if statErr != nil || metaErr != nil {
				t.Fatalf("release_replaced_after < 0 released anyway: dir %v, record %v", statErr, metaErr)
			}
			if st := e.state(victim); st != metastore.StateReplaced {
				t.Fatalf("victim is %s after release, want replaced", st)
			}
			e.checkFull()
			e.checkObjects(objs)
		})
	}
}
