package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/bench"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/metastore"
)

func newBackendCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backend",
		Short: "List, add, drain and remove backends",
	}
	cmd.AddCommand(newBackendLsCmd(g), newBackendAddCmd(g), newBackendDrainCmd(g), newBackendRmCmd(g))
	return cmd
}

type backendLsOptions struct{ json bool }

func newBackendLsCmd(g *globalOptions) *cobra.Command {
	o := &backendLsOptions{}
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List backends with state, domain and shards held",
		Args:  argsBetween(0, 0),
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
			if o.json {
				return json.NewEncoder(g.stdout).Encode(st.Backends)
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tSTATE\tDOMAIN\tSPARE\tSHARDS")
			for _, b := range st.Backends {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%d\n", b.Name, b.Kind, b.State, b.Domain, b.Spare, b.Shards)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print as JSON")
	return cmd
}

type backendAddOptions struct {
	spec        backends.Spec
	quota       string
	secretStdin bool
}

func newBackendAddCmd(g *globalOptions) *cobra.Command {
	o := &backendAddOptions{}
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Register a new backend (it is marked, probed and used at once)",
		Long: `add registers backend NAME in the store's metadata (backends added here
do not go in the config file), writes its identity marker and starts using
it. A zdb password or S3 secret key is read from stdin with --secret-stdin
and saved in the secrets file under --secret-ref; it never appears in
arguments, logs or metadata. A flag of another kind (--bucket with --kind
local, --path with --kind zdb) is refused, and nothing is added.

Examples:
  healstore backend add b7 --kind local --path /mnt/disk7/healstore --node host3
  healstore backend add s3a --kind s3 --address 10.0.0.5:7070 --bucket healstore \
      --access-key AK --secret-ref s3/s3a --secret-stdin < secret.txt

` + exitCodesHelp,
		Args: argsBetween(1, 1),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			o.spec.Name = args[0]
			if err := checkKindFlags(cmd, o.spec.Kind); err != nil {
				return err
			}
			if o.quota != "" {
				q, err := bench.ParseSize(o.quota)
				if err != nil {
					return usagef("--quota: %v", err)
				}
				o.spec.Quota = q
			}
			if err := o.spec.ValidateInput(); err != nil {
				return usagef("%v", err)
			}
			if o.spec.Kind == backends.KindLocal && !filepath.IsAbs(o.spec.Path) {
				// Relative to here, as a path argument is; the record must
				// not depend on where a daemon or the next command runs.
				p, err := filepath.Abs(o.spec.Path)
				if err != nil {
					return usagef("--path %s: %v", o.spec.Path, err)
				}
				o.spec.Path = p
			}
			if o.secretStdin && o.spec.SecretRef == "" {
				return usagef("--secret-stdin needs --secret-ref (the name the secret is saved under)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			secret := ""
			if o.secretStdin {
				line, err := bufio.NewReader(g.stdin).ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("read secret from stdin: %w", err)
				}
				secret = strings.TrimSpace(line)
			}
			t, err := openHealer(cmd, g)
			if err != nil {
				return err
			}
			defer t.Close()
			if t.remote != nil {
				err = t.remote.AddBackend(cmd.Context(), o.spec, secret)
			} else {
				err = t.local.AddBackend(cmd.Context(), o.spec, secret)
			}
			if err != nil {
				return backendAddError(o.spec.Name, err)
			}
			fmt.Fprintf(g.stdout, "backend %s added (%s)\n", o.spec.Name, o.spec.Domain(t.cfg.PlacementLevel))
			return nil
		},
	}
	f := cmd.Flags()
	s := &o.spec
	f.StringVar(&s.Kind, "kind", "", "local, zdb or s3 (required)")
	f.StringVar(&s.Path, "path", "", "directory (local)")
	f.StringVar(&s.Address, "address", "", "host:port (zdb, s3)")
	f.StringVar(&s.Namespace, "namespace", "", "0-db namespace (zdb)")
	f.StringVar(&s.Bucket, "bucket", "", "bucket (s3)")
	f.StringVar(&s.Prefix, "prefix", "", "key prefix (s3)")
	f.StringVar(&s.Region, "region", "", "region (s3)")
	f.BoolVar(&s.TLS, "tls", false, "use TLS (s3)")
	f.StringVar(&s.AccessKey, "access-key", "", "access key id (s3)")
	f.StringVar(&s.SecretRef, "secret-ref", "", "secrets-file entry holding the password or secret key")
	f.StringVar(&o.quota, "quota", "", "capacity to use, e.g. 500GiB (default: none)")
	f.StringVar(&s.Node, "node", "", "node failure-domain label")
	f.StringVar(&s.Farm, "farm", "", "farm failure-domain label")
	f.BoolVar(&s.Spare, "spare", false, "keep as a spare: only rebuilds and retries write to it")
	f.BoolVar(&o.secretStdin, "secret-stdin", false, "read the secret from the first line of stdin")
	return cmd
}

