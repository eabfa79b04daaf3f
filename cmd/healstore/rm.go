package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore"
)

type rmOptions struct {
	json     bool
	force    bool
	fsBlocks bool
}

func newRmCmd(g *globalOptions) *cobra.Command {
	o := &rmOptions{}
	cmd := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Delete objects",
		Long: `rm deletes each named object at once; its shards are removed by garbage
collection after the configured delay. It changes the store's metadata
alone (through the daemon when one holds the store): no backend is opened,
so a backend that is down or hangs does not slow it. Exit code 3 when an
object does not exist (unless --force).`,
		Args: argsBetween(1, -1),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			return checkWritableNames(cmd, args...)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openNames(cmd, g)
			if err != nil {
				return err
			}
			defer s.Close()
			var missing error
			for _, name := range args {
				err := s.Delete(cmd.Context(), name)
				switch {
				case errors.Is(err, healstore.ErrNotFound) && o.force:
					continue
				case errors.Is(err, healstore.ErrNotFound):
					fmt.Fprintln(g.stderr, "healstore:", err)
					missing = err
					continue
				case err != nil:
					return err
				}
				if o.json {
					json.NewEncoder(g.stdout).Encode(map[string]any{"deleted": name})
				}
			}
			if missing != nil {
				// Each missing name is printed already; the error only
				// sets the exit code.
				return &reportedError{missing}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON line per deleted object")
	cmd.Flags().BoolVarP(&o.force, "force", "f", false, "ignore objects that do not exist")
	cmd.Flags().BoolVar(&o.fsBlocks, "fs-blocks", false, "also remove blocks of healstore mount's files (fs/NAME/INODE/BLOCK), for a filesystem no mount uses any more")
	return cmd
}
