package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore/healer"
)

type scrubOptions struct {
	light  bool
	repair bool
	json   bool
}

func newScrubCmd(g *globalOptions) *cobra.Command {
	o := &scrubOptions{}
	cmd := &cobra.Command{
		Use:   "scrub",
		Short: "Check every stripe now: read and verify every shard (or --light)",
		Long: `scrub walks every stripe once, at full speed, with progress: the deep pass
(default) reads every shard and verifies it against the checksum the
metastore keeps; --light only checks that each shard exists with the right
size. It also checks that no two shards of a stripe share a failure domain.
Shards found missing or corrupt are forgotten and their stripes queued for
repair; --repair then repairs them at once (a running daemon repairs them by
itself).

The daemon runs the same passes in the background, spread over
healer.scrub_period.

` + exitCodesHelp,
		Args: argsBetween(0, 0),
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
			tty := isTerminal(g.stderr)
			lastPrint := time.Time{}
			lastPct := -1
			start := time.Now()
			progress := func(p healer.ScrubProgress) {
				pct := int(100 * p.Fraction())
				switch {
				case o.json:
				case tty && time.Since(lastPrint) >= 200*time.Millisecond:
					lastPrint = time.Now()
					fmt.Fprintf(g.stderr, "\rscrub %s: %3d%% (%d/%d stripes, %s read, %d missing, %d corrupt)   ",
						p.Pass, pct, p.Done, p.Total, humanBytes(p.Bytes), p.Missing, p.Corrupt)
				// To a log: a line per 10 %, once the scrub has run long
				// enough for progress to matter.
				case !tty && pct/10 != lastPct/10 && time.Since(start) >= 5*time.Second:
					fmt.Fprintf(g.stderr, "scrub %s: %d%% (%d/%d stripes)\n", p.Pass, pct, p.Done, p.Total)
				}
				lastPct = pct
			}
			var p healer.ScrubProgress
			if t.remote != nil {
				p, err = t.remote.Scrub(ctx, !o.light, progress)
			} else {
				p, err = t.local.Scrub(ctx, healer.ScrubOptions{Deep: !o.light, Progress: progress})
			}
			if tty && !o.json {
				fmt.Fprintln(g.stderr)
			}
			if err != nil {
				return err
			}
			var rep *healer.RepairReport
			if o.repair && p.Queued > 0 {
				var r healer.RepairReport
				if t.remote != nil {
					r, err = t.remote.Heal(ctx, "")
				} else {
					r, err = t.local.RepairAll(ctx, nil)
				}
				if err != nil {
					return err
				}
				rep = &r
			}
			if o.json {
				if err := json.NewEncoder(g.stdout).Encode(struct {
					healer.ScrubProgress
					Repair *healer.RepairReport `json:"repair,omitempty"`
				}{p, rep}); err != nil {
					return err
				}
				return inlineDamagedErr(p)
			}
			fmt.Fprintf(g.stdout, "scrub %s: %d stripes checked in %s, %s read; %d shard(s) missing, %d corrupt, %d unreachable (not checked); %d stripe(s) misplaced; %d queued for repair\n",
				p.Pass, p.Done, p.Finished.Sub(p.Started).Round(time.Millisecond), humanBytes(p.Bytes), p.Missing, p.Corrupt, p.Unreachable, p.Misplaced, p.Queued)
			if rep != nil {
				fmt.Fprintf(g.stdout, "repaired %d stripe(s), %d failed, %d left in the queue\n", rep.Repaired, rep.Failed, rep.Remaining)
			}
			return inlineDamagedErr(p)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.light, "light", false, "only check each shard exists with the right size (no reads)")
	f.BoolVar(&o.repair, "repair", false, "repair what the scrub found right away")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
	return cmd
}

// inlineDamagedErr fails a scrub that found damaged inline objects: there
// are no shards to rebuild them from, so a person must act.
func inlineDamagedErr(p healer.ScrubProgress) error {
	if p.InlineDamaged == 0 {
		return nil
	}
	return fmt.Errorf("%d inline object(s) damaged in their metadata records (named in the log): restore them from a metadata snapshot (healstore recover)", p.InlineDamaged)
}
