package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/bench"
	"github.com/healstore/healstore/fuse"
)

type mountOptions struct {
	name       string
	cacheDir   string
	cacheSize  string
	blockSize  string
	readCache  string
	allowOther bool
	force      bool
	withHealer bool
	timeout    time.Duration
	debug      bool
	opts       fuse.Options // filled in PreRunE
}

func newMountCmd(g *globalOptions) *cobra.Command {
	o := &mountOptions{}
	cmd := &cobra.Command{
		Use:   "mount MOUNTPOINT",
		Short: "Mount the store as a POSIX filesystem (FUSE) and serve it in the foreground",
		Long: `mount serves a filesystem kept in the store at MOUNTPOINT until it is
unmounted (healstore umount MOUNTPOINT, umount, SIGTERM or SIGINT); then it
uploads what is still in its write-back cache and exits.

Writes return once they are in the local write-back cache (--cache-dir, at
most --cache-size of data not yet uploaded); fsync and close return once the
file's data is in healstore. A mount process that dies leaves its cache
behind; the next mount on the same cache replays it, and detaches the stale
mount point first. Root mounts with mount(2); other users need fusermount3.

With --with-healer the healer daemon runs in the same process (as
healstore daemon would), so one service keeps the data and its redundancy.
With the metadata in pebble (the default) the mount holds it and no daemon
can open the store meanwhile: without --with-healer nothing repairs it
while it is mounted.
See docs/fuse.md for mounting at boot with systemd.

` + exitCodesHelp,
		Args: argsBetween(1, 1),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			sizes := []struct {
				flag, v string
				dst     *int64
			}{{"cache-size", o.cacheSize, &o.opts.CacheSize}, {"read-cache", o.readCache, &o.opts.ReadCacheSize}}
			for _, s := range sizes {
				if s.v == "" {
					continue // the default
				}
				n, err := bench.ParseSize(s.v)
				if err != nil || n <= 0 {
					return usagef("--%s %q: give a size such as 512M or 2G", s.flag, s.v)
				}
				*s.dst = n
			}
			bs, err := bench.ParseSize(o.blockSize)
			if err != nil || bs <= 0 {
				return usagef("--block-size %q: give a size such as 1M", o.blockSize)
			}
			if bs < fuse.MinBlockSize || bs > fuse.MaxBlockSize {
				return usagef("--block-size %s: must be between 64K and 64M", o.blockSize)
			}
			o.opts.Name, o.opts.BlockSize, o.opts.CacheDir = o.name, int(bs), o.cacheDir
			o.opts.AllowOther, o.opts.Force, o.opts.Debug = o.allowOther, o.force, o.debug
			o.opts.OpTimeout = o.timeout
			if !cmd.Flags().Changed("log-level") {
				g.logLevel = "info"
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMount(cmd, g, o, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "fs", fuse.DefaultName, "name of the filesystem in the store (one store can hold several)")
	f.StringVar(&o.cacheDir, "cache-dir", "", "write-back cache directory on a local disk (default: <cache_dir of the config>/fuse-<fs>)")
	f.StringVar(&o.cacheSize, "cache-size", "1G", "most written data held locally before writers wait for uploads")
	f.StringVar(&o.blockSize, "block-size", "4M", "data block size of new files (64K to 64M): the unit of every upload")
	f.StringVar(&o.readCache, "read-cache", "", "memory for fetched blocks (default: the read-ahead window plus the kernel read-ahead plus two blocks, at least 64M)")
	f.BoolVar(&o.allowOther, "allow-other", false, "let other users use the mount (FUSE allow_other)")
	f.BoolVar(&o.force, "force", false, "take over the filesystem even if the store says another mount holds it")
	f.BoolVar(&o.withHealer, "with-healer", false, "also run the healer daemon in this process")
	f.DurationVar(&o.timeout, "timeout", fuse.DefaultOpTimeout, "longest a request waits on the store before it fails with EIO")
	f.BoolVar(&o.debug, "debug", false, "log every FUSE request")
	return cmd
}

func runMount(cmd *cobra.Command, g *globalOptions, o *mountOptions, dir string) error {
	ctx := cmd.Context()
	s, cfg, err := openStore(cmd, g)
	if err != nil {
		return err
	}
	defer s.Close()
	if o.opts.CacheDir == "" {
		o.opts.CacheDir = filepath.Join(cfg.CacheDir, "fuse-"+o.opts.Name)
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	o.opts.Logger = log
	if pct, ok := applyMountGC(os.LookupEnv); ok {
		log.Debug("healstore mount: garbage collector target set", "gogc", pct)
	}
	m, err := fuse.Mount(ctx, s, dir, o.opts)
	if err != nil {
		return err
	}
	healerDone := make(chan error, 1)
	hctx, stopHealer := context.WithCancel(ctx)
	defer stopHealer()
	if o.withHealer {
		go func() {
			healerDone <- s.RunDaemon(hctx, healstore.DaemonOptions{Ready: func(addr string) {
				fmt.Fprintf(g.stderr, "healstore: healer serving on http://%s (metrics, status)\n", addr)
			}})
		}()
	}
	fmt.Fprintf(g.stderr, "healstore: filesystem %q mounted at %s (write-back cache %s); stop with healstore umount %s or SIGTERM\n",
		o.opts.Name, m.Dir(), o.opts.CacheDir, m.Dir())
	if !o.withHealer && cfg.Metastore.Kind != "etcd" {
		// On pebble this process holds the metadata: a daemon cannot
		// open the store while it is mounted.
		fmt.Fprintln(g.stderr, "healstore: note: no healer works on this store while it is mounted (this process holds its metadata, so healstore daemon cannot open it): "+
			"lost backends are not replaced and degraded stripes are not repaired until it is unmounted; mount with --with-healer to run the healer here")
	}
	if err := fuse.NotifyReady(); err != nil {
		fmt.Fprintln(g.stderr, "healstore: warning:", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- m.Wait() }()
	var mountErr error
	select {
	case mountErr = <-waited: // unmounted from outside
	case <-ctx.Done(): // SIGTERM or SIGINT
		uctx, cancel := context.WithTimeout(context.Background(), o.opts.OpTimeout+time.Minute)
		mountErr = m.Unmount(uctx)
		cancel()
	case err := <-healerDone:
		// The healer stopped on its own: keep serving the mount.
		if err != nil {
			fmt.Fprintln(g.stderr, "healstore: warning: healer stopped:", err)
		}
		select {
		case mountErr = <-waited:
		case <-ctx.Done():
			uctx, cancel := context.WithTimeout(context.Background(), o.opts.OpTimeout+time.Minute)
			mountErr = m.Unmount(uctx)
			cancel()
		}
		o.withHealer = false
	}
	if o.withHealer {
		stopHealer()
		if err := <-healerDone; err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintln(g.stderr, "healstore: warning: healer:", err)
		}
	}
	if mountErr != nil {
		return mountErr
	}
	fmt.Fprintf(g.stderr, "healstore: %s unmounted; everything written is in the store\n", m.Dir())
	return nil
}

// applyMountGC sets the garbage collector's target to fuse.GCPercent for a
// mount process, unless the user chose one with GOGC (lookup reads the
// environment), which the runtime applied at start and is left alone. It
// returns the target set and whether it set one.
func applyMountGC(lookup func(string) (string, bool)) (int, bool) {
	if _, set := lookup("GOGC"); set {
		return 0, false
	}
	debug.SetGCPercent(fuse.GCPercent)
	return fuse.GCPercent, true
}
