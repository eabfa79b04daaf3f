package healstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// The crash test runs a child process (this test binary, re-executed with
// crashChildEnv set) that writes and deletes objects and reports each
// operation before it starts and once it is acknowledged. The parent
// SIGKILLs it at random moments, then checks invariant 1: every
// acknowledged write reads back byte-identical, an unacknowledged one left
// either the old object or the new one whole, and every shard on the
// backends is referenced by a stripe, an intent or a garbage entry (the
// orphans of killed writes are known to garbage collection).

const (
	crashChildEnv  = "HEALSTORE_CRASH_CHILD_DIR"
	crashSeedEnv   = "HEALSTORE_CRASH_SEED"
	crashRoundsEnv = "HEALSTORE_CRASH_ROUNDS"
	crashNames     = 24
)

// crashContent derives an object's bytes from (seed, version): the child
// writes it, the parent recomputes it to compare.
func crashContent(seed uint64, version int) []byte {
	rnd := rand.New(rand.NewPCG(seed, uint64(version)))
	// Mostly small, sometimes several blocks, sometimes empty.
	var n int
	switch rnd.IntN(10) {
	case 0:
		n = 0
	case 1, 2:
		n = 4096*3 + rnd.IntN(4096*6)
	default:
		n = rnd.IntN(9000)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}

func crashConfig(t testing.TB, dir string) *Config {
	return testConfig(t, testOpts{dir: dir, blockSize: 4096})
}

// TestCrashChild is the child's body; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("crash test child; runs only under TestCrashSafety")
	}
	seed, _ := strconv.ParseUint(os.Getenv(crashSeedEnv), 10, 64)
	cfg := crashConfig(t, dir)
	s, err := Open(context.Background(), cfg)
	if err != nil {
		fmt.Printf("OPENERR %v\n", err)
		os.Exit(1)
	}
	rnd := rand.New(rand.NewPCG(seed, 99))
	out := os.Stdout // unbuffered: a line is out before the next step
	for v := 0; ; v++ {
		name := fmt.Sprintf("obj%02d", rnd.IntN(crashNames))
		if rnd.IntN(8) == 0 {
			fmt.Fprintf(out, "BEGIN DEL %s\n", name)
			err := s.Delete(context.Background(), name)
			if err != nil && !errors.Is(err, ErrNotFound) {
				fmt.Fprintf(out, "FAIL %s %v\n", name, err)
				os.Exit(1)
			}
			fmt.Fprintf(out, "ACK DEL %s\n", name)
			continue
		}
		data := crashContent(seed, v)
		fmt.Fprintf(out, "BEGIN PUT %s %d\n", name, v)
		if rnd.IntN(2) == 0 {
			_, err = s.Put(context.Background(), name, bytes.NewReader(data))
		} else {
			var w *Writer
			if w, err = s.Create(context.Background(), name); err == nil {
				for off := 0; off < len(data); off += 1000 {
					w.Write(data[off:min(off+1000, len(data))])
				}
				err = w.Close()
			}
		}
		if err != nil {
			fmt.Fprintf(out, "FAIL %s %v\n", name, err)
			os.Exit(1)
		}
		fmt.Fprintf(out, "ACK PUT %s %d\n", name, v)
	}
}

// version of an object as the parent tracks it: -1 absent, else the
// content version; pending holds the candidate of an unacknowledged op.
type crashState struct {
	known   int
	pending *int
}

