package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer"
)

type statusOptions struct {
	json bool
}

func newStatusCmd(g *globalOptions) *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show backends, stripes by margin and the repair queue",
		Long: `status shows every backend (state, failure domain, used and free space,
shards held), how many stripes sit at each margin (shards they can still
lose), the repair queue with its rate and ETA, repair totals, scrub
progress, and the space left: what the backends that take new shards have
free, each file system counted once (local backends on one disk each see
all of it), and about how much of new objects that holds at the config's
k+m. It asks the daemon when one runs, else reads the store directly
and probes every backend once: a backend that does not answer now (or
answers wiped) shows its error under LAST ERROR and its shards count as
missing in the margins. Nothing is recorded; the daemon acts, and status
says "healer: not running" when none does.

--json prints one object with at least "backends" (each with "name" and
"state"), "healer_running", "degraded_stripes" (stripes below full redundancy),
"space" (with "free" and "for_data", in bytes) and "loss_window" (how much
metadata a lost machine would lose: time and changes since the newest
metadata snapshot on the backends).

` + exitCodesHelp,
		Args: argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := openHealer(cmd, g)
			if err != nil {
				return err
			}
			defer t.Close()
			st, err := t.status(cmd.Context())
			if err != nil {
				return err
			}
			// The loss window is worth showing but not worth failing
			// the whole status for: say why it is missing instead.
			lw, lwErr := t.lossWindow(cmd.Context())
			space := spaceOf(st, t.cfg.Policy.K, t.cfg.Policy.M)
			leader, note := t.healerNote(cmd.Context())
			if o.json {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				out := statusJSON{Status: st, LossWindow: lw, Space: space,
					HealerRunning: t.remote != nil || leader != "", HealerLeader: leader}
				if lwErr != nil {
					out.LossWindowError = lwErr.Error()
				}
				return enc.Encode(out)
			}
			if err := writeStatus(g.stdout, st, note, time.Now()); err != nil {
				return err
			}
			writeSpace(g.stdout, space)
			writeLossWindow(g.stdout, lw, lwErr, time.Now())
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print as JSON")
	return cmd
}

