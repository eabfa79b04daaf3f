package healstore

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/healstore/healstore/backends/local"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/metastore"
)

// The multi-frontend test runs two healstore processes on one etcd. Each is
// this test binary re-run with HS_MULTI_CHILD set, entering
// TestMultiFrontendChild. A child speaks to the parent in stdout lines
// starting with "MULTI ".

const (
	multiEnvChild  = "HS_MULTI_CHILD"  // child name
	multiEnvConfig = "HS_MULTI_CONFIG" // config file
	multiEnvPuts   = "HS_MULTI_PUTS"   // objects to write
	multiEnvSeed   = "HS_MULTI_SEED"
	multiPrefix    = "MULTI "
)

// multiObject is the content a child writes as object i: the parent
// regenerates it to compare.
func multiObject(seed uint64, child string, i int) (string, []byte) {
	h := fnv.New64a()
	h.Write([]byte(child))
	rnd := mrand.New(mrand.NewPCG(seed, h.Sum64()+uint64(i)))
	data := make([]byte, 20<<10+rnd.IntN(140<<10))
	for j := range data {
		data[j] = byte(rnd.Uint32())
	}
	return fmt.Sprintf("%s/%03d", child, i), data
}

// TestMultiFrontendChild is one frontend process of TestMultiFrontendEtcd.
func TestMultiFrontendChild(t *testing.T) {
	name := os.Getenv(multiEnvChild)
	if name == "" {
		t.Skip("runs only as a child of TestMultiFrontendEtcd")
	}
	say := func(format string, args ...any) { fmt.Printf(multiPrefix+format+"\n", args...) }
	cfg, err := LoadConfig(os.Getenv(multiEnvConfig))
	if err != nil {
		t.Fatal(err)
	}
	puts, _ := strconv.Atoi(os.Getenv(multiEnvPuts))
	seed, _ := strconv.ParseUint(os.Getenv(multiEnvSeed), 10, 64)
	// The healer's decisions go to stderr, which the parent shows when
	// the test fails.
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Local backends remove leftover temporaries when opened, so no
	// child may write before both opened theirs: wait for the parent's
	// "go". The parent ends a child by closing its stdin (or by SIGKILL).
	say("OPENED")
	in := bufio.NewReader(os.Stdin)
	if line, err := in.ReadString('\n'); err != nil || line != "go\n" {
		t.Fatalf("waiting for go: %q, %v", line, err)
	}
	go func() {
		io.Copy(io.Discard, in)
		cancel()
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := s.RunAsLeader(ctx, func(ctx context.Context) error {
			say("LEADER %d", os.Getpid())
			h, err := s.NewHealer(ctx, HealerOptions{Tune: func(c *healer.Config) {
				c.ProbeInterval = healer.Duration(300 * time.Millisecond)
				c.Grace = 0
				c.Workers = 2
				// Slow enough that the parent can kill a leader in the
				// middle of a rebuild.
				c.RateLimit = 1 << 20
				c.RetryBackoff = healer.Duration(200 * time.Millisecond)
			}})
			if err != nil {
				return err
			}
			defer h.Close()
			sn, err := s.NewSnapshotter(SnapshotConfig{Interval: Duration(time.Second)})
			if err != nil {
				return err
			}
			go sn.Run(ctx)
			return h.Run(ctx)
		}, LeaderOptions{TTL: 2 * time.Second})
		if err != nil {
			say("LEADER-ERROR %v", err)
		}
	}()
	for i := range puts {
		name, data := multiObject(seed, name, i)
		if _, err := s.Put(ctx, name, bytes.NewReader(data)); err != nil {
			say("PUT-ERROR %s %v", name, err)
			t.Fatal(err)
		}
	}
	say("PUTS-DONE")
	wg.Wait()
}

// multiChild is a running child process.
type multiChild struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu     sync.Mutex
	log    []string // everything it printed
	proto  []string // its protocol lines not yet consumed by wait
	closed bool     // its stdout ended
}

