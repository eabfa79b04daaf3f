package main

import (
	"encoding/json"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore/bench"
)

func newBenchCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure healstore against a plain-disk baseline",
		Long: `bench runs benchmarks against the configured store. Each one also measures,
in the same run, a baseline of the same bytes with no healstore in between,
and prints the ratio.`,
	}
	cmd.AddCommand(newBenchEncodeCmd(g), newBenchHealCmd(g))
	for _, mode := range []string{"put", "get", "putget"} {
		cmd.AddCommand(newBenchPutGetCmd(g, mode))
	}
	return cmd
}

type benchEncodeOptions struct {
	opts       bench.EncodeOptions
	blockSize  string
	workingSet string
	json       bool
}

func newBenchEncodeCmd(g *globalOptions) *cobra.Command {
	o := &benchEncodeOptions{}
	cmd := &cobra.Command{
		Use:   "encode",
		Short: "Measure the encoder in memory against raw Reed-Solomon",
		Long: `encode measures the encoder alone, in memory, with no store: the raw
Reed-Solomon baseline, healstore's encode (seal, code, frame, checksum), and
decode with all shards present and with m missing. It needs no config.`,
		Args: argsBetween(0, 0),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			bs, err := bench.ParseSize(o.blockSize)
			if err != nil {
				return usagef("--block-size: %v", err)
			}
			ws, err := bench.ParseSize(o.workingSet)
			if err != nil {
				return usagef("--working-set: %v", err)
			}
			o.opts.BlockSize, o.opts.WorkingSet = int(bs), ws
			if o.opts.Threads < 0 {
				return usagef("--threads must not be negative")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var progress io.Writer
			if !o.json {
				progress = g.stderr
			}
			res, err := bench.Encode(cmd.Context(), o.opts, progress)
			if err != nil {
				return err
			}
			if o.json {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			return res.WriteText(g.stdout)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.opts.K, "k", 10, "data shards")
	f.IntVar(&o.opts.M, "m", 4, "parity shards")
	f.StringVar(&o.blockSize, "block-size", "4MiB", "block size")
	f.StringVar(&o.opts.Compression, "compression", "none", "none or zstd")
	f.StringVar(&o.opts.Encryption, "encryption", "none", "none, aes-256-gcm or xchacha20-poly1305")
	f.StringVar(&o.opts.Checksum, "checksum", "xxh3-128", "xxh3-128 or sha256")
	f.DurationVar(&o.opts.Duration, "duration", 10*time.Second, "total measuring time")
	f.IntVar(&o.opts.Threads, "threads", 0, "blocks coded at once and cores used (0: all)")
	f.StringVar(&o.workingSet, "working-set", "64MiB", "object data each path cycles through")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
	return cmd
}

type benchPutGetOptions struct {
	mode        string
	sizes       string
	count       int
	baselineDir string
	keep        bool
	json        bool
	cache       string
	parsed      []int64
}

func newBenchPutGetCmd(g *globalOptions, mode string) *cobra.Command {
	o := &benchPutGetOptions{mode: mode}
	short := map[string]string{
		"put":    "Measure puts: MB/s and p50/p99 per object size, against file write+fsync",
		"get":    "Measure gets: MB/s and p50/p99 per object size, against a plain file read",
		"putget": "Measure puts and gets, each against its plain-disk baseline",
	}[mode]
	cmd := &cobra.Command{
		Use:   mode,
		Short: short,
		Long: short + `.

Objects of each size are written (and read) through the store; interleaved
with them, the same number of stored bytes (all shards, headers included) is
written to one file with fsync and read back, in a directory on the same disk
as the first local backend. Ratios compare the time to store or fetch one
object either way. Before each read, both healstore's local backend files
and the baseline file are evicted from the page cache (--cache cold), so
both read from the disk. Objects are deleted afterwards unless --keep.`,
		Args: argsBetween(0, 0),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			o.parsed = nil
			for _, f := range strings.Split(o.sizes, ",") {
				if strings.TrimSpace(f) == "" {
					continue
				}
				n, err := bench.ParseSize(f)
				if err != nil {
					return usagef("--sizes: %v", err)
				}
				o.parsed = append(o.parsed, n)
			}
			if o.count < 0 {
				return usagef("--count must not be negative")
			}
			if o.cache != "cold" && o.cache != "warm" {
				return usagef("--cache %q: use cold or warm", o.cache)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, _, err := openStore(cmd, g)
			if err != nil {
				return err
			}
			defer s.Close()
			opts := bench.PutGetOptions{Mode: o.mode, Sizes: o.parsed, Count: o.count, BaselineDir: o.baselineDir, Keep: o.keep, Warm: o.cache == "warm"}
			if !o.json {
				opts.Progress = g.stderr
			}
			rep, err := bench.PutGet(cmd.Context(), s, opts)
			if err != nil {
				return err
			}
			if o.json {
				return rep.WriteJSON(g.stdout)
			}
			return rep.WriteText(g.stdout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.sizes, "sizes", "4KiB,1MiB,64MiB", "comma-separated object sizes")
	f.IntVar(&o.count, "count", 0, "objects per size (0: 50 small ones, about 256 MiB of large ones, at least 3)")
	f.StringVar(&o.baselineDir, "baseline-dir", "", "directory for the baseline files (default: next to the first local backend)")
	f.BoolVar(&o.keep, "keep", false, "keep the benchmark objects")
	f.StringVar(&o.cache, "cache", "cold", "reads start with the stored bytes evicted from the page cache (cold) or not (warm)")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	return cmd
}
