package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

type lsOptions struct {
	json  bool
	long  bool
	limit int
	after string
}

func newLsCmd(g *globalOptions) *cobra.Command {
	o := &lsOptions{}
	cmd := &cobra.Command{
		Use:   "ls [PREFIX]",
		Short: "List objects, optionally those whose names start with PREFIX",
		Long: `ls lists objects, optionally those whose names start with PREFIX, in name
order. It reads the store's metadata alone (through the daemon when one
holds the store): no backend is opened, so a backend that is down or hangs
does not slow it.`,
		Args: argsBetween(0, 1),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			if o.limit < 0 {
				return usagef("--limit must not be negative")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			s, err := openNames(cmd, g)
			if err != nil {
				return err
			}
			defer s.Close()
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
			enc := json.NewEncoder(g.stdout)
			after, shown := o.after, 0
			for {
				page := 1000
				if o.limit > 0 {
					page = min(page, o.limit-shown)
				}
				objs, next, err := s.List(cmd.Context(), prefix, after, page)
				if err != nil {
					return err
				}
				for _, obj := range objs {
					switch {
					case o.json:
						if err := enc.Encode(obj); err != nil {
							return err
						}
					case o.long:
						fmt.Fprintf(tw, "%d\t %s\t %s\n", obj.Size, obj.Modified.Local().Format(time.DateTime), shownName(obj.Name))
					default:
						fmt.Fprintln(g.stdout, shownName(obj.Name))
					}
				}
				shown += len(objs)
				if next == "" || (o.limit > 0 && shown >= o.limit) {
					break
				}
				after = next
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.json, "json", false, "one JSON object per line")
	f.BoolVarP(&o.long, "long", "l", false, "show size and modification time")
	f.IntVar(&o.limit, "limit", 0, "list at most this many objects (0: all)")
	f.StringVar(&o.after, "after", "", "start after this name (paging)")
	return cmd
}