// wait consumes the first protocol line starting with want, waiting up
// to d for it.
func (c *multiChild) wait(t *testing.T, want string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		for i, l := range c.proto {
			if strings.HasPrefix(l, "PUT-ERROR") || strings.HasPrefix(l, "LEADER-ERROR") {
				c.mu.Unlock()
				t.Fatalf("child %s: %s", c.name, l)
			}
			if strings.HasPrefix(l, want) {
				c.proto = append(c.proto[:i], c.proto[i+1:]...)
				c.mu.Unlock()
				return l
			}
		}
		closed := c.closed
		c.mu.Unlock()
		if closed {
			t.Fatalf("child %s exited before saying %q; its output:\n%s", c.name, want, c.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %s did not say %q within %v; its output:\n%s", c.name, want, d, c.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *multiChild) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.log, "\n")
}

func startMultiChild(t *testing.T, name, cfgPath string, puts int, seed uint64) *multiChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMultiFrontendChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), multiEnvChild+"="+name, multiEnvConfig+"="+cfgPath,
		multiEnvPuts+"="+strconv.Itoa(puts), multiEnvSeed+"="+strconv.FormatUint(seed, 10))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &multiChild{name: name, cmd: cmd, stdin: stdin}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := sc.Text()
			c.mu.Lock()
			c.log = append(c.log, l)
			if rest, ok := strings.CutPrefix(l, multiPrefix); ok {
				c.proto = append(c.proto, rest)
			}
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return c
}

