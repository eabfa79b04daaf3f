package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
)

// killChildEnv names the directory a child of TestPacksSurviveSIGKILL
// writes to.
const killChildEnv = "HEALSTORE_PACK_KILL_DIR"

// killValue is the value of version ver of key: 1 byte to 150 KB, from a
// stream seeded by both, so a record of another key or version never
// passes for it.
func killValue(key string, ver int) []byte {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", key, ver)
	seed := h.Sum64()
	r := rand.New(rand.NewPCG(seed, seed>>7))
	v := make([]byte, 1+r.IntN(150_000))
	for i := range v {
		v[i] = byte(r.Uint32())
	}
	return v
}

// TestPacksSurviveSIGKILL runs a child process that puts, overwrites and
// deletes values (with a checkpoint every 16 appends), saying when it
// begins and when it has done each, and SIGKILLs it at random moments.
// After each kill it opens the backend and checks every key: a value
// whose Put returned reads back identical, a key whose Delete returned
// stays deleted, and a key caught in the middle is either way, never
// anything else; List agrees. Some Opens must have started from a
// checkpoint, reading fewer headers than the records written, or the
// checkpoints went untested.
func TestPacksSurviveSIGKILL(t *testing.T) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		killChild(t, dir)
		return
	}
	if testing.Short() {
		t.Skip("starts and kills child processes")
	}
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	// Per key, the versions it may read as now; -1: not there.
	may := map[string]map[int]bool{}
	ctx := context.Background()
	fromCheckpoint := 0
	for round := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPacksSurviveSIGKILL$", "-test.count=1")
		cmd.Env = append(os.Environ(), killChildEnv+"="+dir, "HEALSTORE_PACK_KILL_ROUND="+strconv.Itoa(round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wait := time.Duration(100+rng.IntN(300)) * time.Millisecond
		killer := time.AfterFunc(wait, func() { cmd.Process.Kill() })
		sc := bufio.NewScanner(out)
		lines := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 {
				continue // the test framework's own lines
			}
			ver, err := strconv.Atoi(f[2])
			if err != nil {
				continue
			}
			key := f[1]
			lines++
			switch f[0] {
			case "begin": // ver -1: a delete
				if may[key] == nil {
					may[key] = map[int]bool{-1: true}
				}
				may[key][ver] = true
			case "done":
				may[key] = map[int]bool{ver: true}
			}
		}
		killer.Stop()
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ProcessState.Sys() == nil || ee.ProcessState.String() != "signal: killed" {
			t.Fatalf("round %d: the child ended before the kill (%v) after %d lines", round, err, lines)
		}
		b, err := Open(specFor(dir))
		if err != nil {
			t.Fatalf("round %d: Open after the kill: %v", round, err)
		}
		records := 0
		for _, m := range may {
			records += len(m)
		}
		if b.packs.fromIndex && b.packs.headersRead < records {
			fromCheckpoint++
		}
		// List first: a Get drops a record it finds punched from the
		// index, and List must not need that.
		listed := map[string]bool{}
		if err := b.List(ctx, "", func(k string, _ int64) error { listed[k] = true; return nil }); err != nil {
			t.Fatalf("round %d: List: %v", round, err)
		}
		for key, m := range may {
			if listed[key] && len(m) == 1 && m[-1] {
				t.Fatalf("round %d: List names %s, deleted", round, key)
			}
			if !listed[key] && !m[-1] {
				t.Fatalf("round %d: List misses %s", round, key)
			}
		}
		for key, m := range may {
			got, err := b.Get(ctx, key)
			switch {
			case errors.Is(err, backends.ErrNotFound):
				if !m[-1] {
					t.Fatalf("round %d: %s is gone; it may only be at version %v", round, key, m)
				}
				may[key] = map[int]bool{-1: true}
			case err != nil:
				t.Fatalf("round %d: Get %s: %v", round, key, err)
			default:
				found := -2
				for ver := range m {
					if ver >= 0 && string(got) == string(killValue(key, ver)) {
						found = ver
					}
				}
				if found == -2 {
					t.Fatalf("round %d: %s reads as %d bytes that are none of its versions %v", round, key, len(got), m)
				}
				may[key] = map[int]bool{found: true}
			}
		}
		t.Logf("round %d: killed after %s, %d lines; Open from a checkpoint: %v, %d headers read",
			round, wait, lines, b.packs.fromIndex, b.packs.headersRead)
		crashClose(b) // the child's checkpoints, not this Close's, are under test
	}
	if fromCheckpoint == 0 {
		t.Fatal("no Open after a kill started from a checkpoint")
	}
}

// killChild writes until it is killed: puts of new keys, overwrites and
// deletes of earlier ones, each announced before it begins and after it
// returns.
func killChild(t *testing.T, dir string) {
	b, err := Open(specFor(dir))
	if err != nil {
		t.Fatal(err)
	}
	b.packs.mu.Lock()
	b.packs.ckptMin = 16
	b.packs.mu.Unlock()
	ctx := context.Background()
	round := os.Getenv("HEALSTORE_PACK_KILL_ROUND")
	vers := map[string]int{}
	var keys []string
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	for i := 0; ; i++ {
		switch {
		case len(keys) > 4 && i%5 == 0:
			k := keys[r.IntN(len(keys))]
			fmt.Printf("begin %s -1\n", k)
			if err := b.Delete(ctx, k); err != nil && !errors.Is(err, backends.ErrNotFound) {
				t.Fatal(err)
			}
			fmt.Printf("done %s -1\n", k)
		case len(keys) > 4 && i%7 == 0:
			k := keys[r.IntN(len(keys))]
			vers[k]++
			fmt.Printf("begin %s %d\n", k, vers[k])
			if err := b.Put(ctx, k, killValue(k, vers[k])); err != nil {
				t.Fatal(err)
			}
			fmt.Printf("done %s %d\n", k, vers[k])
		default:
			k := fmt.Sprintf("r%s-%d", round, i)
			keys = append(keys, k)
			fmt.Printf("begin %s 0\n", k)
			if err := b.Put(ctx, k, killValue(k, 0)); err != nil {
				t.Fatal(err)
			}
			fmt.Printf("done %s 0\n", k)
		}
	}
}
