package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/bench"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer"
)

type demoOptions struct {
	keep    bool
	size    string
	objects int
	grace   time.Duration
	timeout time.Duration

	sizeBytes int64
}

func newDemoCmd(g *globalOptions) *cobra.Command {
	o := &demoOptions{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch healstore lose two backends and heal itself (needs no set-up)",
		Long: `demo needs no config. It creates a store on six local backends (4 data + 2
parity shards per stripe) in a temporary directory, writes sample data, then
destroys one backend (its directory deleted) and takes another offline. It
shows reads still working, the healer declaring both backends down after the
grace period, provisioning replacements and rebuilding with live progress,
verifies every byte and every shard, and prints a summary: time to full
redundancy, bytes rebuilt, read amplification.

--keep leaves the directory (with its healstore.toml) for a closer look.

` + exitCodesHelp,
		Args: argsBetween(0, 0),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			n, err := bench.ParseSize(o.size)
			if err != nil || n <= 0 {
				return usagef("--size %q: want a size like 32MiB", o.size)
			}
			o.sizeBytes = n
			if o.objects < 1 {
				return usagef("--objects must be at least 1")
			}
			if o.grace < 0 {
				return usagef("--grace must not be negative")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDemo(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.keep, "keep", false, "keep the demo directory")
	f.StringVar(&o.size, "size", "32MiB", "sample data to write")
	f.IntVar(&o.objects, "objects", 8, "number of sample objects")
	f.DurationVar(&o.grace, "grace", 3*time.Second, "grace period before a failing backend is declared down")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up if redundancy is not back by then")
	return cmd
}

// demo is one run's state and its timeline printer.
type demo struct {
	w     io.Writer
	start time.Time
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.w, "[%5.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func runDemo(ctx context.Context, g *globalOptions, o *demoOptions) (err error) {
	dir, err := os.MkdirTemp("", "healstore-demo-")
	if err != nil {
		return err
	}
	if o.keep {
		defer fmt.Fprintf(g.stdout, "\nkept %s (config: %s)\n", dir, filepath.Join(dir, healstore.ConfigFileName))
	} else {
		defer os.RemoveAll(dir)
	}
	d := &demo{w: g.stdout, start: time.Now()}
	pol := encoder.DefaultPolicy()
	pol.BlockSize = 1 << 20
	cfgPath, err := healstore.Init(dir, healstore.InitOptions{Policy: pol, Backends: pol.K + pol.M})
	if err != nil {
		return err
	}
	cfg, err := healstore.LoadConfig(cfgPath)
	if err != nil {
		return err
	}
	cfg.Healer.GracePeriod = healstore.Duration(o.grace)
	cfg.Healer.ProbeInterval = healstore.Duration(250 * time.Millisecond)
	cfg.Healer.Workers = 4
	cfg.Healer.Provisioner = healstore.ProvisionerConfig{Kind: "local", Settings: map[string]any{"dir": "provisioned", "prefix": "repl"}}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if lvl := g.logLevel; lvl == "debug" || lvl == "info" {
		cfg.Logger, _ = g.logger()
	}
	s, err := healstore.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()

	fmt.Fprintf(g.stdout, "healstore demo: a store that heals itself\n")
	fmt.Fprintf(g.stdout, "  store:  %s\n", dir)
	fmt.Fprintf(g.stdout, "  policy: %d data + %d parity shards per stripe over %d local backends, each its own failure domain\n", pol.K, pol.M, pol.K+pol.M)
	fmt.Fprintf(g.stdout, "  healer: probes every 250ms, declares a backend down after a %s grace period, provisions local replacements\n\n", o.grace)

	// Sample data.
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	sums := map[string][32]byte{}
	per := max(o.sizeBytes/int64(o.objects), 1)
	var written int64
	for i := range o.objects {
		data := make([]byte, per)
		for j := 0; j < len(data); j += 8 {
			v := rnd.Uint64()
			for k := 0; k < 8 && j+k < len(data); k++ {
				data[j+k] = byte(v >> (8 * k))
			}
		}
		name := fmt.Sprintf("sample/%02d.bin", i)
		if _, err := s.Put(ctx, name, bytes.NewReader(data)); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		sums[name] = sha256.Sum256(data)
		written += int64(len(data))
	}
	st0, err := s.HealStatus(ctx)
	if err != nil {
		return err
	}
	d.say("wrote %d objects, %s: %d stripes, each with %d shards on %d different backends", o.objects, humanBytes(written), st0.Stripes, pol.K+pol.M, pol.K+pol.M)

	// The daemon: the same healer `healstore daemon` runs.
	dctx, stop := context.WithCancel(ctx)
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.RunDaemon(dctx, healstore.DaemonOptions{Addr: "127.0.0.1:0", Ready: func(a string) { addrc <- a }})
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		stop()
		return err
	}
	defer func() {
		stop()
		if derr := <-done; derr != nil && err == nil {
			err = derr
		}
	}()
	d.say("healer daemon running; metrics at http://%s/metrics, status at http://%s/status", addr, addr)
	token, err := healstore.DaemonToken(cfg)
	if err != nil {
		return err
	}
	client := &healer.Client{Addr: addr, Token: token}
	time.Sleep(600 * time.Millisecond) // a probe round or two: every backend up and marked

	// Disaster: up to m backends lost at once.
	victims := []string{"b2", "b5"}[:min(pol.M, 2)]
	disaster := time.Now()
	// A plain file where a backend's directory was stands for a disk that
	// is gone: nothing can be read from or written to it any more.
	// The directory is moved away before it is deleted: the daemon may be
	// writing into it (its first metadata snapshot), and RemoveAll on a
	// directory still being filled fails with "directory not empty".
	destroyed := filepath.Join(dir, "backends", victims[0])
	if err := os.Rename(destroyed, destroyed+".destroyed"); err != nil {
		return err
	}
	if err := os.WriteFile(destroyed, []byte("this disk is gone\n"), 0o600); err != nil {
		return err
	}
	// A write that was under way when the directory moved may still land
	// in it; what is left goes with the demo directory.
	_ = os.RemoveAll(destroyed + ".destroyed")
	msg := fmt.Sprintf("DISASTER: backend %s destroyed (its directory and every shard in it deleted)", victims[0])
	if len(victims) > 1 {
		off := filepath.Join(dir, "backends", victims[1])
		if err := os.Rename(off, off+".offline"); err != nil {
			return err
		}
		if err := os.WriteFile(off, []byte("this node is offline\n"), 0o600); err != nil {
			return err
		}
		msg += fmt.Sprintf(", backend %s taken offline", victims[1])
	}
	d.say("%s", msg)

	// Reads keep working with m shards of every stripe gone.
	t0 := time.Now()
	if err := verifyAll(ctx, s, sums); err != nil {
		return fmt.Errorf("degraded read: %w", err)
	}
	d.say("reads still work: all %d objects read back and verified while degraded (%s in %s)", len(sums), humanBytes(written), time.Since(t0).Round(time.Millisecond))

	// Watch the healer work.
	states := map[string]string{}
	for _, b := range st0.Backends {
		states[b.Name] = b.State
	}
	marginZeroNoted := false
	tty := isTerminal(g.stdout)
	lastLine := time.Time{}
	var final *healer.Status
	deadline := time.Now().Add(o.timeout)
	for {
		if time.Now().After(deadline) {
			return fmt.Errorf("redundancy not restored within %s", o.timeout)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := client.Status(ctx)
		if err != nil {
			return err
		}
		suspect := false
		for _, b := range st.Backends {
			prev, known := states[b.Name]
			switch {
			case !known:
				if tty {
					fmt.Fprint(g.stdout, "\r\033[K")
				}
				d.say("provisioned replacement backend %s (%s) and added it to the store", b.Name, b.Domain)
			case prev != b.State:
				if tty {
					fmt.Fprint(g.stdout, "\r\033[K")
				}
				why := ""
				switch b.State {
				case "suspect":
					why = " (probes fail; waiting out the grace period)"
				case "down":
					why = fmt.Sprintf(" (still failing after %s: its shards are rebuilt elsewhere)", o.grace)
				case "replaced":
					why = " (everything it held is rebuilt)"
				}
				d.say("backend %s: %s -> %s%s", b.Name, prev, b.State, why)
			}
			states[b.Name] = b.State
			suspect = suspect || b.State == "suspect"
		}
		if suspect && !marginZeroNoted && st.Repairs.Repaired > 0 {
			marginZeroNoted = true
			d.say("stripes left at margin 0 (one more loss would lose data) are repaired at once, grace period or not")
		}
		replaced := 0
		for _, v := range victims {
			if states[v] == "replaced" {
				replaced++
			}
		}
		if replaced == len(victims) && st.DegradedStripes == 0 && st.Queue.Depth == 0 {
			final = st
			break
		}
		if st.Queue.Depth > 0 || st.DegradedStripes > 0 {
			line := fmt.Sprintf("rebuilding: %d/%d stripes at full redundancy, queue %d, %s rebuilt, %s/s",
				st.Stripes-st.DegradedStripes, st.Stripes, st.Queue.Depth, humanBytes(st.Repairs.BytesWritten), humanBytes(int64(st.Queue.RateBytesPerSec)))
			if tty {
				fmt.Fprintf(g.stdout, "\r\033[K[%5.1fs] %s", time.Since(d.start).Seconds(), line)
			} else if time.Since(lastLine) >= time.Second {
				lastLine = time.Now()
				d.say("%s", line)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	ttr := time.Since(disaster)
	if tty {
		fmt.Fprint(g.stdout, "\r\033[K")
	}
	d.say("full redundancy restored: every stripe has all %d shards on %d distinct backends", pol.K+pol.M, pol.K+pol.M)

	// Verify every byte and every shard.
	if err := verifyAll(ctx, s, sums); err != nil {
		return fmt.Errorf("after healing: %w", err)
	}
	sp, err := client.Scrub(ctx, true, nil)
	if err != nil {
		return err
	}
	if sp.Missing+sp.Corrupt+sp.Misplaced+sp.Unreachable > 0 {
		return fmt.Errorf("deep scrub after healing found %d missing, %d corrupt, %d misplaced, %d unreachable shards", sp.Missing, sp.Corrupt, sp.Misplaced, sp.Unreachable)
	}
	d.say("verified: all %d objects byte-identical; deep scrub read and checked all %d stripes' shards (%s): no loss", len(sums), sp.Done, humanBytes(sp.Bytes))

	r := final.Repairs
	var repl []string
	for name := range states {
		if !strings.HasPrefix(name, "b") {
			repl = append(repl, name)
		}
	}
	sort.Strings(repl)
	fmt.Fprintf(g.stdout, "\nsummary\n")
	fmt.Fprintf(g.stdout, "  backends lost:             %s\n", strings.Join(victims, ", "))
	fmt.Fprintf(g.stdout, "  replacements provisioned:  %s\n", strings.Join(repl, ", "))
	fmt.Fprintf(g.stdout, "  time to full redundancy:   %s (grace period %s; no human step)\n", ttr.Round(10*time.Millisecond), o.grace)
	fmt.Fprintf(g.stdout, "  shards rebuilt:            %s in %d repairs", humanBytes(r.BytesWritten), r.Repaired)
	if r.Failed > 0 {
		fmt.Fprintf(g.stdout, " (%d attempts waited for a replacement backend and were retried)", r.Failed)
	}
	fmt.Fprintln(g.stdout)
	fmt.Fprintf(g.stdout, "  shards read to rebuild:    %s\n", humanBytes(r.BytesRead))
	if r.BytesWritten > 0 {
		fmt.Fprintf(g.stdout, "  read amplification:        %.2f bytes read per byte rebuilt (k = %d: only k shards are read per stripe)\n", r.ReadAmplification, pol.K)
	}
	fmt.Fprintf(g.stdout, "  reads during the outage:   all succeeded\n")
	return nil
}

// verifyAll reads every object and compares its SHA-256.
func verifyAll(ctx context.Context, s *healstore.Store, sums map[string][32]byte) error {
	for name, want := range sums {
		r, err := s.Open(ctx, name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, r)
		r.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if !bytes.Equal(h.Sum(nil), want[:]) {
			return fmt.Errorf("%s: %w", name, errors.New("content differs from what was written"))
		}
	}
	return nil
}
