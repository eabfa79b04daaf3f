package healstore

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/all"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/healer/provision"
	"github.com/healstore/healstore/healer/provision/command"
	"github.com/healstore/healstore/healer/provision/tfgrid"
)

// Config is everything Open needs. It is one TOML file; `healstore init`
// writes a working one. Relative paths in a loaded file are relative to the
// file's directory, so a store directory can be moved as a whole.
//
// Build a Config in Go code from DefaultConfig(): a zero field means "the
// default" for most settings, but not for healer.grace_period,
// healer.gc_delay and inline_max_size, where 0 is a meaningful value.
type Config struct {
	// Dir holds the store's local state. Default: the config file's directory.
	Dir string `toml:"dir,omitempty"`
	// MetadataDir is the embedded (pebble) metadata database. Default: Dir/meta.
	MetadataDir string `toml:"metadata_dir,omitempty"`
	// CacheDir is local scratch space (block caches, the mount's write-back
	// cache). Default: Dir/cache.
	CacheDir string `toml:"cache_dir,omitempty"`
	// MasterKeyFile holds the 32-byte master key as 64 hex digits, mode
	// 0600. Required unless policy.encryption is "none".
	MasterKeyFile string `toml:"master_key_file,omitempty"`
	// SecretsFile maps secret refs (backends' secret_ref) to secrets, mode
	// 0600. Optional when no backend needs a secret.
	SecretsFile string `toml:"secrets_file,omitempty"`

	// Policy applies to new objects; each object keeps the policy it was
	// written with.
	Policy encoder.Policy `toml:"policy"`
	// PlacementLevel is the failure domain no two shards of a stripe may
	// share: "node" (default) or "farm".
	PlacementLevel string `toml:"placement_level,omitempty"`
	// WriteQuorum is how many of a stripe's k+m shards must land for a write
	// to succeed; the rest go on the repair queue. 0 means k+1 (capped at
	// k+m); it may never be below k.
	WriteQuorum int `toml:"write_quorum,omitempty"`
	// HedgeAfter is how long a read waits for a lagging shard before asking
	// another backend for one more. Default 300ms.
	HedgeAfter Duration `toml:"hedge_after,omitempty"`
	// InlineMaxSize: objects of at most this many bytes are sealed as one
	// block and kept inside their metadata record instead of being erasure
	// coded onto the backends (one durable commit, no shards; docs/format.md,
	// "Inline objects"). They are then protected by the metastore's
	// durability, not by the backends' redundancy. Default 4096; 0 turns it
	// off; at most MaxInlineSize (MaxInlineSizeEtcd with the etcd
	// metastore), and never more than policy.block_size is used.
	InlineMaxSize int64 `toml:"inline_max_size"`

	Metastore MetastoreConfig `toml:"metastore"`
	Healer    HealerConfig    `toml:"healer"`
	// Snapshots says how often the metastore is sealed and erasure coded
	// onto the backends, so `healstore recover` can rebuild a lost machine
	// from the master key and one backend. The process that runs the
	// healer (the leader, with etcd) takes them; zero fields mean the
	// defaults (DefaultSnapshotConfig).
	Snapshots SnapshotConfig `toml:"snapshots"`
	// Backends seeds the store's backend list. Open registers each one in
	// the metastore; backends added later (by the healer or `backend add`)
	// live in the metastore only.
	Backends []backends.Spec `toml:"backends"`

	// Logger receives the store's structured logs; nil discards them.
	Logger *slog.Logger `toml:"-"`

	// path is the file the config was loaded from ("" when built in code).
	path string
}

