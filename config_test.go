package healstore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodConfig = `
master_key_file = "k.key"
[policy]
k = 2
m = 1
block_size = 65536
compression = "none"
encryption = "aes-256-gcm"
checksum = "xxh3-128"

[healer]
grace_period = "0s"
probe_interval = "5s"

[[backends]]
name = "a"
kind = "local"
path = "backends/a"
node = "n1"
`

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "healstore.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigDefaultsAndPaths(t *testing.T) {
	p := writeConfig(t, goodConfig)
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(p)
	if cfg.Dir != dir || cfg.MetadataDir != filepath.Join(dir, "meta") || cfg.CacheDir != filepath.Join(dir, "cache") {
		t.Fatalf("dirs %q %q %q", cfg.Dir, cfg.MetadataDir, cfg.CacheDir)
	}
	if cfg.MasterKeyFile != filepath.Join(dir, "k.key") || cfg.Backends[0].Path != filepath.Join(dir, "backends/a") {
		t.Fatalf("relative paths not resolved: %q %q", cfg.MasterKeyFile, cfg.Backends[0].Path)
	}
	if cfg.Healer.GracePeriod != 0 {
		t.Fatalf("explicit grace_period 0 became %v", cfg.Healer.GracePeriod)
	}
	if cfg.Healer.ProbeInterval.Std() != 5*time.Second || cfg.Healer.ScrubPeriod.Std() != DefaultScrubPeriod ||
		cfg.Healer.MetricsAddr != DefaultMetricsAddr || cfg.Healer.GCDelay.Std() != DefaultGCDelay {
		t.Fatalf("healer defaults: %+v", cfg.Healer)
	}
	if cfg.Quorum() != 3 || cfg.PlacementLevel != "node" || cfg.Metastore.Kind != "pebble" {
		t.Fatalf("quorum %d level %q metastore %q", cfg.Quorum(), cfg.PlacementLevel, cfg.Metastore.Kind)
	}
	if cfg.Path() != p {
		t.Fatalf("path %q", cfg.Path())
	}
	if cfg.Snapshots != DefaultSnapshotConfig() {
		t.Fatalf("snapshots without a [snapshots] section: %+v, want the defaults %+v", cfg.Snapshots, DefaultSnapshotConfig())
	}
}

// TestConfigSnapshots: the [snapshots] section reads like the rest of the
// file; fields left out take their defaults, and max_changes keeps a
// negative value (no early snapshots).
func TestConfigSnapshots(t *testing.T) {
	p := writeConfig(t, goodConfig+"\n[snapshots]\ninterval = \"15s\"\nmax_changes = -1\nkeep = 5\n")
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	want := SnapshotConfig{Interval: Duration(15 * time.Second), MaxChanges: -1, MaxAge: DefaultSnapshotConfig().MaxAge, Keep: 5}
	if cfg.Snapshots != want {
		t.Fatalf("snapshots %+v, want %+v", cfg.Snapshots, want)
	}
	// Marshalled and parsed back: the same settings.
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseConfig(p, data)
	if err != nil {
		t.Fatalf("marshalled config does not parse: %v\n%s", err, data)
	}
	if again.Snapshots != want {
		t.Fatalf("round trip: snapshots %+v, want %+v\n%s", again.Snapshots, want, data)
	}
	// A config built in code with no snapshot settings gets the defaults.
	c := &Config{Dir: t.TempDir(), Policy: DefaultConfig().Policy}
	c.Policy.Encryption = "none"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Snapshots != DefaultSnapshotConfig() {
		t.Fatalf("zero snapshots after Validate: %+v", c.Snapshots)
	}
}

