package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore"
)

// objects is what put, get and stat need of a store: the store opened by
// this process, or the daemon that holds it (ls and rm: names).
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
// daemon that holds it (see reach), else by opening it here, with
// openStore's waiting and messages.
func openObjects(cmd *cobra.Command, g *globalOptions) (objects, error) {
	return reach(cmd, g, func(d daemonObjects) objects { return d }, func(*healstore.Config) (objects, error) {
		s, cfg, took, err := openStoreTimed(cmd, g)
		if err != nil {
			return nil, err
		}
		if took >= slowOpenHint && len(s.Unreachable()) > 0 && cfg.Metastore.Kind != "etcd" {
			// A store on etcd has no objects socket: there every
			// command opens it itself.
			fmt.Fprintf(g.stderr, "healstore: opening the store took %s, waiting for backends that do not answer; "+
				"while a daemon holds the store (healstore daemon, or healstore mount --with-healer), commands go through it and do not wait\n",
				took.Round(100*time.Millisecond))
		}
		return storeObjects{s}, nil
	})
}

// slowOpenHint is how long opening the store may take, waiting for
// backends that do not answer (2 s once the others answered, up to 10 s
// when the store needs them), before put, get and stat say how to avoid
// the wait.
const slowOpenHint = 2 * time.Second

// names is what ls and rm need of a store: its metadata alone.
type names interface {
	Delete(ctx context.Context, name string) error
	List(ctx context.Context, prefix, after string, limit int) ([]healstore.ObjectInfo, string, error)
	Close() error
}

// openNames reaches the config's store for ls and rm: through the daemon
// that holds it, else by opening its metadata here
// (healstore.OpenCatalog). No backend is opened, so a backend that hangs
// does not hold the command up for the seconds a full open waits for it,
// and none is warned about.
func openNames(cmd *cobra.Command, g *globalOptions) (names, error) {
	return reach(cmd, g, func(d daemonObjects) names { return d }, func(cfg *healstore.Config) (names, error) {
		c, err := openWaiting(cmd.Context(), g, cmd.CommandPath(), cfg, "", healstore.OpenCatalog)
		if err != nil {
			return nil, openError(cfg, err)
		}
		return c, nil
	})
}

// reach returns the daemon holding the config's store, through its objects
// socket (an embedded store admits one process, and the daemon is the one
// users keep running), else what local opens in this process.
func reach[T any](cmd *cobra.Command, g *globalOptions, daemon func(daemonObjects) T, local func(*healstore.Config) (T, error)) (T, error) {
	var none T
	cfg, err := loadConfig(g)
	if err != nil {
		return none, err
	}
	d, derr := healstore.DialDaemonObjects(cmd.Context(), cfg, daemonAnswerWait)
	if derr == nil {
		return daemon(daemonObjects{d}), nil
	}
	v, err := local(cfg)
	if err != nil {
		if !errors.Is(derr, os.ErrNotExist) {
			// A socket is there but its daemon did not answer: say so
			// beside why the store could not be opened here.
			return none, errors.Join(err, derr)
		}
		return none, err
	}
	return v, nil
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