// MetastoreConfig selects the metadata engine.
type MetastoreConfig struct {
	// Kind is "pebble" (embedded, the default) or "etcd".
	Kind string `toml:"kind,omitempty"`
	// Endpoints of the etcd cluster (kind "etcd"): host:port, or
	// https://host:port (TLS), or http://host:port (plain text, not with
	// the TLS keys below).
	Endpoints []string `toml:"endpoints,omitempty"`
	// Prefix under which this store's keys live in etcd, so several stores
	// can share one cluster. Default "healstore/".
	Prefix string `toml:"prefix,omitempty"`

	// The keys below are for kind "etcd" only. Any TLS key (or an https://
	// endpoint) makes every connection to etcd use TLS 1.2 or later.

	// CAFile is a PEM bundle of the CA certificates that verify the etcd
	// servers' certificates. Default: the system's roots.
	CAFile string `toml:"ca_file,omitempty"`
	// CertFile and KeyFile are the PEM client certificate and its private
	// key, for an etcd started with --client-cert-auth. Both or neither.
	CertFile string `toml:"cert_file,omitempty"`
	KeyFile  string `toml:"key_file,omitempty"`
	// ServerName is the name verified in the servers' certificates.
	// Default: each endpoint's host.
	ServerName string `toml:"server_name,omitempty"`
	// Username and PasswordFile are etcd user/password authentication.
	// Both or neither. The password file holds the password alone (one
	// trailing newline is ignored) and must be mode 0600 or stricter; the
	// password itself is never in the config.
	Username     string `toml:"username,omitempty"`
	PasswordFile string `toml:"password_file,omitempty"`
}

// HealerConfig configures the healer (monitor, rebuilder, scrubber, GC,
// provisioner). Its fields' meaning belongs to the healer; the store only
// loads and validates them.
type HealerConfig struct {
	// ProbeInterval between backend probes. Default 10s.
	ProbeInterval Duration `toml:"probe_interval,omitempty"`
	// GracePeriod a failing backend stays suspect before it is declared
	// down and rebuilt elsewhere. Default 10m; 0 is allowed.
	GracePeriod Duration `toml:"grace_period"`
	// Workers rebuilding stripes in parallel. Default 2.
	Workers int `toml:"workers,omitempty"`
	// RateBytes caps rebuild traffic in bytes/s; 0 means no cap.
	RateBytes int64 `toml:"rate_bytes,omitempty"`
	// ScrubPeriod is the time one full (deep) scrub pass is spread over.
	// Default 168h; negative turns the deep pass off (the daily light
	// pass, which checks every shard exists, stays).
	ScrubPeriod Duration `toml:"scrub_period,omitempty"`
	// GCDelay is how long garbage shards are kept before deletion, so
	// readers of a just-replaced object finish. Default 1h; 0 is allowed.
	GCDelay Duration `toml:"gc_delay"`
	// SpareTarget is the number of spare backends the healer keeps
	// provisioned. Default 0.
	SpareTarget int `toml:"spare_target,omitempty"`
	// ReleaseReplacedAfter is how long a replaced backend (down, every
	// shard it held rebuilt elsewhere) waits before the provisioner that
	// made it releases its capacity (a grid contract, a local directory).
	// Default 24h; negative keeps it until `healstore backend rm`.
	ReleaseReplacedAfter Duration `toml:"release_replaced_after,omitempty"`
	// Provisioner creates replacement backends.
	Provisioner ProvisionerConfig `toml:"provisioner"`
	// MetricsAddr serves /metrics and the JSON status. Default 127.0.0.1:9310.
	MetricsAddr string `toml:"metrics_addr,omitempty"`
}

// ProvisionerConfig names a provisioner and its kind-specific settings.
type ProvisionerConfig struct {
	// Kind is "" (none), "local", "spare", "command" or "tfgrid".
	Kind string `toml:"kind,omitempty"`
	// Settings are read by the provisioner of that kind. Secrets never go
	// here: use a ref into the secrets file.
	Settings map[string]any `toml:"settings,omitempty"`
}

// Provisioner kinds accepted in the config.
var provisionerKinds = []string{"", "local", "spare", "command", "tfgrid"}

// Duration is a time.Duration written in TOML as a string ("10m", "168h").
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as "1h0m0s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use e.g. 30s, 10m, 168h)", b)
	}
	*d = Duration(v)
	return nil
}