func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test is not short")
	}
	rounds := 50
	if v, err := strconv.Atoi(os.Getenv(crashRoundsEnv)); err == nil && v > 0 {
		rounds = v
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv(crashSeedEnv), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (replay with %s=%d), %d rounds", seed, crashSeedEnv, seed, rounds)
	rnd := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	// Create the store once so every child opens an existing one (the
	// first rounds would otherwise be spent creating it).
	s0 := openTest(t, crashConfig(t, dir))
	s0.Close()

	state := map[string]*crashState{}
	for i := range crashNames {
		state[fmt.Sprintf("obj%02d", i)] = &crashState{known: -1}
	}
	seeds := map[int]uint64{} // version -> child seed, to recompute content
	acked, killedMidOp := 0, 0
	stretch := 1 // multiplies the kill delay; grows when rounds acknowledge nothing
	start := time.Now()
	for round := range rounds {
		childSeed := rnd.Uint64()
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashSeedEnv+"="+strconv.FormatUint(childSeed, 10))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Kill at a random moment: sometimes during Open, mostly mid-write.
		// The clock starts at the child's first operation (not at exec),
		// and stretches after rounds that acknowledged nothing, so a
		// loaded machine still gets operations done and interrupted.
		delay := time.Duration(30+rnd.IntN(400)) * time.Millisecond * time.Duration(stretch)
		var armOnce sync.Once
		arm := func() {
			armOnce.Do(func() {
				time.AfterFunc(delay, func() { cmd.Process.Signal(syscall.SIGKILL) })
			})
		}
		if rnd.IntN(8) == 0 {
			arm() // during Open
		}
		// A child stuck before its first operation is killed anyway.
		safety := time.AfterFunc(time.Minute, func() { cmd.Process.Signal(syscall.SIGKILL) })
		var last string
		roundAcked := 0
		for line := range lines {
			arm()
			f := strings.Fields(line)
			switch {
			case len(f) >= 3 && f[0] == "BEGIN":
				st := state[f[2]]
				v := -1
				if f[1] == "PUT" {
					v, _ = strconv.Atoi(f[3])
					seeds[versionKey(round, v)] = childSeed
					v = versionKey(round, v)
				}
				st.pending = &v
			case len(f) >= 3 && f[0] == "ACK":
				st := state[f[2]]
				st.known, st.pending = *st.pending, nil
				acked++
				roundAcked++
			case f[0] == "FAIL" || f[0] == "OPENERR":
				t.Fatalf("round %d: child: %s", round, line)
			}
			last = line
		}
		cmd.Wait()
		safety.Stop()
		if strings.HasPrefix(last, "BEGIN") {
			killedMidOp++
		}
		if roundAcked == 0 && stretch < 8 {
			stretch *= 2
		}
		// Resolve the ambiguous objects: each must be whole, old or new.
		resolveCrash(t, dir, round, state, seeds)
	}
	t.Logf("%d rounds in %v: %d operations acknowledged, %d kills in mid-operation", rounds, time.Since(start).Round(time.Millisecond), acked, killedMidOp)
	if acked < rounds/2 || killedMidOp < rounds/10 {
		t.Fatalf("only %d operations acknowledged and %d kills mid-operation in %d rounds: the test exercised too little", acked, killedMidOp, rounds)
	}

	s := openTest(t, crashConfig(t, dir))
	ctx := context.Background()
	for name, st := range state {
		checkObject(t, s, name, []int{st.known}, seeds)
	}
	// No object outside the names the child used, none half-written.
	objs, _, err := s.List(ctx, "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if _, ok := state[o.Name]; !ok {
			t.Fatalf("unexpected object %q", o.Name)
		}
	}
	checkNoUnknownShards(t, s)
}

// versionKey makes versions unique across rounds (children restart at 0).
func versionKey(round, v int) int { return round<<20 | v }

func contentOf(seeds map[int]uint64, version int) []byte {
	return crashContent(seeds[version], version&(1<<20-1))
}

// checkObject asserts that name reads back as one of the allowed versions
// (-1: absent) and returns which.
func checkObject(t *testing.T, s *Store, name string, allowed []int, seeds map[int]uint64) int {
	t.Helper()
	r, err := s.Open(context.Background(), name)
	if errors.Is(err, ErrNotFound) {
		for _, v := range allowed {
			if v == -1 {
				return -1
			}
		}
		t.Fatalf("%s: absent, want one of versions %v", name, allowed)
	}
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for _, v := range allowed {
		if v != -1 && bytes.Equal(got, contentOf(seeds, v)) {
			return v
		}
	}
	sum := sha256.Sum256(got)
	t.Fatalf("%s: %d bytes (sha256 %s) match none of versions %v: a half-written or mixed object", name, len(got), hex.EncodeToString(sum[:8]), allowed)
	return 0
}

func resolveCrash(t *testing.T, dir string, round int, state map[string]*crashState, seeds map[int]uint64) {
	t.Helper()
	var pending []string
	for name, st := range state {
		if st.pending != nil {
			pending = append(pending, name)
		}
	}
	if len(pending) == 0 {
		return
	}
	s, err := Open(context.Background(), crashConfig(t, dir))
	if err != nil {
		t.Fatalf("round %d: reopen after kill: %v", round, err)
	}
	defer s.Close()
	for _, name := range pending {
		st := state[name]
		st.known = checkObject(t, s, name, []int{st.known, *st.pending}, seeds)
		st.pending = nil
	}
}

// checkNoUnknownShards lists every shard on every backend and requires
// each to be referenced by a committed stripe, an intent or garbage.
func checkNoUnknownShards(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	known := map[string]string{} // backend/key -> why
	err := s.meta.ScanStripes(ctx, [16]byte{}, func(st *metastore.Stripe) error {
		for _, sh := range st.Shards {
			if sh.Backend != "" {
				known[sh.Backend+"/"+sh.Key] = "stripe"
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	intents := 0
	s.meta.ListIntents(ctx, func(in metastore.Intent) error {
		intents++
		for _, sh := range in.Shards {
			known[sh.Backend+"/"+sh.Key] = "intent"
		}
		return nil
	})
	garbage := 0
	s.meta.ListGarbage(ctx, func(g metastore.Garbage) error {
		garbage++
		known[g.Backend+"/"+g.Key] = "garbage"
		return nil
	})
	shards := 0
	for _, b := range s.cfg.Backends {
		be, ok := s.Backend(b.Name)
		if !ok {
			t.Fatalf("backend %s not open", b.Name)
		}
		err := be.List(ctx, shardio.ShardPrefix, func(key string, size int64) error {
			shards++
			if _, ok := known[b.Name+"/"+key]; !ok {
				return fmt.Errorf("shard %s on %s is referenced by no stripe, intent or garbage entry: an unknown orphan", key, b.Name)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d shards on the backends; %d intents and %d garbage entries cover the uncommitted and replaced ones", shards, intents, garbage)
}
