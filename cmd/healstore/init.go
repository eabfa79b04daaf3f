package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/encoder"
)

type initOptions struct {
	backends    int
	k, m        int
	force       bool
	provisioner string
}

func newInitCmd(g *globalOptions) *cobra.Command {
	o := &initOptions{}
	cmd := &cobra.Command{
		Use:   "init DIR",
		Short: "Create a new store on local backends in DIR",
		Long: `init writes DIR/healstore.toml (mode 0600), a fresh master key in
DIR/healstore.key (0600), an empty secrets file DIR/secrets.toml (0600), and
local backends in DIR/backends/b1..bN, each its own failure domain. The
default policy, 4 data + 2 parity shards over six backends, survives the loss
of any two backends. Writes need five of them (the write quorum, k+1): with
two lost they fail until the healer has replaced one (--backends 7 keeps
them going; write_quorum in the config trades safety for availability).

The config names the local provisioner: while the healer runs (healstore
daemon, or healstore mount --with-healer), a backend that stays down past the
grace period is replaced by a new directory under DIR/provisioned and its
shards are rebuilt there. --provisioner none leaves replacements to you
(healstore backend add).

Back up DIR/healstore.key: without it no object can be read.

init refuses if DIR/healstore.toml or DIR/healstore.key exists. --force
rewrites DIR/healstore.toml (naming init's backends DIR/backends/b1..bN)
and keeps an existing DIR/healstore.key and DIR/secrets.toml; objects
already stored stay readable. It refuses if the existing config puts one
of those backend names elsewhere (edit the config instead). init never
replaces a key: if DIR/meta holds a store's metadata but DIR/healstore.key
is missing, it refuses even with --force (a new key could not read the
store); restore the key from your backup, or rebuild the store into a new
directory with healstore recover.

` + exitCodesHelp,
		Args: argsBetween(1, 1),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			if o.k < 1 || o.m < 1 {
				return usagef("--k and --m must be at least 1")
			}
			pol := encoder.DefaultPolicy()
			pol.K, pol.M = o.k, o.m
			if err := pol.Validate(0); err != nil {
				return usagef("--k %d --m %d: %v", o.k, o.m, err)
			}
			if o.provisioner != "local" && o.provisioner != "none" {
				return usagef("--provisioner %q: use local or none", o.provisioner)
			}
			if o.backends != 0 && o.backends < o.k+o.m {
				return usagef("--backends %d is fewer than k+m = %d: shards need distinct backends", o.backends, o.k+o.m)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			pol := encoder.DefaultPolicy()
			pol.K, pol.M = o.k, o.m
			prov := o.provisioner
			if prov == "none" {
				prov = ""
			}
			_, kerr := os.Stat(filepath.Join(args[0], "healstore.key"))
			keptKey := kerr == nil && o.force
			path, err := healstore.Init(args[0], healstore.InitOptions{Policy: pol, Backends: o.backends, Force: o.force, Provisioner: prov})
			if err != nil {
				return err
			}
			// Open once so the metadata, the backends' identity markers
			// and the key fingerprint exist before the first put.
			cfg, err := healstore.LoadConfig(path)
			if err != nil {
				return err
			}
			s, err := healstore.Open(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if err := s.Close(); err != nil {
				return err
			}
			if keptKey { // a backend the store made on open has its directory now
				for _, b := range cfg.Backends {
					data := filepath.Join(b.Path, "data")
					if _, err := os.Stat(data); errors.Is(err, fs.ErrNotExist) {
						fmt.Fprintf(g.stderr, "healstore init: warning: backend %s: %s is gone and was not made again "+
							"(a volume not mounted?). Mount it; for a new, empty disk make the directory by hand and the healer refills it\n", b.Name, data)
					}
				}
			}
			n := o.backends
			if n == 0 {
				n = o.k + o.m
			}
			what := "Created a store in"
			if keptKey {
				what = "Wrote a new config, keeping the master key, for the store in"
			}
			fmt.Fprintf(g.stdout, `%s %s: policy %d+%d over %d local backends (%s).
  config:     %s
  master key: %s  (back it up: without it nothing can be read)
`, what, args[0], o.k, o.m, n, survival(o.k, o.m, n), path, cfg.MasterKeyFile)
			if prov == "local" {
				fmt.Fprintf(g.stdout, "  healing:    a lost backend is replaced under %s while the healer runs\n",
					filepath.Join(args[0], healstore.InitProvisionDir))
			} else {
				fmt.Fprintf(g.stdout, "  healing:    no provisioner; replace lost backends with healstore backend add\n")
			}
			fmt.Fprintf(g.stdout, `
Next:
  export HEALSTORE_CONFIG=%s
  healstore put NAME FILE
  healstore get NAME -
  healstore daemon        (the healer: replaces lost backends, rebuilds, scrubs)
`, path)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.k, "k", 4, "data shards per stripe")
	f.IntVar(&o.m, "m", 2, "parity shards per stripe (backends that may be lost at once)")
	f.IntVar(&o.backends, "backends", 0, "number of local backends (default k+m)")
	f.BoolVar(&o.force, "force", false, "rewrite an existing healstore.toml, keeping the existing master key (never replaced)")
	f.StringVar(&o.provisioner, "provisioner", "local", "replace lost backends with new local directories (local) or not at all (none)")
	return cmd
}

// survival says what a new store of k+m shards over n backends goes on
// through: its data any m lost backends, its writes only as many as leave
// the write quorum (k+1, init's default) in distinct backends. Over k+m
// backends that is m-1: a user told only "survives 2" would not expect
// writes to fail with two lost until the healer has replaced one.
func survival(k, m, n int) string {
	plural := func(n int, one string) string {
		if n == 1 {
			return fmt.Sprintf("%d %s", n, one)
		}
		return fmt.Sprintf("%d %ss", n, one)
	}
	data := "data survives " + plural(m, "lost backend")
	switch w := n - (k + 1); {
	case w >= m:
		return fmt.Sprintf("%s; writes go on with %d lost", data, m)
	case w > 0:
		return fmt.Sprintf("%s; writes go on with %d lost, with more once lost ones are replaced", data, w)
	default:
		return fmt.Sprintf("%s; writes need all %d up, or lost ones replaced", data, n)
	}
}
