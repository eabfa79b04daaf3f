package healstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/all"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/healer/provision"
	"github.com/healstore/healstore/healer/provision/command"
	"github.com/healstore/healstore/healer/provision/tfgrid"
	"github.com/healstore/healstore/metastore"
)

// HealerOptions adjust the healer NewHealer builds from the store's config.
type HealerOptions struct {
	// Registry receives the healer's metrics; nil makes a private one.
	Registry *prometheus.Registry
	// Provisioners are tried after the one the config names (tests and the
	// demo add a local one here).
	Provisioners []provision.Provisioner
	// Tune, if set, edits the healer config derived from the store's
	// config before the healer is built.
	Tune func(*healer.Config)
	// Now replaces the healer's clock (tests); nil means time.Now.
	Now func() time.Time
}

// Healer is a store's healer together with the provisioners it owns;
// Close stops what they started (local S3 gateways).
type Healer struct {
	*healer.Healer
	closers []io.Closer
}

// Close releases the provisioners' processes. The store stays open.
func (h *Healer) Close() error {
	var errs []error
	for _, c := range h.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// HealerConfig maps the store's [healer] settings onto the healer's
// config.
func (s *Store) HealerConfig() healer.Config {
	hc := s.cfg.Healer
	c := healer.Config{
		Level:         s.cfg.PlacementLevel,
		ProbeInterval: healer.Duration(hc.ProbeInterval),
		Grace:         healer.Duration(hc.GracePeriod),
		Workers:       hc.Workers,
		RateLimit:     hc.RateBytes,
		ScrubPeriod:   healer.Duration(hc.ScrubPeriod),
		SpareTarget:   hc.SpareTarget,

		ReleaseReplacedAfter: healer.Duration(hc.ReleaseReplacedAfter),
	}
	return c
}

// NewHealer builds the store's healer: monitor, rebuilder, scrubber,
// garbage collection and provisioning over this store's metastore and
// backend pool. The data path's backend errors are fed to its monitor.
// Nothing runs until the caller calls Run (the daemon) or one of the
// one-shot methods (RepairAll, Scrub, GC, Status). Close the returned
// Healer before the Store.
func (s *Store) NewHealer(ctx context.Context, o HealerOptions) (*Healer, error) {
	return s.newHealer(ctx, o, true)
}

func (s *Store) newHealer(ctx context.Context, o HealerOptions, listen bool) (*Healer, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	out := &Healer{}
	provs, closers, err := s.provisioners(ctx)
	if err != nil {
		return nil, err
	}
	out.closers = closers
	provs = append(provs, o.Provisioners...)
	cfg := s.HealerConfig()
	if o.Tune != nil {
		o.Tune(&cfg)
	}
	h, err := healer.New(ctx, cfg, healer.Deps{
		Meta:         s.meta,
		Pool:         s,
		Codec:        healer.StripeCodecs(),
		Register:     s.AddBackend,
		Try:          s.tryBackend,
		StoreID:      s.storeID,
		Provisioners: provs,
		Logger:       s.log.With("component", "healer"),
		Registry:     o.Registry,
		Now:          o.Now,
	})
	if err != nil {
		_ = out.Close()
		return nil, err
	}
	out.Healer = h
	if listen {
		s.OnBackendError(h.Report)
	}
	return out, nil
}

// provisioners builds the provisioner the config names.
func (s *Store) provisioners(ctx context.Context) ([]provision.Provisioner, []io.Closer, error) {
	pc := s.cfg.Healer.Provisioner
	bad := func(err error) error {
		return &ConfigError{File: s.cfg.path, Field: "healer.provisioner.settings", Msg: err.Error()}
	}
	log := s.log.With("component", "provisioner")
	switch pc.Kind {
	case "":
		return nil, nil, nil
	case "local":
		lc, err := provision.LocalConfigFromSettings(pc.Settings, s.cfg.Dir)
		if err != nil {
			return nil, nil, bad(err)
		}
		l, err := provision.NewLocal(lc)
		if err != nil {
			return nil, nil, err
		}
		// Gateways it started before (a restart) serve their data again.
		var specs []backends.Spec
		for _, h := range s.handleList() {
			specs = append(specs, h.spec)
		}
		if err := l.Resume(ctx, specs); err != nil {
			log.Warn("restart local S3 gateways", "err", err)
		}
		return []provision.Provisioner{l}, []io.Closer{l}, nil
	case "spare":
		specs, err := provision.SpareSpecsFromSettings(pc.Settings, s.cfg.Dir)
		if err != nil {
			return nil, nil, bad(err)
		}
		p, err := provision.NewSpare(specs, func(name string) bool {
			_, err := s.meta.GetBackend(context.Background(), name)
			return err == nil
		})
		if err != nil {
			return nil, nil, bad(err)
		}
		return []provision.Provisioner{p}, nil, nil
	case "command":
		cc, err := command.ConfigFromSettings(pc.Settings)
		if err != nil {
			return nil, nil, bad(err)
		}
		p, err := command.New(cc, log)
		if err != nil {
			return nil, nil, err
		}
		return []provision.Provisioner{p}, nil, nil
	case "tfgrid":
		tc, err := tfgrid.ConfigFromSettings(pc.Settings)
		if err != nil {
			return nil, nil, bad(err)
		}
		p, err := tfgrid.New(tc, log)
		if err != nil {
			return nil, nil, err
		}
		return []provision.Provisioner{p}, nil, nil
	}
	return nil, nil, bad(fmt.Errorf("unknown provisioner kind %q", pc.Kind))
}

// tryBackend opens and probes spec with secret (for its secret_ref) and
// closes it again, changing nothing in the store.
func (s *Store) tryBackend(ctx context.Context, spec backends.Spec, secret string) error {
	lookup := func(ref string) (string, error) {
		if secret != "" && ref == spec.SecretRef {
			return secret, nil
		}
		return s.secrets.Lookup(ref)
	}
	b, err := all.Open(ctx, spec, lookup)
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err = b.Probe(ctx); err != nil {
		return err
	}
	// A place that already carries a marker is another backend's: adding
	// it would overwrite that marker (the other backend then looks
	// foreign, wiped, to the healer), and the two would share every
	// failure. The same name is an add that failed half way, retried; a
	// backend removed, retired or replaced holds nothing the store needs.
	raw, err := b.Get(ctx, MarkerKey)
	switch {
	case errors.Is(err, backends.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("read its %s: %w", MarkerKey, err)
	}
	var m Marker
	switch {
	case json.Unmarshal(raw, &m) != nil || m.StoreID != s.storeID:
		return fmt.Errorf("it holds another store's data (its %s names store %q, this store is %q)", MarkerKey, m.StoreID, s.storeID)
	case m.Backend == spec.Name:
		return nil
	}
	rec, err := s.meta.GetBackend(ctx, m.Backend)
	switch {
	case errors.Is(err, metastore.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("backend %s, named by its %s: %w", m.Backend, MarkerKey, err)
	case rec.State != metastore.StateRetired && rec.State != metastore.StateReplaced:
		return fmt.Errorf("it is the place of backend %s of this store (its %s names it); give each backend a place of its own", m.Backend, MarkerKey)
	}
	return nil
}
