package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore"
)

// objects is what put, get, ls, stat and rm need of a store: the store
// opened by this process, or the daemon that holds it.
type objects interface {
	Put(ctx context.Context, name string, r io.Reader) (*healstore.ObjectInfo, error)
	Open(ctx context.Context, name string) (objectReader, error)
	Stat(ctx context.Context, name string) (*healstore.ObjectInfo, error)
	Delete(ctx context.Context, name string) error
	List(ctx context.Context, prefix, after string, limit int) ([]healstore.ObjectInfo, string, error)
	Close() error
}

// objectReader reads one object.
type objectReader interface {
	io.ReadCloser
	Size() int64
	Info() *healstore.ObjectInfo
}

// openObjects reaches the config's store for a data command: through the
// objects socket of a daemon that holds it (an embedded store admits one
// process, and the daemon is the one users keep running), else by opening
// it here, with openStore's waiting and messages.
func openObjects(cmd *cobra.Command, g *globalOptions) (objects, error) {
	cfg, err := loadConfig(g)
	if err != nil {
		return nil, err
	}
	d, derr := healstore.DialDaemonObjects(cmd.Context(), cfg, daemonAnswerWait)
	if derr == nil {
		return daemonObjects{d}, nil
	}
	s, _, err := openStore(cmd, g)
	if err != nil {
		if !errors.Is(derr, os.ErrNotExist) {
			// A socket is there but its daemon did not answer: say so
			// beside why the store could not be opened here.
			return nil, errors.Join(err, derr)
		}
		return nil, err
	}
	return storeObjects{s}, nil
}

// storeObjects is a store this process opened.
type storeObjects struct{ *healstore.Store }

func (s storeObjects) Put(ctx context.Context, name string, r io.Reader) (*healstore.ObjectInfo, error) {
	return s.Store.Put(ctx, name, r)
}

func (s storeObjects) Open(ctx context.Context, name string) (objectReader, error) {
	return s.Store.Open(ctx, name)
}

// daemonObjects is a store a daemon holds.
type daemonObjects struct{ *healstore.DaemonObjects }

func (d daemonObjects) Open(ctx context.Context, name string) (objectReader, error) {
	return d.DaemonObjects.Open(ctx, name)
}