// writeStatus renders a status as tables. healerNote, when set, stands
// where the healer's repair counters go: st then comes from a healer run
// for this command alone, whose counters mean nothing.
func writeStatus(w io.Writer, st *healer.Status, healerNote string, now time.Time) error {
	health := "full redundancy"
	if st.DegradedStripes > 0 {
		health = fmt.Sprintf("%d degraded stripe(s), %s at risk, worst margin %d", st.DegradedStripes, humanBytes(st.BytesAtRisk), st.WorstMargin)
	}
	if st.UnreadableStripes > 0 {
		health += fmt.Sprintf("; %d stripe(s) UNREADABLE (fewer than k healthy shards)", st.UnreadableStripes)
	}
	fmt.Fprintf(w, "store %s: %d stripes, %s\n\n", st.StoreID, st.Stripes, health)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tKIND\tSTATE\tDOMAIN\tUSED\tFREE\tSHARDS\tSINCE\tLAST ERROR")
	for _, b := range st.Backends {
		state := b.State
		if b.Spare {
			state += " (spare)"
		}
		used, free := "-", "-"
		if b.CapacityKnown {
			used, free = humanBytes(b.Used), humanBytes(b.Free)
		}
		lastErr := b.LastError
		if len(lastErr) > 60 {
			lastErr = lastErr[:57] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", b.Name, b.Kind, state, b.Domain, used, free, b.Shards, ago(now, b.Since), lastErr)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var margins []int
	for k := range st.Margins {
		if m, err := strconv.Atoi(k); err == nil {
			margins = append(margins, m)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(margins)))
	var parts []string
	for _, m := range margins {
		parts = append(parts, fmt.Sprintf("%d: %d", m, st.Margins[strconv.Itoa(m)]))
	}
	if len(parts) == 0 {
		parts = append(parts, "no stripes")
	}
	fmt.Fprintf(w, "\nstripes by margin (shards they can still lose): %s\n", strings.Join(parts, ", "))
	if st.Misplaced > 0 {
		fmt.Fprintf(w, "stripes breaking the placement invariant: %d\n", st.Misplaced)
	}
	q := st.Queue
	eta := "-"
	switch {
	case q.Depth == 0:
		eta = "nothing to do"
	case q.RemainingBytes == 0 && st.UnreadableStripes > 0:
		eta = "none: unreadable stripes wait for a shard to come back"
	case q.ETASeconds >= 0:
		eta = (time.Duration(q.ETASeconds) * time.Second).String()
	case q.RemainingBytes > 0:
		eta = "unknown (no repair running)"
	}
	fmt.Fprintf(w, "\nrepair queue: %d stripe(s), oldest %s, %s to rebuild, rate %s/s, ETA %s\n",
		q.Depth, (time.Duration(q.OldestAgeSeconds) * time.Second).String(), humanBytes(q.RemainingBytes), humanBytes(int64(q.RateBytesPerSec)), eta)
	for _, e := range q.Head {
		line := fmt.Sprintf("  %s margin %d: %s", e.Stripe[:12], e.Margin, e.Reason)
		if e.Attempts > 0 {
			line += fmt.Sprintf(" (%d attempt(s); last: %s)", e.Attempts, e.LastError)
		}
		fmt.Fprintln(w, line)
	}
	if healerNote != "" {
		fmt.Fprintf(w, "\nhealer: %s\n", healerNote)
	} else {
		r := st.Repairs
		fmt.Fprintf(w, "\nrepairs since start: %d done, %d failed, %d no-op; %s rebuilt from %s read", r.Repaired, r.Failed, r.NoOp, humanBytes(r.BytesWritten), humanBytes(r.BytesRead))
		if r.ReadAmplification > 0 {
			fmt.Fprintf(w, " (read amplification %.2f)", r.ReadAmplification)
		}
		fmt.Fprintln(w)
		for _, f := range r.LastFailures {
			fmt.Fprintf(w, "  failed %s %s: %s\n", ago(now, f.Time), f.Stripe[:12], f.Error)
		}
	}
	for _, pass := range []string{"light", "deep"} {
		p, ok := st.Scrub[pass]
		if !ok {
			continue
		}
		state := fmt.Sprintf("%.0f%% (%d/%d stripes)", 100*p.Fraction(), p.Done, p.Total)
		if !p.Finished.IsZero() {
			state = "finished " + ago(now, p.Finished)
		}
		if healerNote != "" {
			state += ", where the last healer left it"
		}
		fmt.Fprintf(w, "scrub %s: %s; found %d missing, %d corrupt, %d misplaced\n", pass, state, p.Missing, p.Corrupt, p.Misplaced)
	}
	s := st.Settings
	rate := "no cap"
	if s.RateLimit > 0 {
		rate = humanBytes(s.RateLimit) + "/s"
	}
	fmt.Fprintf(w, "settings: %d worker(s), rebuild %s, grace %s\n", s.Workers, rate, s.Grace)
	return nil
}

// healerNote says whether a healer works on the store when the command
// runs its own (no daemon answered): leader names the process that leads
// the store's maintenance on etcd, and note is the line status shows
// instead of repair counters. Both are "" when the command talks to a
// daemon.
func (t *healerTarget) healerNote(ctx context.Context) (leader, note string) {
	if t.remote != nil {
		return "", ""
	}
	if t.cfg.Metastore.Kind == "etcd" {
		if id, err := t.store.Leader(ctx); err == nil && id != "" {
			return id, fmt.Sprintf("runs in %s, which leads this store's maintenance; its own status (healer.metrics_addr on its machine) shows its repairs", id)
		}
	}
	return "", "not running: no daemon holds this store, so nothing repairs, scrubs or collects garbage until one runs (healstore daemon, or healstore mount --with-healer)"
}

// ago formats how long before now t was.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// statusJSON is `status --json`: the healer's status with the metadata
// loss window beside it.
type statusJSON struct {
	*healer.Status
	// HealerRunning: a daemon answered for the store, or (etcd) another
	// process leads its maintenance, HealerLeader naming it. Without
	// one nothing repairs, scrubs or collects garbage, and the repair
	// counters are those of a healer run for this command alone.
	HealerRunning   bool                  `json:"healer_running"`
	HealerLeader    string                `json:"healer_leader,omitempty"`
	LossWindow      *healstore.LossWindow `json:"loss_window,omitempty"`
	LossWindowError string                `json:"loss_window_error,omitempty"`
	Space           space                 `json:"space"`
}

// space is the room left for new objects, as status shows it.
type space struct {
	// Free is what the counted backends' file systems have free, each
	// file system once: local backends on one disk each report all of it.
	Free        int64 `json:"free"`
	FileSystems int   `json:"file_systems"`
	Backends    int   `json:"backends"`
	// ForData is about how many bytes of new objects fit: Free times
	// k/(k+m) of the config's policy (less when backends are few).
	ForData int64 `json:"for_data"`
	// Unknown counts backends that take new shards but report no
	// capacity (S3 without a quota): not in Free.
	Unknown int `json:"unknown"`
	K       int `json:"k"`
	M       int `json:"m"`
}

// spaceOf sums the free space of the backends that take new shards (up,
// answering, not spares), counting each Device once.
func spaceOf(st *healer.Status, k, m int) space {
	sp := space{K: k, M: m}
	var sum backends.SpaceSum
	for _, b := range st.Backends {
		if b.State != "up" || b.Spare || b.LastError != "" {
			continue
		}
		if !b.CapacityKnown {
			sp.Unknown++
			continue
		}
		sp.Backends++
		sum.Add(backends.Capacity{Known: true, Used: b.Used, Free: b.Free, Limit: b.Limit, Device: b.Device,
			DeviceFree: b.DeviceFree, DeviceTotal: b.DeviceTotal})
	}
	sp.Free, sp.FileSystems = sum.Free, sum.Spaces
	if k+m > 0 {
		sp.ForData = int64(float64(sp.Free) * float64(k) / float64(k+m))
	}
	return sp
}

// writeSpace prints the room left, one line.
func writeSpace(w io.Writer, sp space) {
	if sp.Backends == 0 && sp.Unknown == 0 {
		fmt.Fprintf(w, "\nspace: unknown (no backend that takes new shards has reported its capacity)\n")
		return
	}
	fmt.Fprintf(w, "\nspace: %s free on %d file system(s) of %d backend(s); about %s of new objects at %d+%d",
		humanBytes(sp.Free), sp.FileSystems, sp.Backends, humanBytes(sp.ForData), sp.K, sp.M)
	if sp.Unknown > 0 {
		fmt.Fprintf(w, "; %d backend(s) of unknown capacity not counted", sp.Unknown)
	}
	fmt.Fprintln(w)
}

// writeLossWindow prints how much metadata the newest snapshot on the
// backends leaves uncovered.
func writeLossWindow(w io.Writer, lw *healstore.LossWindow, err error, now time.Time) {
	switch {
	case err != nil:
		fmt.Fprintf(w, "metadata snapshots: unknown (%v)\n", err)
	case lw.Covered.IsZero():
		fmt.Fprintln(w, "metadata snapshots: none yet; a lost machine loses all metadata (the daemon takes them)")
	default:
		changes := "unknown"
		if lw.Changes >= 0 {
			changes = strconv.FormatInt(lw.Changes, 10)
		}
		fmt.Fprintf(w, "metadata snapshots: the newest covers every commit up to %s; %s change(s) since (the loss window)\n", ago(now, lw.Covered), changes)
	}
	if err == nil && lw.LastError != "" {
		fmt.Fprintf(w, "  last snapshot failure %s: %s\n", ago(now, lw.LastErrorAt), lw.LastError)
	}
}