// TestMultiFrontendEtcd: two processes share one etcd metastore. Both
// write at once and every object is readable from a third; then the
// active healer is SIGKILLed in the middle of a rebuild and the other
// process takes over and finishes it.
func TestMultiFrontendEtcd(t *testing.T) {
	if os.Getenv(multiEnvChild) != "" {
		t.Skip("child process")
	}
	ctx := context.Background()
	f := etcdFixture(t)
	f.cfg.Healer.GracePeriod = 0
	seed := mrand.Uint64()
	t.Logf("seed %d", seed)
	const puts = 10

	// Initialise the store once (identity, backends, markers), then hand
	// each child a config of its own (own cache directory).
	s := f.open(t)
	defer s.Close()
	var cfgs []string
	for _, name := range []string{"a", "b"} {
		cfg := *f.cfg
		cfg.Dir = filepath.Join(f.front, name)
		cfg.MetadataDir, cfg.CacheDir = "", ""
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		body, err := cfg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(cfg.Dir, ConfigFileName)
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
		cfgs = append(cfgs, path)
	}
	children := map[string]*multiChild{
		"a": startMultiChild(t, "a", cfgs[0], puts, seed),
		"b": startMultiChild(t, "b", cfgs[1], puts, seed),
	}
	for _, c := range children {
		c.wait(t, "OPENED", 30*time.Second)
	}
	for _, c := range children {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range children {
		c.wait(t, "PUTS-DONE", 60*time.Second)
	}
	// Every object, whichever process wrote it, reads back from here.
	want := map[string][]byte{}
	for _, child := range []string{"a", "b"} {
		for i := range puts {
			name, data := multiObject(seed, child, i)
			want[name] = data
		}
	}
	recReadBack(t, s, want)
	objs, err := s.meta.ListObjects(ctx, "", "", 0)
	if err != nil || len(objs) != 2*puts {
		t.Fatalf("%d objects listed, want %d (%v)", len(objs), 2*puts, err)
	}

	// Which child leads? Its pid is in the election.
	leaderID, err := s.Leader(ctx)
	if err != nil || leaderID == "" {
		t.Fatalf("leader: %q, %v", leaderID, err)
	}
	var leader, follower *multiChild
	for _, c := range children {
		if strings.HasSuffix(leaderID, "/"+strconv.Itoa(c.cmd.Process.Pid)) {
			leader = c
		} else {
			follower = c
		}
	}
	if leader == nil {
		t.Fatalf("leader %q is neither child", leaderID)
	}
	leader.wait(t, "LEADER", 10*time.Second)
	t.Logf("leader: child %s (%s)", leader.name, leaderID)

	// Wipe backend b1: the leader's monitor finds its marker gone, queues
	// every stripe it held, and rebuilds them (slowly: rate-limited).
	wipeLocal(t, f.specs[0].Path)
	total := 0
	s.meta.ScanStripes(ctx, [16]byte{}, func(*metastore.Stripe) error { total++; return nil })
	deadline := time.Now().Add(60 * time.Second)
	for {
		p := multiProgress(t, s)
		// Kill once the rebuild is under way: some stripes already
		// rebuilt (each rebuild is one commit, so its version moved) and
		// some still queued, their lost shard still absent.
		if p.touched > 0 && p.queued > 0 && len(p.absent) > 0 {
			t.Logf("killing the leader mid-rebuild: %d of %d stripes rebuilt, %d queued, %d shards absent", p.touched, total, p.queued, len(p.absent))
			break
		}
		if p.touched == total && p.queued == 0 && len(p.absent) == 0 {
			t.Fatalf("the rebuild of %d stripes finished before the leader could be killed", total)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rebuild progress: %+v of %d stripes\nleader output:\n%s", p, total, leader.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	leader.cmd.Wait()
	killedAt := time.Now()

	// The follower takes over within the lease TTL and finishes.
	follower.wait(t, "LEADER", 30*time.Second)
	t.Logf("child %s elected %v after the kill", follower.name, time.Since(killedAt).Round(100*time.Millisecond))
	deadline = time.Now().Add(60 * time.Second)
	for {
		p := multiProgress(t, s)
		if p.missing == 0 && p.queued == 0 && len(p.absent) == 0 {
			t.Logf("rebuild finished %v after the kill", time.Since(killedAt).Round(100*time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			// A fresh view of each backend tells a shard truly gone
			// from one this process's index lost track of.
			var fresh []string
			for _, spec := range f.specs {
				b, err := local.OpenUsed(spec)
				if err != nil {
					fresh = append(fresh, fmt.Sprintf("%s: %v", spec.Name, err))
					continue
				}
				for _, a := range p.absent {
					if a.Backend == spec.Name {
						_, err := b.Stat(ctx, a.Key)
						fresh = append(fresh, fmt.Sprintf("%s/%s freshly opened: %v", a.Backend, a.Key, err))
					}
				}
				b.Close()
			}
			t.Fatalf("the new leader did not finish: %+v of %d stripes\n%s\nnew leader's output:\n%s\nold leader's output:\n%s",
				p, total, strings.Join(fresh, "\n"), follower.output(), leader.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if id, _ := s.Leader(ctx); !strings.HasSuffix(id, "/"+strconv.Itoa(follower.cmd.Process.Pid)) {
		t.Fatalf("leader after takeover: %q", id)
	}
	recReadBack(t, s, want)
	// The new leader runs the snapshotter too.
	lw, err := s.LossWindow(ctx)
	if err != nil || lw.Snapshot == nil {
		t.Fatalf("loss window: %+v, %v", lw, err)
	}
	follower.stdin.Close()
	if err := follower.cmd.Wait(); err != nil {
		t.Fatalf("follower exit: %v\n%s", err, follower.output())
	}
}

// rebuildProgress describes the stripes during the rebuild.
type rebuildProgress struct {
	// missing stripes lack a shard location; queued is the queue length.
	missing, queued int
	// touched stripes changed since they were written (version 2 or
	// more): the healer rebuilt their lost shard.
	touched int
	// absent are the recorded shards that are not on their backend.
	absent []absentShard
}

// absentShard is a recorded shard not found on its backend, and why.
type absentShard struct {
	Stripe       string
	Version      uint64
	Backend, Key string
	Err          string
}

func multiProgress(t *testing.T, s *Store) rebuildProgress {
	t.Helper()
	ctx := context.Background()
	var p rebuildProgress
	err := s.meta.ScanStripes(ctx, [16]byte{}, func(st *metastore.Stripe) error {
		if st.Version >= 2 {
			p.touched++
		}
		if len(st.Missing()) > 0 {
			p.missing++
		}
		for _, loc := range st.Shards {
			if loc.Backend == "" {
				continue
			}
			b, ok := s.Backend(loc.Backend)
			if !ok {
				p.absent = append(p.absent, absentShard{fmt.Sprintf("%x", st.ID), st.Version, loc.Backend, loc.Key, "backend not open"})
				continue
			}
			if _, err := b.Stat(ctx, loc.Key); err != nil {
				p.absent = append(p.absent, absentShard{fmt.Sprintf("%x", st.ID), st.Version, loc.Backend, loc.Key, err.Error()})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.queued, err = s.meta.QueueLen(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// wipeLocal deletes every value of a local backend, marker included, as a
// reinstalled node would.
func wipeLocal(t *testing.T, path string) {
	t.Helper()
	err := filepath.Walk(filepath.Join(path, "data"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			return os.Remove(p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