// checkKindFlags refuses a flag given for a kind it does not apply to
// (--bucket for a local backend), even with its default value
// (--tls=false): the backend would be added without the setting the user
// believes took effect. Which flag applies to which kind is
// backends.KindFields, the spec field's key spelt as a flag; --secret-stdin
// goes with --secret-ref. An unknown or missing kind is left to
// Spec.Validate.
func checkKindFlags(cmd *cobra.Command, kind string) error {
	switch kind {
	case backends.KindLocal, backends.KindZDB, backends.KindS3:
	default:
		return nil
	}
	for _, f := range backends.KindFields() {
		flags := []string{strings.ReplaceAll(f.Key, "_", "-")}
		if f.Key == "secret_ref" {
			flags = append(flags, "secret-stdin")
		}
		for _, name := range flags {
			if cmd.Flags().Changed(name) && !f.AppliesTo(kind) {
				return usagef("--%s %s", name, f.NotFor(kind))
			}
		}
	}
	return nil
}

type backendDrainOptions struct {
	wait time.Duration
}

func newBackendDrainCmd(g *globalOptions) *cobra.Command {
	o := &backendDrainOptions{}
	cmd := &cobra.Command{
		Use:   "drain NAME",
		Short: "Move every shard off a backend, then retire it",
		Long: `drain marks backend NAME draining (no new shards) and queues every stripe
with a shard on it. Each such shard is rebuilt on another backend from the
stripe's other shards, in parallel, never by copying from the leaving
backend alone; when it holds nothing, it is retired.

Without a daemon, drain does the work itself and returns when the backend is
retired. With a daemon, it starts the drain and returns; --wait polls until
the backend is retired (or the wait runs out), asking the daemon's status
every 2 s at first and less often later, up to every 10 s. Ctrl-C stops the
waiting at once; the drain goes on in the daemon.

` + exitCodesHelp,
		Args: argsBetween(1, 1),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			if o.wait < 0 {
				return usagef("%s: --wait %s is negative", cmd.CommandPath(), o.wait)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			t, err := openHealer(cmd, g)
			if err != nil {
				return err
			}
			defer t.Close()
			ctx, err := t.maintain(cmd, g.stderr)
			if err != nil {
				return err
			}
			if t.remote != nil {
				if err := t.remote.Drain(ctx, name); err != nil {
					return noSuchBackend(name, err)
				}
				fmt.Fprintf(g.stdout, "draining %s (the daemon moves its shards)\n", name)
				if o.wait == 0 {
					return nil
				}
				return waitRetired(ctx, backendStatusFrom(t.remote), name, o.wait, g.stdout)
			}
			h := t.local
			if err := h.Drain(ctx, name); err != nil {
				return noSuchBackend(name, err)
			}
			p := newCountProgress(g, "moving shards off "+name)
			rep, err := h.RepairAll(ctx, nil)
			p.finish()
			if err != nil {
				return err
			}
			if err := h.ProbeAll(ctx); err != nil {
				fmt.Fprintf(g.stderr, "healstore: warning: probing backends: %v\n", err)
			}
			st, err := h.Status(ctx)
			if err != nil {
				return err
			}
			for _, b := range st.Backends {
				if b.Name == name {
					fmt.Fprintf(g.stdout, "%s is %s; %d stripe(s) moved (%s written), %d failed\n", name, b.State, rep.Repaired, humanBytes(rep.BytesWritten), rep.Failed)
					if b.State != "retired" {
						return fmt.Errorf("%s still holds %d shard(s); run drain again once the failures above are resolved", name, b.Shards)
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&o.wait, "wait", 0, "with a daemon: wait this long for the backend to be retired")
	return cmd
}

// How often drain --wait asks the daemon: first after drainPollFirst, then
// twice as long each time, up to drainPollMax.
const (
	drainPollFirst = 2 * time.Second
	drainPollMax   = 10 * time.Second
)

// waitRetired polls the daemon until backend name is retired, wait runs
// out, or ctx ends: main's ctx ends at Ctrl-C or SIGTERM
// (signal.NotifyContext), and the wait stops at once, saying that the
// drain goes on in the daemon and how to follow it. (It slept a second
// at a time without noticing, then failed with "context canceled".)
// Each time the shards left on the backend change, it says how many.
//
// It asks every 2 s at first and less often as the drain goes on, up to
// every 10 s: a drain takes minutes to hours.
func waitRetired(ctx context.Context, backend func(context.Context, string) (*healer.BackendStatus, error), name string, wait time.Duration, stdout io.Writer) error {
	deadline := time.Now().Add(wait)
	interrupted := func() error {
		return fmt.Errorf("stopped waiting for %s to be retired; the drain goes on in the daemon: "+
			"`healstore backend ls` shows its state and the shards it still holds, `healstore backend drain %s --wait %s` waits again",
			name, name, wait)
	}
	interval := drainPollFirst
	left := -1
	for {
		bs, err := backend(ctx, name)
		if ctx.Err() != nil {
			return interrupted()
		}
		if err != nil {
			return err
		}
		if bs.State == "retired" {
			fmt.Fprintf(stdout, "%s retired\n", name)
			return nil
		}
		if bs.Shards != left {
			left = bs.Shards
			fmt.Fprintf(stdout, "%s %s: %d shards left\n", name, bs.State, left)
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return fmt.Errorf("%s not retired within %s; the drain goes on in the daemon (healstore backend ls shows its state)", name, wait)
		}
		tm := time.NewTimer(min(interval, remaining))
		select {
		case <-ctx.Done():
			tm.Stop()
			return interrupted()
		case <-tm.C:
		}
		interval = nextDrainPoll(interval)
	}
}

// backendStatusFrom asks the daemon for one backend's status, and a daemon
// older than GET /v1/backends/{name} (which answers that route 405: only
// DELETE was there) for its whole status, which counts every stripe.
func backendStatusFrom(c *healer.Client) func(context.Context, string) (*healer.BackendStatus, error) {
	return func(ctx context.Context, name string) (*healer.BackendStatus, error) {
		bs, err := c.Backend(ctx, name)
		var de *healer.DaemonError
		if !errors.As(err, &de) || de.Status != http.StatusMethodNotAllowed {
			return bs, err
		}
		st, err := c.Status(ctx)
		if err != nil {
			return nil, err
		}
		for _, b := range st.Backends {
			if b.Name == name {
				return &b, nil
			}
		}
		return nil, fmt.Errorf("backend %s: %w", name, metastore.ErrNotFound)
	}
}

// nextDrainPoll is the interval after d: twice as long, up to drainPollMax.
func nextDrainPoll(d time.Duration) time.Duration { return min(2*d, drainPollMax) }

func newBackendRmCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Forget a backend that holds no shards (drain it first)",
		Args:  argsBetween(1, 1),
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
			for _, b := range t.cfg.Backends {
				if b.Name == args[0] {
					// The store registers config backends again at every open.
					return fmt.Errorf("backend %s is listed in %s; drain it, delete its [[backends]] entry, then run rm", args[0], t.cfg.Path())
				}
			}
			if t.remote != nil {
				err = t.remote.RemoveBackend(ctx, args[0])
			} else {
				err = t.local.RemoveBackend(ctx, args[0])
			}
			if err != nil {
				return noSuchBackend(args[0], err)
			}
			fmt.Fprintf(g.stdout, "backend %s removed\n", args[0])
			return nil
		},
	}
}

// noSuchBackend words the error of a command on a backend the store does
// not have (here or from the daemon) for the user, with exitNotFound, as
// rm does for a missing object; other errors pass through.
func noSuchBackend(name string, err error) error {
	if errors.Is(err, metastore.ErrNotFound) || daemonStatus(err) == http.StatusNotFound {
		return &notFoundError{fmt.Errorf("backend %s: no such backend (healstore backend ls lists them)", name)}
	}
	return err
}

// backendAddError words backend add's error (here or from the daemon) for
// the user. Only the name taken is worded here: a daemon's 409 may be
// another conflict (a secret ref holding another secret), and its message
// says which. The daemon's reply carries the kind as a code, which
// errors.Is matches (a daemon older than the code is known by its
// message). A secret ref in use is --secret-ref's fault, so a usage error
// like the name; a backend that does not work exits 1 (unreachable).
func backendAddError(name string, err error) error {
	switch {
	case errors.Is(err, healer.ErrBackendExists),
		daemonStatus(err) == http.StatusConflict && daemonCode(err) == "" && strings.Contains(err.Error(), healer.ErrBackendExists.Error()):
		return usagef("backend %s already exists; choose another name (healstore backend ls lists them)", name)
	case errors.Is(err, healer.ErrSecretInUse):
		return &usageError{err}
	}
	return err
}

// daemonCode is the machine-readable kind of an error the daemon
// answered with, else "".
func daemonCode(err error) string {
	var de *healer.DaemonError
	if errors.As(err, &de) {
		return de.Code
	}
	return ""
}

// daemonStatus is the HTTP status of an error the daemon answered with,
// else 0.
func daemonStatus(err error) int {
	var de *healer.DaemonError
	if errors.As(err, &de) {
		return de.Status
	}
	return 0
}
