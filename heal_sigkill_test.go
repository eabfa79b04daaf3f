package healstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healstore/healstore/healer"
)

const (
	healerChildEnv     = "HEALSTORE_HEALER_CHILD"      // config path: run the daemon
	healerChildRateEnv = "HEALSTORE_HEALER_CHILD_RATE" // rebuild cap, bytes/s
)

// TestHealerChildProcess is the daemon TestChaosSIGKILL runs and kills. It
// does nothing unless started by that test.
func TestHealerChildProcess(t *testing.T) {
	path := os.Getenv(healerChildEnv)
	if path == "" {
		return
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	rate, _ := strconv.ParseInt(os.Getenv(healerChildRateEnv), 10, 64)
	cfg.Healer.GracePeriod = 0
	cfg.Healer.ProbeInterval = Duration(100 * time.Millisecond)
	cfg.Healer.RateBytes = rate
	cfg.Healer.Provisioner = ProvisionerConfig{Kind: "local", Settings: map[string]any{"dir": "prov"}}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	s, err := Open(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	err = s.RunDaemon(ctx, DaemonOptions{Addr: "127.0.0.1:0",
		Ready:  func(a string) { fmt.Printf("ADDR %s\n", a) },
		Healer: HealerOptions{Tune: func(c *healer.Config) { c.SuspectAfter = 1 }}})
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// healerChild is one running daemon process.
type healerChild struct {
	cmd    *exec.Cmd
	addr   string
	stderr *bytes.Buffer
}

func startHealerChild(t *testing.T, cfgPath string, rate int64) *healerChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHealerChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), healerChildEnv+"="+cfgPath, healerChildRateEnv+"="+strconv.FormatInt(rate, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
				addrc <- a
			}
		}
		close(addrc)
	}()
	select {
	case a, ok := <-addrc:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("healer child exited before serving: %s", stderr.String())
		}
		return &healerChild{cmd: cmd, addr: a, stderr: &stderr}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("healer child did not start: %s", stderr.String())
	}
	return nil
}

func (c *healerChild) status(t *testing.T) *healer.Status {
	t.Helper()
	resp, err := http.Get("http://" + c.addr + "/status")
	if err != nil {
		t.Fatalf("status: %v (child stderr: %s)", err, c.stderr.String())
	}
	defer resp.Body.Close()
	var st healer.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// TestChaosSIGKILL kills a real healer process with SIGKILL, several times
// in the middle of rebuilding two lost backends, then lets a last one
// finish: the repair queue, the replacements provisioned and the rebuilt
// shards survive every kill (invariant 5), nothing is lost, the placement
// invariant holds, no shard is left where the collector cannot find it,
// and the last daemon stops cleanly on SIGTERM.
func TestChaosSIGKILL(t *testing.T) {
	seed := chaosSeed(t)
	t.Logf("seed %d (replay: HEALSTORE_CHAOS_SEED=%d)", seed, seed)
	rnd := rand.New(rand.NewPCG(seed, 11))
	hs := newHealStore(t, 6, 4, 2, func(c *Config) { c.Policy.BlockSize = 32 << 10 })
	objs := map[string][]byte{}
	for i := range 24 {
		name := fmt.Sprintf("k%d", i)
		objs[name] = healRandBytes(rnd, 1+rnd.IntN(160<<10))
		hs.put(name, objs[name])
	}
	stripes, err := hs.s.meta.CountStripesOnBackend(context.Background(), "b1")
	if err != nil {
		t.Fatal(err)
	}
	if err := hs.s.Close(); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(hs.dir, ConfigFileName)
	hs.kill("b2")
	hs.kill("b5")

	// The rebuild reads and writes about (4+2) shards of 8 KiB per stripe;
	// capped, it takes a few seconds, so the kills land in the middle.
	const rate = 512 << 10
	var queued []int
	for kill := range 4 {
		c := startHealerChild(t, cfgPath, rate)
		// Kill it at a random moment once it is repairing.
		wait := time.Now().Add(30 * time.Second)
		for c.status(t).Repairs.Repaired == 0 && time.Now().Before(wait) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Duration(rnd.IntN(600)) * time.Millisecond)
		st := c.status(t)
		queued = append(queued, st.Queue.Depth)
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = c.cmd.Wait()
		t.Logf("kill %d: queue %d, degraded %d, repaired %d by this process", kill, st.Queue.Depth, st.DegradedStripes, st.Repairs.Repaired)
	}
	c := startHealerChild(t, cfgPath, 0)
	deadline := time.Now().Add(90 * time.Second)
	for {
		st := c.status(t)
		states := map[string]string{}
		for _, b := range st.Backends {
			states[b.Name] = b.State
		}
		if st.DegradedStripes == 0 && st.Queue.Depth == 0 && states["b2"] == "replaced" && states["b5"] == "replaced" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healed after the kills: degraded %d, queue %d, states %v", st.DegradedStripes, st.Queue.Depth, states)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("daemon did not stop cleanly on SIGTERM: %v: %s", err, c.stderr.String())
		}
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		t.Fatal("daemon ignored SIGTERM")
	}

	// The work survived the kills: later processes started from a shorter
	// queue than the first (progress was committed, not redone).
	if queued[len(queued)-1] >= stripes {
		t.Errorf("queue depths at the kills %v: no progress survived (the lost backends held %d stripes)", queued, stripes)
	}
	hs.open()
	hs.check(objs)
	if err := hs.fullAndPlaced(); err != nil {
		t.Fatal(err)
	}
	prov, _ := filepath.Glob(filepath.Join(hs.dir, "prov", "*"))
	t.Logf("queue depths at the kills %v; %d backends provisioned", queued, len(prov))
	h, err := hs.s.NewHealer(context.Background(), HealerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ce := &chaosEnv{healStore: hs, t: t, h: h, dead: map[string]string{"b2": "x", "b5": "x"}}
	ce.checkNoStrayShards()
}
