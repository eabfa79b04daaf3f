package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/metastore"
)

type daemonOptions struct {
	addr string
}

func newDaemonCmd(g *globalOptions) *cobra.Command {
	o := &daemonOptions{}
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the healer: monitor, rebuild, scrub, collect garbage; serve metrics and status",
		Long: `daemon runs the healer until SIGTERM or SIGINT: it probes every backend,
declares a backend down after the grace period (healer.grace_period),
provisions a replacement (healer.provisioner), rebuilds missing shards,
scrubs every stripe over healer.scrub_period and deletes garbage.

It serves Prometheus metrics at /metrics, the JSON status at /status and the
healer API (used by status, heal, scrub and backend while the daemon runs) on
--addr, by default healer.metrics_addr (127.0.0.1:9310). Logs go to stderr
at --log-level (info unless given).

` + exitCodesHelp,
		Args: argsBetween(0, 0),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			if o.addr != "" {
				if err := checkListenAddr(o.addr); err != nil {
					return usagef("%s: --addr %q: %v; give host:port, such as 127.0.0.1:9310", cmd.CommandPath(), o.addr, err)
				}
			}
			if !cmd.Flags().Changed("log-level") {
				g.logLevel = "info"
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, cfg, err := openStore(cmd, g)
			if err != nil {
				return err
			}
			defer s.Close()
			return s.RunDaemon(cmd.Context(), healstore.DaemonOptions{Addr: o.addr, Ready: func(addr string) {
				objects := ""
				if sock := filepath.Join(cfg.MetadataDir, healstore.ObjectsSocketName); cfg.Metastore.Kind != "etcd" {
					if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
						objects = fmt.Sprintf(", objects for put, get, ls, stat and rm on %s", sock)
					}
				}
				fmt.Fprintf(g.stderr, "healstore: daemon serving on http://%s (metrics, status)%s; stop with SIGTERM\n", addr, objects)
			}})
		},
	}
	cmd.Flags().StringVar(&o.addr, "addr", "", "listen address (default: healer.metrics_addr from the config)")
	return cmd
}

// checkListenAddr checks that addr has the host:port form a listener
// takes (the host may be empty: every interface).
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("port %q: %w", port, err)
	}
	return nil
}

// healerTarget is the healer a command talks to: in this process (no
// daemon holds the store) or the running daemon's API.
type healerTarget struct {
	store   *healstore.Store
	local   *healstore.Healer
	remote  *healer.Client
	cfg     *healstore.Config
	release func() // hands the maintenance leadership back (maintain)
}

func (t *healerTarget) Close() {
	if t.release != nil {
		t.release()
	}
	if t.local != nil {
		t.local.Close()
	}
	if t.store != nil {
		t.store.Close()
	}
}

// daemonAnswerWait is how long a command waits for the daemon at
// healer.metrics_addr to say which store it serves, its first contact
// with the daemon; later calls (a status, a heal) have no bound.
var daemonAnswerWait = 3 * time.Second

