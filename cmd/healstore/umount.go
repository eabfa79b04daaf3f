package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore/fuse"
)

type umountOptions struct {
	lazy    bool
	timeout time.Duration
}

func newUmountCmd(g *globalOptions) *cobra.Command {
	o := &umountOptions{}
	cmd := &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Unmount a healstore filesystem after it uploaded everything",
		Long: `umount asks the process serving MOUNTPOINT to unmount (SIGTERM) and waits
until it has uploaded what it still held and exited. A mount whose process
is gone is unmounted directly. --lazy detaches a busy mount instead of
failing with "device busy". No config is needed.

` + exitCodesHelp,
		Args: argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			return fuse.Unmount(ctx, args[0], o.lazy)
		},
	}
	cmd.Flags().BoolVarP(&o.lazy, "lazy", "l", false, "detach a busy mount (umount -l)")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 10*time.Minute, "longest to wait for the mount process to finish uploading")
	return cmd
}