// Defaults.
const (
	DefaultHedgeAfter    = 300 * time.Millisecond
	DefaultProbeInterval = 10 * time.Second
	DefaultGracePeriod   = 10 * time.Minute
	DefaultWorkers       = 2
	DefaultScrubPeriod   = 168 * time.Hour
	DefaultGCDelay       = time.Hour
	DefaultMetricsAddr   = "127.0.0.1:9310"
	DefaultEtcdPrefix    = "healstore/"
	// DefaultInlineMaxSize keeps objects up to one page inline.
	DefaultInlineMaxSize = 4096
	// MaxInlineSize caps inline_max_size: an inline object rides in its
	// metadata record, which is read whole for every Stat, List and
	// commit, and which every metadata snapshot carries.
	MaxInlineSize = 64 << 10
	// MaxInlineSizeEtcd caps inline_max_size with the etcd metastore: every
	// record goes through raft and stays in etcd's history until
	// compaction, and a commit must stay far below etcd's request limit
	// (1.5 MiB by default).
	MaxInlineSizeEtcd = 32 << 10
)

// DefaultConfig returns a Config with every default filled in and no
// backends.
func DefaultConfig() *Config {
	return &Config{
		Policy:         encoder.DefaultPolicy(),
		PlacementLevel: "node",
		HedgeAfter:     Duration(DefaultHedgeAfter),
		InlineMaxSize:  DefaultInlineMaxSize,
		Metastore:      MetastoreConfig{Kind: "pebble"},
		Healer: HealerConfig{
			ProbeInterval: Duration(DefaultProbeInterval),
			GracePeriod:   Duration(DefaultGracePeriod),
			Workers:       DefaultWorkers,
			ScrubPeriod:   Duration(DefaultScrubPeriod),
			GCDelay:       Duration(DefaultGCDelay),
			MetricsAddr:   DefaultMetricsAddr,
		},
		Snapshots: DefaultSnapshotConfig(),
	}
}

// ConfigError is a problem in a config file or struct. It names the file
// (when loaded from one), the line (when known) and the field.
type ConfigError struct {
	File  string // "" when the config was built in code
	Line  int    // 0 when unknown
	Field string // dotted TOML key, e.g. "policy.k" or "backends[2].path"
	Msg   string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.File != "" {
		b.WriteString(" " + e.File)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrBadConfig is matched (errors.Is) by every *ConfigError.
var ErrBadConfig = errors.New("bad config")

// Is makes errors.Is(err, ErrBadConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrBadConfig }

// LoadConfig reads and validates a TOML config file. Unknown keys are
// errors. Errors are *ConfigError naming the file, line and key.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &ConfigError{File: path, Msg: fmt.Sprintf("cannot read: %v", errors.Unwrap(err))}
	}
	return ParseConfig(path, data)
}

// ParseConfig is LoadConfig on bytes already read; path names the file in
// errors and anchors relative paths.
func ParseConfig(path string, data []byte) (*Config, error) {
	if err := checkKeys(path, data); err != nil {
		return nil, err
	}
	cfg := DefaultConfig()
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return nil, tomlError(path, err)
	}
	cfg.path = path
	if err := cfg.resolvePaths(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// tomlError turns go-toml's errors into a ConfigError with line and key.
func tomlError(path string, err error) error {
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) && len(sm.Errors) > 0 {
		var keys []string
		line := 0
		for i := range sm.Errors {
			e := &sm.Errors[i]
			if i == 0 {
				line, _ = e.Position()
			}
			keys = append(keys, strings.Join(e.Key(), "."))
		}
		msg := "unknown key"
		if len(keys) > 1 {
			msg = "unknown keys"
		}
		return &ConfigError{File: path, Line: line, Field: keys[0],
			Msg: fmt.Sprintf("%s %s (check the spelling; see healstore init for a complete example)", msg, strings.Join(keys, ", "))}
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		return &ConfigError{File: path, Line: line, Field: strings.Join(de.Key(), "."),
			Msg: plainTypeError(strings.TrimPrefix(de.Error(), "toml: "))}
	}
	return &ConfigError{File: path, Msg: err.Error()}
}

