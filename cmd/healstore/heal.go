package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/bench"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/metastore"
)

type healOptions struct {
	workers int
	rate    string
	json    bool

	rateBytes int64
}

func newHealCmd(g *globalOptions) *cobra.Command {
	o := &healOptions{}
	cmd := &cobra.Command{
		Use:   "heal [NAME]",
		Short: "Repair now: the whole repair queue, or one object",
		Long: `heal probes every backend (twice, so one that does not answer counts as
failing), then works the repair queue now (ignoring
back-off), lowest margin first, and reports what it did. With NAME it reads
and verifies every shard of that object and repairs what it finds.

--workers and --rate change the rebuilder's concurrency and its bytes/s cap
(shards read plus written; 0 = no cap) for this run, or for the running
daemon, which keeps them until it restarts.

Exit code 1 when repairs failed (each failure names the shards present,
missing and corrupt); 3 when NAME does not exist.

` + exitCodesHelp,
		Args: argsBetween(0, 1),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			// As the config's healer.workers; the daemon refuses others,
			// and a healer here would take 0 as 1 and any larger number as is.
			if cmd.Flags().Changed("workers") && (o.workers < 1 || o.workers > healer.MaxWorkers) {
				return usagef("--workers %d: must be from 1 to %d", o.workers, healer.MaxWorkers)
			}
			if o.rate != "" {
				n, err := bench.ParseSize(o.rate)
				if err != nil {
					return usagef("--rate: %v", err)
				}
				o.rateBytes = n
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := openHealer(cmd, g)
			if err != nil {
				return err
			}
			defer t.Close()
			ctx, err := t.maintain(cmd, g.stderr)
			if err != nil {
				return err
			}
			var workers *int
			var rate *int64
			if cmd.Flags().Changed("workers") {
				workers = &o.workers
			}
			if o.rate != "" {
				rate = &o.rateBytes
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			var rep healer.RepairReport
			if t.remote != nil {
				if workers != nil || rate != nil {
					if _, err := t.remote.SetSettings(ctx, workers, rate); err != nil {
						return err
					}
				}
				rep, err = t.remote.Heal(ctx, name)
				var de *healer.DaemonError
				if errors.As(err, &de) && de.Status == 404 {
					return errNotFound(name)
				}
			} else {
				h := t.local
				if workers != nil {
					h.SetWorkers(*workers)
				}
				if rate != nil {
					h.SetRateLimit(*rate)
				}
				// Enough probe rounds for a backend that does not answer to
				// count as failing (suspect, or down with a zero grace period).
				for range h.Config().SuspectAfter {
					if err := h.ProbeAll(ctx); err != nil {
						fmt.Fprintf(g.stderr, "healstore: warning: probing backends: %v\n", err)
					}
				}
				if name != "" {
					rep, err = h.HealObject(ctx, name)
					if isMetaNotFound(err) {
						return errNotFound(name)
					}
				} else {
					p := newCountProgress(g, "repairing")
					rep, err = h.RepairAll(ctx, func(metastore.RepairItem, healer.Outcome, error) { p.add(1) })
					p.finish()
				}
			}
			if err != nil {
				return err
			}
			if o.json {
				if err := json.NewEncoder(g.stdout).Encode(rep); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "repaired %d stripe(s), %d needed nothing, %d failed; %s rebuilt from %s read; %d left in the queue\n",
					rep.Repaired, rep.NoOp, rep.Failed, humanBytes(rep.BytesWritten), humanBytes(rep.BytesRead), rep.Remaining)
				for _, e := range rep.Errors {
					fmt.Fprintf(g.stdout, "  %s\n", e)
				}
			}
			if rep.Failed > 0 {
				return fmt.Errorf("%d repair(s) failed", rep.Failed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.workers, "workers", 0, "concurrent repairs (default: healer.workers)")
	f.StringVar(&o.rate, "rate", "", "rebuild cap in bytes/s, e.g. 100MiB (0 = no cap; default: healer.rate_bytes)")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	return cmd
}

// countProgress prints "what: n done" on a terminal as items finish, at
// most every 200ms.
type countProgress struct {
	g    *globalOptions
	what string
	on   bool
	n    int
	last time.Time
}

func newCountProgress(g *globalOptions, what string) *countProgress {
	return &countProgress{g: g, what: what, on: isTerminal(g.stderr)}
}

func (c *countProgress) add(n int) {
	c.n += n
	if c.on && time.Since(c.last) >= 200*time.Millisecond {
		c.last = time.Now()
		fmt.Fprintf(c.g.stderr, "\r%s: %d done   ", c.what, c.n)
	}
}

func (c *countProgress) finish() {
	if c.on && c.n > 0 {
		fmt.Fprintf(c.g.stderr, "\r%s: %d done   \n", c.what, c.n)
	}
}

func errNotFound(name string) error {
	return fmt.Errorf("object %q: %w", name, healstore.ErrNotFound)
}

func isMetaNotFound(err error) bool { return errors.Is(err, metastore.ErrNotFound) }

type benchHealOptions struct {
	opts       bench.HealOptions
	size       string
	objectSize string
	blockSize  string
	json       bool
}

// newBenchHealCmd is `healstore bench heal`.
func newBenchHealCmd(g *globalOptions) *cobra.Command {
	o := &benchHealOptions{}
	cmd := &cobra.Command{
		Use:   "heal",
		Short: "Measure healing: wipe one backend, time the return to full redundancy",
		Long: `heal needs no config: it builds a store on local backends (4+2 over six by
default) in a temporary directory, fills it (--size), wipes one backend
(every shard and its identity marker deleted) while two readers keep reading,
and lets the healer restore full redundancy. It reports when the loss was
detected, when healing started and when every stripe was whole again, the
rebuild rate, bytes read per byte rebuilt, how fast stripes pushed to margin
0 in the middle of the rebuild were repaired, and, in the same run, the
baseline: reading k shards and writing one per stripe through the same
backends with no decoding.

` + exitCodesHelp,
		Args: argsBetween(0, 0),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			for _, f := range []struct {
				flag string
				val  string
				dst  *int64
			}{{"--size", o.size, &o.opts.Size}, {"--object-size", o.objectSize, &o.opts.ObjectSize}} {
				n, err := bench.ParseSize(f.val)
				if err != nil || n <= 0 {
					return usagef("%s %q: want a size like 256MiB", f.flag, f.val)
				}
				*f.dst = n
			}
			bs, err := bench.ParseSize(o.blockSize)
			if err != nil || bs <= 0 {
				return usagef("--block-size %q: want a size like 4MiB", o.blockSize)
			}
			o.opts.BlockSize = int(bs)
			if o.opts.K < 1 || o.opts.M < 1 {
				return usagef("--k and --m must be at least 1")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if !o.json {
				o.opts.Progress = g.stderr
			}
			rep, err := bench.Heal(cmd.Context(), o.opts)
			if err != nil {
				return err
			}
			if o.json {
				b, err := rep.JSON()
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(g.stdout, "%s\n", b)
				return err
			}
			return rep.WriteText(g.stdout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.size, "size", "256MiB", "object data to write before the loss")
	f.StringVar(&o.objectSize, "object-size", "16MiB", "size of each object")
	f.StringVar(&o.blockSize, "block-size", "4MiB", "block size of the policy")
	f.IntVar(&o.opts.K, "k", 4, "data shards")
	f.IntVar(&o.opts.M, "m", 2, "parity shards")
	f.IntVar(&o.opts.Workers, "workers", 8, "rebuild workers")
	f.DurationVar(&o.opts.ProbeInterval, "probe-interval", time.Second, "healer probe interval")
	f.IntVar(&o.opts.MarginZero, "margin0", 8, "stripes to push to margin 0 mid-rebuild (negative: none)")
	f.StringVar(&o.opts.Dir, "dir", "", "directory for the store (default: a temporary one)")
	f.BoolVar(&o.opts.Keep, "keep", false, "keep the store directory")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	return cmd
}
