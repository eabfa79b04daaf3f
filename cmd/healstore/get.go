package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

type getOptions struct {
	json bool
}

func newGetCmd(g *globalOptions) *cobra.Command {
	o := &getOptions{}
	cmd := &cobra.Command{
		Use:   "get NAME [FILE|-]",
		Short: "Write object NAME to a file (or standard output)",
		Long: `get writes object NAME to FILE, or to standard output when FILE is - or absent.
A file is written to a temporary name and renamed when complete, so a failed
get never leaves a truncated FILE. Reads work with up to m backends lost.
Exit code 3 when there is no such object.`,
		Args: argsBetween(1, 2),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			return checkNames(cmd, args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			s, _, err := openStore(cmd, g)
			if err != nil {
				return err
			}
			defer s.Close()
			r, err := s.Open(cmd.Context(), name)
			if err != nil {
				return err
			}
			defer r.Close()
			toFile := len(args) == 2 && args[1] != "-"
			var out io.Writer = g.stdout
			var tmp *os.File
			if toFile {
				tmp, err = os.CreateTemp(filepath.Dir(args[1]), "."+filepath.Base(args[1])+".healstore-*")
				if err != nil {
					return fmt.Errorf("get %s: %w", name, err)
				}
				defer os.Remove(tmp.Name()) // no-op after the rename
				defer tmp.Close()
				out = tmp
			}
			p := newProgress(g, "get "+name, r.Size())
			if p != nil {
				out = progressWriter{w: out, p: p}
			}
			n, err := io.Copy(out, r)
			if err != nil {
				return fmt.Errorf("get %s: %w", name, err)
			}
			p.finish()
			if toFile {
				if err := tmp.Sync(); err != nil {
					return fmt.Errorf("get %s: %w", name, err)
				}
				if err := tmp.Close(); err != nil {
					return fmt.Errorf("get %s: %w", name, err)
				}
				if err := os.Rename(tmp.Name(), args[1]); err != nil {
					return fmt.Errorf("get %s: %w", name, err)
				}
			}
			if o.json {
				// With data on stdout, the JSON summary goes to stderr.
				w := g.stdout
				if !toFile {
					w = g.stderr
				}
				info := r.Info()
				return json.NewEncoder(w).Encode(map[string]any{"name": info.Name, "size": n, "id": info.ID})
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print a JSON summary (to stderr when the data goes to stdout)")
	return cmd
}