// resolvePaths makes relative paths absolute against base and fills the
// directory defaults.
func (c *Config) resolvePaths(base string) error {
	// No shell expands ~ in the file: taken as a relative path, "~/x"
	// would be made, silently, under the config's directory.
	home := func(field, p string) error {
		if p == "~" || strings.HasPrefix(p, "~/") {
			return &ConfigError{File: c.path, Field: field, Msg: fmt.Sprintf("%q: ~ is not expanded in the config; write the absolute path", p)}
		}
		return nil
	}
	m := &c.Metastore
	for _, f := range [][2]string{{"dir", c.Dir}, {"metadata_dir", c.MetadataDir}, {"cache_dir", c.CacheDir},
		{"master_key_file", c.MasterKeyFile}, {"secrets_file", c.SecretsFile}, {"metastore.ca_file", m.CAFile},
		{"metastore.cert_file", m.CertFile}, {"metastore.key_file", m.KeyFile}, {"metastore.password_file", m.PasswordFile}} {
		if err := home(f[0], f[1]); err != nil {
			return err
		}
	}
	for i, b := range c.Backends {
		if b.Kind == backends.KindLocal {
			if err := home(fmt.Sprintf("backends[%d].path", i), b.Path); err != nil {
				return err
			}
		}
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	if c.Dir == "" {
		c.Dir = base
	}
	c.Dir = abs(c.Dir)
	c.MetadataDir = abs(c.MetadataDir)
	c.CacheDir = abs(c.CacheDir)
	c.MasterKeyFile = abs(c.MasterKeyFile)
	c.SecretsFile = abs(c.SecretsFile)
	m.CAFile, m.CertFile, m.KeyFile, m.PasswordFile = abs(m.CAFile), abs(m.CertFile), abs(m.KeyFile), abs(m.PasswordFile)
	for i := range c.Backends {
		if c.Backends[i].Kind == backends.KindLocal {
			c.Backends[i].Path = abs(c.Backends[i].Path)
		}
	}
	return nil
}

// Path is the file the config was loaded from, or "".
func (c *Config) Path() string { return c.path }

// fillDefaults replaces zero values with defaults, except where zero is a
// meaningful setting (grace period, GC delay, rate cap, spare target).
// snapshots.max_changes is switched off by a negative value, not by 0.
func (c *Config) fillDefaults() {
	if c.PlacementLevel == "" {
		c.PlacementLevel = "node"
	}
	if c.HedgeAfter == 0 {
		c.HedgeAfter = Duration(DefaultHedgeAfter)
	}
	if c.Metastore.Kind == "" {
		c.Metastore.Kind = "pebble"
	}
	if c.Metastore.Kind == "etcd" && c.Metastore.Prefix == "" {
		c.Metastore.Prefix = DefaultEtcdPrefix
	}
	if c.MetadataDir == "" && c.Dir != "" {
		c.MetadataDir = filepath.Join(c.Dir, "meta")
	}
	if c.CacheDir == "" && c.Dir != "" {
		c.CacheDir = filepath.Join(c.Dir, "cache")
	}
	h := &c.Healer
	if h.ProbeInterval == 0 {
		h.ProbeInterval = Duration(DefaultProbeInterval)
	}
	if h.Workers == 0 {
		h.Workers = DefaultWorkers
	}
	if h.ScrubPeriod == 0 {
		h.ScrubPeriod = Duration(DefaultScrubPeriod)
	}
	if h.MetricsAddr == "" {
		h.MetricsAddr = DefaultMetricsAddr
	}
	sn, def := &c.Snapshots, DefaultSnapshotConfig()
	if sn.Interval == 0 {
		sn.Interval = def.Interval
	}
	if sn.MaxChanges == 0 {
		sn.MaxChanges = def.MaxChanges
	}
	if sn.MaxAge == 0 {
		sn.MaxAge = def.MaxAge
	}
	if sn.Keep == 0 {
		sn.Keep = def.Keep
	}
}

// metadataWhere names the metadata the config opens, for errors.
func (c *Config) metadataWhere() string {
	if c.Metastore.Kind == "etcd" {
		return fmt.Sprintf("etcd %s, prefix %q", joinLimited(c.Metastore.Endpoints, 3), c.Metastore.Prefix)
	}
	return "metadata_dir " + c.MetadataDir
}

// Quorum is the effective write quorum: WriteQuorum, or k+1 capped at k+m.
func (c *Config) Quorum() int {
	if c.WriteQuorum > 0 {
		return c.WriteQuorum
	}
	return min(c.Policy.K+1, c.Policy.K+c.Policy.M)
}

// Validate fills defaults and reports the first problem, naming the field.
func (c *Config) Validate() error {
	c.fillDefaults()
	bad := func(field, format string, args ...any) error {
		return &ConfigError{File: c.path, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if c.Dir == "" && (c.Metastore.Kind == "pebble" && c.MetadataDir == "") {
		return bad("dir", "is empty: set dir (or metadata_dir) to where the store keeps its metadata")
	}
	maxShard := 0
	for _, b := range c.Backends {
		if m := all.MaxValueSize(b.Kind); m > 0 && (maxShard == 0 || m < maxShard) {
			maxShard = m
		}
	}
	if err := c.Policy.Validate(maxShard); err != nil {
		var pe *encoder.PolicyError
		if errors.As(err, &pe) {
			return bad("policy."+pe.Field, "%s", pe.Reason)
		}
		return bad("policy", "%v", err)
	}
	if c.Policy.Encryption != "none" && c.MasterKeyFile == "" {
		return bad("master_key_file", "is empty, but policy.encryption is %q and needs a master key", c.Policy.Encryption)
	}
	switch c.PlacementLevel {
	case "node", "farm":
	default:
		return bad("placement_level", "%q is not node or farm", c.PlacementLevel)
	}
	if c.WriteQuorum != 0 && (c.WriteQuorum < c.Policy.K || c.WriteQuorum > c.Policy.K+c.Policy.M) {
		return bad("write_quorum", "%d must lie between k=%d and k+m=%d", c.WriteQuorum, c.Policy.K, c.Policy.K+c.Policy.M)
	}
	if c.HedgeAfter < 0 {
		return bad("hedge_after", "is negative")
	}
	if err := c.validateInline(); err != nil {
		return err
	}
	switch c.Metastore.Kind {
	case "pebble":
		if key := c.Metastore.etcdOnlyKey(); key != "" {
			return bad("metastore."+key, "is set, but metastore.kind is %q: the TLS and authentication keys apply to etcd only", c.Metastore.Kind)
		}
	case "etcd":
		if len(c.Metastore.Endpoints) == 0 {
			return bad("metastore.endpoints", "kind etcd needs at least one endpoint (host:port)")
		}
		if field, msg := c.Metastore.checkEtcd(); msg != "" {
			return bad("metastore."+field, "%s", msg)
		}
	default:
		return bad("metastore.kind", "%q is not pebble or etcd", c.Metastore.Kind)
	}
	h := c.Healer
	switch {
	case h.ProbeInterval < 0:
		return bad("healer.probe_interval", "is negative")
	case h.GracePeriod < 0:
		return bad("healer.grace_period", "is negative")
	case h.Workers < 0:
		return bad("healer.workers", "is negative")
	case h.Workers > healer.MaxWorkers:
		return bad("healer.workers", "%d is more than %d", h.Workers, healer.MaxWorkers)
	case h.RateBytes < 0:
		return bad("healer.rate_bytes", "is negative")
	case h.GCDelay < 0:
		return bad("healer.gc_delay", "is negative")
	case h.SpareTarget < 0:
		return bad("healer.spare_target", "is negative")
	}
	// The daemon listens here and other commands look for it here: a
	// typo fails now, naming the key, not only when the daemon starts.
	if _, port, err := net.SplitHostPort(h.MetricsAddr); err != nil {
		return bad("healer.metrics_addr", "%q is not host:port (%v), e.g. %s", h.MetricsAddr, err, DefaultMetricsAddr)
	} else if _, err := net.LookupPort("tcp", port); err != nil {
		return bad("healer.metrics_addr", "%q is not host:port (port: %v), e.g. %s", h.MetricsAddr, err, DefaultMetricsAddr)
	}
	switch sn := c.Snapshots; {
	case sn.Interval < 0:
		return bad("snapshots.interval", "is negative")
	case sn.MaxAge < 0:
		return bad("snapshots.max_age", "is negative")
	case sn.Keep < 0:
		return bad("snapshots.keep", "is negative")
	}
	known := false
	for _, k := range provisionerKinds {
		known = known || h.Provisioner.Kind == k
	}
	if !known {
		return bad("healer.provisioner.kind", "%q is not one of local, spare, command, tfgrid (or empty)", h.Provisioner.Kind)
	}
	// The settings are read again when the healer starts; read here, a
	// typo in them fails every command at once, not only the daemon.
	if err := checkProvisionerSettings(h.Provisioner, c.Dir); err != nil {
		return bad("healer.provisioner.settings", "%v", err)
	}
	names := map[string]int{}
	paths := map[string]int{}
	for i, b := range c.Backends {
		field := fmt.Sprintf("backends[%d]", i)
		if err := b.ValidateInput(); err != nil {
			return bad(field, "%v", err)
		}
		if j, dup := names[b.Name]; dup {
			return bad(field+".name", "%q is also the name of backends[%d]", b.Name, j)
		}
		names[b.Name] = i
		if b.Kind == backends.KindLocal {
			p := filepath.Clean(b.Path)
			if j, dup := paths[p]; dup {
				return bad(field+".path", "%s is also the path of backends[%d]", b.Path, j)
			}
			paths[p] = i
		}
	}
	return nil
}

// Marshal encodes the config as TOML, paths as they are.
func (c *Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(true)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), nil
}

// checkProvisionerSettings parses the settings of the provisioner kind p
// names, as the healer will; base anchors relative paths.
func checkProvisionerSettings(p ProvisionerConfig, base string) error {
	var err error
	switch p.Kind {
	case "local":
		_, err = provision.LocalConfigFromSettings(p.Settings, base)
	case "spare":
		_, err = provision.SpareSpecsFromSettings(p.Settings, base)
	case "command":
		_, err = command.ConfigFromSettings(p.Settings)
	case "tfgrid":
		_, err = tfgrid.ConfigFromSettings(p.Settings)
	}
	return err
}

// typeErrorRE matches go-toml's message for a value of the wrong type,
// which names Go types ("cannot decode TOML string into struct field
// encoder.Policy.K of type int").
var typeErrorRE = regexp.MustCompile(`^cannot decode TOML (\w+) into struct field \S+ of type (\S+)$`)

// plainTypeError says go-toml's type errors in the file's terms: "wants an
// integer, not a string".
func plainTypeError(msg string) string {
	m := typeErrorRE.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	want := map[string]string{"int": "an integer", "int64": "an integer", "string": "a string", "bool": "true or false",
		"[]string": "an array of strings", "[]backends.Spec": "[[backends]] tables", "healstore.Duration": `a duration string ("30s")`}[m[2]]
	if want == "" {
		want = "a " + m[2][strings.LastIndex(m[2], ".")+1:]
	}
	got := m[1]
	if strings.ContainsAny(got[:1], "aeiou") {
		got = "an " + got
	} else {
		got = "a " + got
	}
	return fmt.Sprintf("wants %s, not %s", want, got)
}