// openHealer opens the store and its healer here, or, when a daemon
// holds the store (its metadata is locked), connects to the daemon.
func openHealer(cmd *cobra.Command, g *globalOptions) (*healerTarget, error) {
	cfg, err := loadConfig(g)
	if err != nil {
		return nil, err
	}
	ctx := cmd.Context()
	s, err := healstore.Open(ctx, cfg)
	if errors.Is(err, metastore.ErrLocked) {
		c := daemonClient(cfg)
		// Asked first, and within daemonAnswerWait, which store it
		// serves (quick, no census): a daemon that is hung or stopped
		// accepts the connection and never answers, and the command
		// waited for it forever without a word. Stores made by init
		// share the default address, so the daemon there may also be
		// another store's.
		said, silent, perr := healstore.DaemonServes(ctx, c.Addr, cfg, daemonAnswerWait)
		if perr == nil && said {
			return &healerTarget{remote: c, cfg: cfg}, nil
		}
		if perr == nil {
			// An older daemon, which does not say which store it serves:
			// its status says it is a healer. That takes a census of
			// every stripe, which may take long on a large store: no
			// bound on it.
			if _, perr = c.Status(ctx); perr == nil {
				return &healerTarget{remote: c, cfg: cfg}, nil
			}
		}
		hint := fmt.Sprintf("; no healer answers at %s (healer.metrics_addr) for this command to talk to", cfg.Healer.MetricsAddr)
		switch {
		case silent:
			h := findLockHolder(cfg.MetadataDir)
			if h.command == "" || h.command == "daemon" || (h.command == "mount" && h.withHealer) {
				return nil, &lockedError{msg: silentDaemonMessage(cmd.CommandPath(), cfg, h, daemonAnswerWait), err: perr}
			}
			// The holder serves no API (a short command, or a mount
			// without the healer): whatever is silent at the address is
			// not this store's daemon. Wait for the holder as when
			// nothing listens there.
			hint = fmt.Sprintf("; the process at %s (healer.metrics_addr) does not answer", cfg.Healer.MetricsAddr)
		case errors.Is(perr, healstore.ErrOtherStore):
			hint = "; " + perr.Error()
		case !errors.Is(perr, healer.ErrNoDaemon):
			return nil, perr
		}
		// No daemon of this store: another command holds it; wait for it.
		s, err = openWaiting(ctx, g, cmd.CommandPath(), cfg, hint, healstore.Open)
	}
	var le *lockedError
	if errors.As(err, &le) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("open store (%s): %w", cfg.Path(), err)
	}
	if cfg.Metastore.Kind == "etcd" {
		// Several processes share the store; a daemon of this store on
		// this machine does the work (or names the leader that must).
		// Asked which store it serves, not for its status: that takes a
		// census of every stripe, longer than this wait on a large store,
		// and the command then ran a healer here that waited for the
		// leadership the daemon holds, and failed.
		c := daemonClient(cfg)
		pctx, cancel := context.WithTimeout(ctx, daemonAnswerWait)
		id := ""
		if ds, perr := healstore.AskDaemonStore(pctx, c.Addr); perr == nil && ds != nil {
			id = ds.StoreID
		} else if perr == nil {
			// A daemon older than GET /v1/store.
			if st, perr := c.Status(pctx); perr == nil {
				id = st.StoreID
			}
		}
		cancel()
		if id == s.StoreID() {
			s.Close()
			return &healerTarget{remote: c, cfg: cfg}, nil
		}
	}
	for _, u := range s.Unreachable() {
		fmt.Fprintf(g.stderr, "healstore: warning: backend %s is unreachable: %s\n", u.Name, u.Error)
	}
	h, err := s.NewHealer(ctx, healstore.HealerOptions{})
	if err != nil {
		s.Close()
		return nil, err
	}
	return &healerTarget{store: s, local: h, cfg: cfg}, nil
}

// leaderWait is how long a maintenance command waits to lead the store's
// maintenance: a leader that died holds it until its lease expires.
const leaderWait = healstore.DefaultLeaderTTL + time.Second

// maintain prepares a command that repairs, scrubs, drains or removes a
// backend through a healer in this process. On an etcd metastore shared
// with other processes it takes the store's maintenance leadership for the
// command's run (released by Close), so its healer never works beside a
// daemon's: one could delete as garbage a shard the other had just rebuilt
// in the same place. It returns the context to do the work under, which
// ends if the leadership is lost. A command that talks to the daemon, or a
// store on pebble (one process at a time), needs nothing.
func (t *healerTarget) maintain(cmd *cobra.Command, stderr io.Writer) (context.Context, error) {
	ctx := cmd.Context()
	if t.local == nil {
		return ctx, nil
	}
	if id, err := t.store.Leader(ctx); err == nil && id != "" && t.cfg.Metastore.Kind == "etcd" {
		fmt.Fprintf(stderr, "healstore: %s leads this store's maintenance; waiting up to %s for it to hand over\n", id, leaderWait)
	}
	lctx, release, err := t.store.HoldLeadership(ctx, leaderWait)
	if errors.Is(err, healstore.ErrNotLeader) {
		return nil, fmt.Errorf("%s: %w: its healer works on this store, and a second one here could race with it. "+
			"Run the command on that machine (its daemon answers there on healer.metrics_addr), or stop that process first", cmd.CommandPath(), err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	t.release = release
	return lctx, nil
}

// lossWindow returns the store's metadata loss window from wherever the
// store is open.
func (t *healerTarget) lossWindow(ctx context.Context) (*healstore.LossWindow, error) {
	if t.remote != nil {
		return healstore.DaemonLossWindow(ctx, t.remote.Addr)
	}
	return t.store.LossWindow(ctx)
}

// status returns the healer's status from wherever it runs.
func (t *healerTarget) status(ctx context.Context) (*healer.Status, error) {
	if t.remote != nil {
		return t.remote.Status(ctx)
	}
	// No daemon keeps the recorded states current: probe every backend
	// now, so one lost since the daemon last ran does not show as up.
	if err := t.local.Look(ctx); err != nil {
		return nil, fmt.Errorf("probe backends: %w", err)
	}
	return t.local.Status(ctx)
}

// daemonClient talks to the daemon at cfg's healer.metrics_addr, with the
// daemon's API token when this user can read it. One that cannot gets
// the daemon's own refusal, which says what to do, at its first change.
func daemonClient(cfg *healstore.Config) *healer.Client {
	token, _ := healstore.DaemonToken(cfg)
	return &healer.Client{Addr: cfg.Healer.MetricsAddr, Token: token}
}
