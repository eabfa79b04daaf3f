package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

type putOptions struct {
	json bool
}

func newPutCmd(g *globalOptions) *cobra.Command {
	o := &putOptions{}
	cmd := &cobra.Command{
		Use:   "put NAME [FILE|-]",
		Short: "Store a file (or standard input) as object NAME",
		Long: `put stores FILE, or standard input when FILE is - or absent, as object NAME,
replacing any object of that name. It returns once the object is durable.
When fewer backends than the policy wants are reachable but the write quorum
is, the object is stored degraded and its missing shards are queued for repair.`,
		Args: argsBetween(1, 2),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			return checkWritableNames(cmd, args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var in io.Reader = g.stdin
			size := int64(-1)
			// The file is opened before the store, so a wrong FILE costs
			// nothing and says so plainly.
			if len(args) == 2 && args[1] != "-" {
				f, err := os.Open(args[1])
				if err != nil {
					return fmt.Errorf("put %s: %w", name, err)
				}
				defer f.Close()
				st, err := f.Stat()
				if err != nil {
					return fmt.Errorf("put %s: %w", name, err)
				}
				if st.IsDir() {
					return usagef("put %s: FILE %s is a directory; put stores one file (or standard input)", name, args[1])
				}
				if st.Mode().IsRegular() {
					size = st.Size()
				}
				in = f
			}
			s, err := openObjects(cmd, g)
			if err != nil {
				return err
			}
			defer s.Close()
			p := newProgress(g, "put "+name, size)
			if p != nil {
				in = progressReader{r: in, p: p}
			}
			info, err := s.Put(cmd.Context(), name, in)
			if err != nil {
				return err
			}
			p.finish()
			// A put succeeds with the write quorum of each stripe's shards
			// (k+1 by default): say when it left stripes short, so a user
			// does not take an object at reduced redundancy for a safe one.
			if r := info.Redundancy; r != nil && r.Degraded > 0 {
				fmt.Fprintf(g.stderr, "healstore: warning: %s: %d of %d blocks were stored short of their %d+%d shards (%d shards missing; can lose %d more backend(s) instead of %d); they are queued for repair, which a running healer (healstore daemon) does\n",
					name, r.Degraded, info.Blocks, info.Policy.K, info.Policy.M, r.MissingShards, max(r.MinMargin, 0), info.Policy.M)
			}
			if o.json {
				return json.NewEncoder(g.stdout).Encode(info)
			}
			if info.Inline {
				fmt.Fprintf(g.stdout, "stored %s: %d bytes inline in its metadata record (inline_max_size)\n", shownName(info.Name), info.Size)
				return nil
			}
			fmt.Fprintf(g.stdout, "stored %s: %d bytes in %d blocks (%d+%d)\n", shownName(info.Name), info.Size, info.Blocks, info.Policy.K, info.Policy.M)
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print the stored object's info as JSON")
	return cmd
}
