package healer

import (
	"errors"
	"fmt"
	"time"
)

// Config tunes the healer. Zero values of the durations and counts marked
// "default" take that default; Grace is taken as given (0 is a valid
// choice: declare a backend down at once). DefaultConfig fills everything.
type Config struct {
	// Level is the failure-domain level of the placement invariant, "node"
	// (default) or "farm".
	Level string `toml:"level,omitempty" json:"level,omitempty"`
	// ProbeInterval between monitor rounds (default 5s).
	ProbeInterval Duration `toml:"probe_interval,omitempty" json:"probe_interval,omitempty"`
	// ProbeTimeout bounds one probe (default 5s).
	ProbeTimeout Duration `toml:"probe_timeout,omitempty" json:"probe_timeout,omitempty"`
	// SuspectAfter consecutive failures make a backend suspect (default 2).
	SuspectAfter int `toml:"suspect_after,omitempty" json:"suspect_after,omitempty"`
	// Grace is how long a backend stays suspect before it is declared down
	// (DefaultConfig: 10 min, like Ceph's down-out interval). 0 = at once.
	Grace Duration `toml:"grace" json:"grace"`
	// Workers is the number of concurrent repairs (default 4).
	Workers int `toml:"workers,omitempty" json:"workers,omitempty"`
	// RateLimit caps rebuild I/O in bytes per second, shards read plus
	// shards written (0 = unlimited).
	RateLimit int64 `toml:"rate_limit,omitempty" json:"rate_limit,omitempty"`
	// RetryBackoff is the first delay before a failed repair is retried;
	// it doubles per attempt up to MaxBackoff (defaults 2s and 5m).
	RetryBackoff Duration `toml:"retry_backoff,omitempty" json:"retry_backoff,omitempty"`
	MaxBackoff   Duration `toml:"max_backoff,omitempty" json:"max_backoff,omitempty"`
	// HedgeAfter sends one more shard read when a source lags this long
	// (default 2s; 0 here means the default, negative disables).
	HedgeAfter Duration `toml:"hedge_after,omitempty" json:"hedge_after,omitempty"`
	// ScrubPeriod is how long one deep scrub of every stripe takes
	// (default 7 days); LightScrubPeriod likewise for the light pass
	// (default 24 h). Negative disables the pass in the daemon.
	ScrubPeriod      Duration `toml:"scrub_period,omitempty" json:"scrub_period,omitempty"`
	LightScrubPeriod Duration `toml:"light_scrub_period,omitempty" json:"light_scrub_period,omitempty"`
	// ScrubRateLimit caps scrub reads in bytes per second (0 = unlimited;
	// the period already spreads the work out).
	ScrubRateLimit int64 `toml:"scrub_rate_limit,omitempty" json:"scrub_rate_limit,omitempty"`
	// GCInterval between garbage collection passes (default 1 min).
	GCInterval Duration `toml:"gc_interval,omitempty" json:"gc_interval,omitempty"`
	// OrphanDelay is how old a write intent must be before its shards are
	// treated as orphans of a crashed write (default 1 h).
	OrphanDelay Duration `toml:"orphan_delay,omitempty" json:"orphan_delay,omitempty"`
	// CensusInterval between the stripe scans that feed the margin metrics
	// (default 30s).
	CensusInterval Duration `toml:"census_interval,omitempty" json:"census_interval,omitempty"`
	// SpareTarget is how many registered, empty spare backends the healer
	// keeps ready, provisioning more when fewer remain (default 0).
	SpareTarget int `toml:"spare_target,omitempty" json:"spare_target,omitempty"`
	// ProvisionBackoff is the wait after a failed provisioning before the
	// next try (default 30s).
	ProvisionBackoff Duration `toml:"provision_backoff,omitempty" json:"provision_backoff,omitempty"`
	// ReleaseReplacedAfter is how long a replaced backend (down past the
	// grace period, every stripe it held rebuilt elsewhere) waits before
	// the provisioner that made it gives its capacity back: a grid
	// contract cancelled, a local directory deleted (default 24h).
	// Nothing on it is referenced any more, so the wait is only for an
	// operator who wants to look at it first. Negative keeps replaced
	// backends until `healstore backend rm`.
	ReleaseReplacedAfter Duration `toml:"release_replaced_after,omitempty" json:"release_replaced_after,omitempty"`
}

// DefaultConfig returns the defaults, Grace included.
func DefaultConfig() Config {
	c := Config{Grace: Duration(10 * time.Minute)}
	c.fill()
	return c
}

func (c *Config) fill() {
	def := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	if c.Level == "" {
		c.Level = "node"
	}
	def(&c.ProbeInterval, 5*time.Second)
	def(&c.ProbeTimeout, 5*time.Second)
	if c.SuspectAfter <= 0 {
		c.SuspectAfter = 2
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	def(&c.RetryBackoff, 2*time.Second)
	def(&c.MaxBackoff, 5*time.Minute)
	def(&c.HedgeAfter, 2*time.Second)
	def(&c.ScrubPeriod, 7*24*time.Hour)
	def(&c.LightScrubPeriod, 24*time.Hour)
	def(&c.GCInterval, time.Minute)
	def(&c.OrphanDelay, time.Hour)
	def(&c.CensusInterval, 30*time.Second)
	def(&c.ProvisionBackoff, 30*time.Second)
	def(&c.ReleaseReplacedAfter, 24*time.Hour)
}

// Validate reports the first bad field.
func (c Config) Validate() error {
	switch c.Level {
	case "", "node", "farm":
	default:
		return fmt.Errorf("healer: level %q: must be node or farm", c.Level)
	}
	if c.Grace < 0 {
		return errors.New("healer: grace is negative")
	}
	if c.RateLimit < 0 || c.ScrubRateLimit < 0 {
		return errors.New("healer: rate limits must not be negative")
	}
	if c.SpareTarget < 0 {
		return errors.New("healer: spare_target is negative")
	}
	if c.Workers > MaxWorkers {
		return fmt.Errorf("healer: %d workers is more than %d", c.Workers, MaxWorkers)
	}
	return nil
}

// MaxWorkers caps Config.Workers: each worker holds a stripe's shards in
// memory while it rebuilds them.
const MaxWorkers = 1024

// Duration is a time.Duration that reads and writes as a Go duration
// string ("10m", "1h30m") in TOML and JSON.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}
