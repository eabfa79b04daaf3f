package tfgrid

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Deployment states in the ledger.
const (
	// StateDeploying is written before `tfcmd deploy` runs, so a crash
	// mid-deploy leaves a trace; such entries are cancelled at the next
	// start, since nothing ever used them.
	StateDeploying = "deploying"
	// StateActive: deployed, verified and handed to the healer.
	StateActive = "active"
	// StateCancelling: `tfcmd cancel` failed; retried until it succeeds.
	StateCancelling = "cancelling"
)

// Deployment is one ledger entry: a grid deployment this provisioner made
// and has not yet cancelled. It holds no secret.
type Deployment struct {
	Project string    `json:"project"`
	Node    uint64    `json:"node"`
	Farm    uint64    `json:"farm"`
	SizeGB  int       `json:"size_gb"`
	State   string    `json:"state"`
	Created time.Time `json:"created"`
}

// ledger remembers deployments across restarts, so the max_backends cap
// holds and no contract is forgotten (and billed) after a crash. With no
// path it lives in memory only. Not safe for concurrent use; the
// provisioner serialises access.
type ledger struct {
	path string
	ents map[string]Deployment
}

type ledgerFile struct {
	Version     int          `json:"version"`
	Deployments []Deployment `json:"deployments"`
}

func openLedger(path string) (*ledger, error) {
	l := &ledger{path: path, ents: map[string]Deployment{}}
	if path == "" {
		return l, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tfgrid ledger: %w", err)
	}
	var f ledgerFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("tfgrid ledger %s: not a ledger file: %w", path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("tfgrid ledger %s: version %d is not supported (want 1)", path, f.Version)
	}
	for _, d := range f.Deployments {
		if d.State == StateDeploying {
			// A Provision was interrupted; the namespace was never
			// handed out, so it only costs money.
			d.State = StateCancelling
		}
		l.ents[d.Project] = d
	}
	return l, nil
}

func (l *ledger) get(project string) (Deployment, bool) {
	d, ok := l.ents[project]
	return d, ok
}

func (l *ledger) count() int { return len(l.ents) }

// list returns the entries sorted by creation time.
func (l *ledger) list() []Deployment {
	out := make([]Deployment, 0, len(l.ents))
	for _, d := range l.ents {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Deployment) int { return a.Created.Compare(b.Created) })
	return out
}

func (l *ledger) put(d Deployment) error {
	old, had := l.ents[d.Project]
	l.ents[d.Project] = d
	if err := l.save(); err != nil {
		if had {
			l.ents[d.Project] = old
		} else {
			delete(l.ents, d.Project)
		}
		return err
	}
	return nil
}

func (l *ledger) remove(project string) error {
	old, had := l.ents[project]
	if !had {
		return nil
	}
	delete(l.ents, project)
	if err := l.save(); err != nil {
		l.ents[project] = old
		return err
	}
	return nil
}

// save writes the ledger atomically (temp file, fsync, rename), 0600.
func (l *ledger) save() error {
	if l.path == "" {
		return nil
	}
	b, err := json.MarshalIndent(ledgerFile{Version: 1, Deployments: l.list()}, "", "  ")
	if err != nil {
		return fmt.Errorf("tfgrid ledger: %w", err)
	}
	dir := filepath.Dir(l.path)
	tmp, err := os.CreateTemp(dir, ".tfgrid-ledger-*")
	if err != nil {
		return fmt.Errorf("tfgrid ledger: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("tfgrid ledger: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("tfgrid ledger: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("tfgrid ledger: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("tfgrid ledger: %w", err)
	}
	if err := os.Rename(tmp.Name(), l.path); err != nil {
		return fmt.Errorf("tfgrid ledger: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
