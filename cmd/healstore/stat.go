package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore"
)

type statOptions struct {
	json bool
}

func newStatCmd(g *globalOptions) *cobra.Command {
	o := &statOptions{}
	cmd := &cobra.Command{
		Use:   "stat NAME",
		Short: "Show an object's size, policy and redundancy",
		Long:  "stat describes object NAME. Exit code 3 when there is no such object.",
		Args:  argsBetween(1, 1),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			return checkNames(cmd, args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openObjects(cmd, g)
			if err != nil {
				return err
			}
			defer s.Close()
			info, err := s.Stat(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if o.json {
				return json.NewEncoder(g.stdout).Encode(info)
			}
			w := g.stdout
			fmt.Fprintf(w, "name:       %s\n", shownName(info.Name))
			fmt.Fprintf(w, "size:       %d (%s)\n", info.Size, humanBytes(info.Size))
			fmt.Fprintf(w, "modified:   %s\n", info.Modified.Local().Format(time.RFC3339))
			fmt.Fprintf(w, "version:    %s\n", info.ID)
			p := info.Policy
			fmt.Fprintf(w, "policy:     %d+%d, %s blocks, compression %s, encryption %s, checksum %s\n",
				p.K, p.M, humanBytes(int64(p.BlockSize)), p.Compression, p.Encryption, p.Checksum)
			fmt.Fprintf(w, "blocks:     %d\n", info.Blocks)
			if info.Inline {
				// No shards: as safe as the metadata (docs/operations.md).
				fmt.Fprintf(w, "redundancy: inline, kept sealed in the metadata record (metastore and its snapshots)\n")
			}
			if r := info.Redundancy; r != nil {
				fmt.Fprintf(w, "redundancy: %s\n", redundancyLine(r))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print as JSON")
	return cmd
}

// redundancyLine says how safe an object is, as Stat counts it (shards the
// repair queue knows are lost count as missing).
func redundancyLine(r *healstore.Redundancy) string {
	if r.Unreadable > 0 {
		return fmt.Sprintf("UNREADABLE: %d stripe(s) have fewer than k healthy shards; %d degraded stripe(s), %d shard(s) missing",
			r.Unreadable, r.Degraded, r.MissingShards)
	}
	state := "full"
	if r.Degraded > 0 {
		state = fmt.Sprintf("%d degraded stripe(s), %d shard(s) missing", r.Degraded, r.MissingShards)
	}
	return fmt.Sprintf("%s; can lose %d more backend(s)", state, r.MinMargin)
}