// A negative scrub_period turns the deep scrub off in the healer.
func TestScrubPeriodOff(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, strings.Replace(goodConfig, `probe_interval = "5s"`, "probe_interval = \"5s\"\nscrub_period = \"-1s\"", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Healer.ScrubPeriod != Duration(-time.Second) {
		t.Fatalf("scrub_period %v, want -1s (off)", cfg.Healer.ScrubPeriod)
	}
}

// A bare 0 is a duration in any unit: configs that wrote it keep loading.
func TestBareZeroDuration(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, strings.Replace(goodConfig, `grace_period = "0s"`, "grace_period = 0\ngc_delay = 0", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Healer.GracePeriod != 0 || cfg.Healer.GCDelay != 0 {
		t.Fatalf("grace_period %v, gc_delay %v", cfg.Healer.GracePeriod, cfg.Healer.GCDelay)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(string) string
		field string
		line  int
		msg   string
	}{
		{"unknown top key", func(s string) string { return "bogus = 1\n" + s }, "bogus", 1, "unknown key"},
		{"unknown key in a backend", func(s string) string { return s + "colour = \"red\"\n" }, "backends.colour", 20, "unknown key"},
		{"unknown nested key", func(s string) string {
			return strings.Replace(s, "probe_interval = \"5s\"", "probe_interval = \"5s\"\ngrace = \"1m\"", 1)
		}, "healer.grace", 14, "unknown key"},
		{"upper-case key", func(s string) string { return strings.Replace(s, "master_key_file", "MASTER_KEY_FILE", 1) }, "MASTER_KEY_FILE", 2, `did you mean "master_key_file"`},
		{"both spellings", func(s string) string { return "Master_Key_File = \"other.key\"\n" + s }, "Master_Key_File", 1, "case-sensitive"},
		{"table in upper case", func(s string) string { return strings.Replace(s, "[policy]", "[Policy]", 1) }, "Policy", 3, `did you mean "policy"`},
		{"nested key in upper case", func(s string) string { return strings.Replace(s, "k = 2", "K = 2", 1) }, "policy.K", 4, `did you mean "k"`},
		{"backend key in mixed case", func(s string) string { return strings.Replace(s, "path = ", "Path = ", 1) }, "backends[0].Path", 18, `did you mean "path"`},
		{"duration without a unit", func(s string) string { return strings.Replace(s, `grace_period = "0s"`, "grace_period = 600", 1) }, "healer.grace_period", 12, `a duration is a string with a unit, e.g. "600s"`},
		{"provisioner settings typo", func(s string) string {
			return s + "\n[healer.provisioner]\nkind = \"local\"\n[healer.provisioner.settings]\ndri = \"prov\"\n"
		}, "healer.provisioner.settings", 0, `unknown field "dri"`},
		{"command provisioner without a command", func(s string) string {
			return s + "\n[healer.provisioner]\nkind = \"command\"\n[healer.provisioner.settings]\ntimeout = \"soon\"\n"
		}, "healer.provisioner.settings", 0, `timeout "soon"`},
		{"too many workers", func(s string) string {
			return strings.Replace(s, `probe_interval = "5s"`, "probe_interval = \"5s\"\nworkers = 5000", 1)
		}, "healer.workers", 0, "5000 is more than 1024"},
		{"metrics address", func(s string) string {
			return strings.Replace(s, `probe_interval = "5s"`, "probe_interval = \"5s\"\nmetrics_addr = \"notanaddr\"", 1)
		}, "healer.metrics_addr", 0, `"notanaddr" is not host:port`},
		{"metrics port", func(s string) string {
			return strings.Replace(s, `probe_interval = "5s"`, "probe_interval = \"5s\"\nmetrics_addr = \"127.0.0.1:99999\"", 1)
		}, "healer.metrics_addr", 0, `"127.0.0.1:99999" is not host:port`},
		{"home in dir", func(s string) string { return "dir = \"~/store\"\n" + s }, "dir", 0, `"~/store": ~ is not expanded`},
		{"home in a backend path", func(s string) string { return strings.Replace(s, `path = "backends/a"`, `path = "~/a"`, 1) }, "backends[0].path", 0, "~ is not expanded"},
		{"bad duration", func(s string) string { return strings.Replace(s, `"5s"`, `"5 parsecs"`, 1) }, "healer.probe_interval", 13, "invalid duration"},
		{"wrong type", func(s string) string { return strings.Replace(s, "k = 2", "k = \"two\"", 1) }, "policy.k", 4, "policy.k: wants an integer, not a string"},
		{"syntax", func(s string) string { return strings.Replace(s, "m = 1", "m = = 1", 1) }, "", 5, ""},
		{"policy field", func(s string) string { return strings.Replace(s, "m = 1", "m = 0", 1) }, "policy.m", 0, "at least 1"},
		{"quorum too low", func(s string) string { return "write_quorum = 1\n" + s }, "write_quorum", 0, "between k=2"},
		{"level", func(s string) string { return "placement_level = \"rack\"\n" + s }, "placement_level", 0, "node or farm"},
		{"backend kind", func(s string) string { return strings.Replace(s, `kind = "local"`, `kind = "nfs"`, 1) }, "backends[0]", 0, "unknown kind"},
		{"backend key of another kind", func(s string) string {
			return strings.Replace(s, `kind = "local"`, "kind = \"local\"\nbucket = \"x\"", 1)
		}, "backends[0]", 0, "backend a: bucket does not apply to a local backend (only to s3)"},
		{"backend key of another kind, zdb", func(s string) string {
			return s + "\n[[backends]]\nname = \"z\"\nkind = \"zdb\"\naddress = \"h:9900\"\nnamespace = \"ns\"\nregion = \"eu\"\n"
		}, "backends[1]", 0, "backend z: region does not apply to a zdb backend (only to s3)"},
		{"duplicate backend", func(s string) string {
			return s + "\n[[backends]]\nname = \"a\"\nkind = \"local\"\npath = \"x\"\n"
		}, "backends[1].name", 0, "also the name"},
		{"duplicate path", func(s string) string {
			return s + "\n[[backends]]\nname = \"b\"\nkind = \"local\"\npath = \"backends/a\"\n"
		}, "backends[1].path", 0, "also the path"},
		{"provisioner kind", func(s string) string { return s + "\n[healer.provisioner]\nkind = \"magic\"\n" }, "healer.provisioner.kind", 0, "not one of"},
		{"etcd without endpoints", func(s string) string { return s + "\n[metastore]\nkind = \"etcd\"\n" }, "metastore.endpoints", 0, "at least one endpoint"},
		{"no key", func(s string) string { return strings.Replace(s, `master_key_file = "k.key"`, "", 1) }, "master_key_file", 0, "needs a master key"},
		{"unknown snapshots key", func(s string) string { return s + "\n[snapshots]\nkeep = 2\nevery = \"1m\"\n" }, "snapshots.every", 23, "unknown key"},
		{"snapshots duration", func(s string) string { return s + "\n[snapshots]\ninterval = \"soon\"\n" }, "snapshots.interval", 22, "invalid duration"},
		{"snapshots interval", func(s string) string { return s + "\n[snapshots]\ninterval = \"-30s\"\n" }, "snapshots.interval", 0, "negative"},
		{"snapshots max_age", func(s string) string { return s + "\n[snapshots]\nmax_age = \"-1m\"\n" }, "snapshots.max_age", 0, "negative"},
		{"snapshots keep", func(s string) string { return s + "\n[snapshots]\nkeep = -1\n" }, "snapshots.keep", 0, "negative"},
		{"snapshots type", func(s string) string { return s + "\n[snapshots]\nkeep = \"all\"\n" }, "snapshots.keep", 22, "wants an integer, not a string"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, ce, err := loadBadConfig(t, c.edit(goodConfig))
			if ce.File != p || !strings.Contains(err.Error(), p) {
				t.Errorf("error does not name the file: %v", err)
			}
			if c.field != "" && ce.Field != c.field {
				t.Errorf("field %q, want %q (%v)", ce.Field, c.field, err)
			}
			if c.line != 0 && ce.Line != c.line {
				t.Errorf("line %d, want %d (%v)", ce.Line, c.line, err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("message %q lacks %q", err, c.msg)
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), "nope.toml") {
		t.Fatalf("got %v", err)
	}
}

func TestInitConfigLoadsAndRoundTrips(t *testing.T) {
	dir := t.TempDir()
	p, err := Init(dir, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Policy.K != 4 || cfg.Policy.M != 2 || len(cfg.Backends) != 6 {
		t.Fatalf("policy %+v backends %d", cfg.Policy, len(cfg.Backends))
	}
	// The written file spells out every snapshot setting, at its default.
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"[snapshots]", "interval = ", "max_changes = ", "max_age = ", "keep = "} {
		if !strings.Contains(string(raw), "\n"+key) {
			t.Fatalf("init's config lacks %q:\n%s", key, raw)
		}
	}
	if cfg.Snapshots != DefaultSnapshotConfig() {
		t.Fatalf("init's snapshots %+v, want the defaults %+v", cfg.Snapshots, DefaultSnapshotConfig())
	}
	nodes := map[string]bool{}
	for _, b := range cfg.Backends {
		nodes[b.Domain("node")] = true
		if st, err := os.Stat(b.Path); err != nil || !st.IsDir() {
			t.Fatalf("backend dir %s: %v", b.Path, err)
		}
		// Laid out in advance: the first puts make no directories.
		if ents, err := os.ReadDir(filepath.Join(b.Path, "data")); err != nil || len(ents) != 256 {
			t.Fatalf("backend %s: %d fan-out directories (%v), want 256", b.Name, len(ents), err)
		}
	}
	if len(nodes) != 6 {
		t.Fatalf("backends share nodes: %v", nodes)
	}
	for _, f := range []string{p, cfg.MasterKeyFile, cfg.SecretsFile} {
		st, err := os.Stat(f)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v", f, st.Mode(), err)
		}
	}
	if _, err := Init(dir, InitOptions{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second init: %v", err)
	}
	// Marshal and parse back: the same config.
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseConfig(p, data)
	if err != nil {
		t.Fatalf("marshalled config does not parse: %v\n%s", err, data)
	}
	if again.Policy != cfg.Policy || len(again.Backends) != 6 || again.Healer.GracePeriod != cfg.Healer.GracePeriod ||
		again.Snapshots != cfg.Snapshots {
		t.Fatalf("round trip changed the config")
	}
}

// loadBadConfig writes text as a config file and loads it, failing the
// test unless loading fails with a *ConfigError (ErrBadConfig).
func loadBadConfig(t *testing.T, text string) (path string, ce *ConfigError, err error) {
	t.Helper()
	path = writeConfig(t, text)
	_, err = LoadConfig(path)
	if !errors.As(err, &ce) || !errors.Is(err, ErrBadConfig) {
		t.Fatalf("want *ConfigError, got %v", err)
	}
	return path, ce, err
}
