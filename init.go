package healstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/healstore/healstore/backends/local"
	"github.com/healstore/healstore/encoder"
)

// InitOptions shape the store Init creates.
type InitOptions struct {
	// Policy of the new store. Zero: encoder.DefaultPolicy() (4+2, which
	// survives the loss of any two backends).
	Policy encoder.Policy
	// Backends is the number of local backends, each in its own directory
	// and its own node domain. Zero: k+m.
	Backends int
	// Force overwrites an existing healstore.toml and keeps an existing
	// master key (healstore.key) and secrets file. Without Force, Init
	// refuses if either the config or the key exists. With or without it,
	// Init refuses to make a new key where a store's metadata (dir/meta)
	// exists but its key is missing: a new key could not read the store.
	Force bool
	// Provisioner is the kind of provisioner the config names, which
	// replaces a backend that stays down past the grace period: "local"
	// makes new directory backends under dir/provisioned (a single host
	// then heals with no one at the keyboard; `healstore init` asks for
	// it), "" names none (lost redundancy waits for `healstore backend
	// add`). Other kinds need settings only the user knows.
	Provisioner string
}

// ErrInitRefused: Init found what it must not overwrite (a config
// without Force, a store's metadata without its key).
var ErrInitRefused = errors.New("init refused")

// refusal is an Init error that is ErrInitRefused; its text is msg alone.
type refusal struct{ msg string }

func (r *refusal) Error() string        { return r.msg }
func (r *refusal) Is(target error) bool { return target == ErrInitRefused }

func refusef(format string, args ...any) error {
	return &refusal{fmt.Sprintf(format, args...)}
}

// InitProvisionDir is where the local provisioner Init configures makes
// replacement backends, relative to the store's directory.
const InitProvisionDir = "provisioned"

// ConfigFileName is the name Init gives the config file.
const ConfigFileName = "healstore.toml"

// Init creates a working store in dir: dir/healstore.toml (mode 0600), a
// fresh master key in dir/healstore.key (0600), an empty secrets file
// dir/secrets.toml (0600), and local backends in dir/backends/b1..bN with
// distinct node labels, plus the provisioner o names. Paths in the config are relative to dir, so the
// directory can be moved. It returns the config file's path. The store's
// metadata is created on first Open.
func Init(dir string, o InitOptions) (string, error) {
	pol := o.Policy
	if pol == (encoder.Policy{}) {
		pol = encoder.DefaultPolicy()
	}
	if err := pol.Validate(0); err != nil {
		return "", fmt.Errorf("init: %w", err)
	}
	n := o.Backends
	if n == 0 {
		n = pol.K + pol.M
	}
	if n < pol.K+pol.M {
		return "", fmt.Errorf("init: %d backends cannot hold %d+%d shards in distinct domains", n, pol.K, pol.M)
	}
	var prov string
	switch o.Provisioner {
	case "":
		prov = `# Replaces a backend that stays down past the grace period: "local"
# makes new directory backends under settings.dir on this host; "spare",
# "command" and "tfgrid" are described in docs/provisioning.md.
kind = ""
`
	case "local":
		prov = fmt.Sprintf(`# Replaces a backend that stays down past the grace period. "local" makes
# new directory backends under settings.dir on this host, so a single-host
# store heals by itself; for backends on other machines use "spare",
# "command" or "tfgrid" (docs/provisioning.md).
kind = "local"

[healer.provisioner.settings]
# Parent directory of replacement backends (relative to dir).
dir = %q
`, InitProvisionDir)
	default:
		return "", fmt.Errorf("init: provisioner %q: init configures only \"local\" (or none); edit [healer.provisioner] for the others", o.Provisioner)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("init: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", fmt.Errorf("init: %w", err)
	}
	cfgPath := filepath.Join(abs, ConfigFileName)
	if _, err := os.Stat(cfgPath); err == nil && !o.Force {
		return "", refusef("init: %s already exists; refusing to overwrite it (--force rewrites it and keeps the master key)", cfgPath)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("init: %w", err)
	}
	keyPath := filepath.Join(abs, "healstore.key")
	newKey := false
	_, err = os.Stat(keyPath)
	switch {
	case err == nil && !o.Force:
		return "", refusef("init: %s already exists; a store's master key is never replaced "+
			"(--force writes a new config and keeps this key; a new store needs a new directory)", keyPath)
	case err == nil:
		// Force: the config is rewritten, the key kept. A key the store
		// cannot load is refused now, before the config is rewritten.
		if _, err := LoadMasterKey(keyPath); err != nil {
			return "", refusef("init: %v; init keeps an existing key, so fix it (or restore it from your backup) first", err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("init: %w", err)
	default:
		// A new key for metadata made under another key would make every
		// object of the store unreadable (Open refuses the key).
		metaDir := filepath.Join(abs, "meta")
		if ents, err := os.ReadDir(metaDir); err == nil && len(ents) > 0 {
			return "", refusef("init: %s holds a store's metadata but its master key %s is missing; "+
				"init will not make a new key that cannot read the store's objects. Restore the key from your backup "+
				"(then init --force rewrites the config and keeps it), or, with the key, rebuild the store into a new "+
				"directory with healstore recover. To start a new store, use a new directory", metaDir, keyPath)
		}
		newKey = true
	}
	snap := DefaultSnapshotConfig()
	var b strings.Builder
	fmt.Fprintf(&b, `# healstore configuration, written by healstore init.
# Relative paths are relative to this file's directory.

# Local state: metadata (meta/) and caches (cache/).
dir = "."
# The master key: every object is sealed under keys derived from it.
# Back it up; without it no object can be read. Keep it mode 0600.
master_key_file = "healstore.key"
# Secrets backends refer to by secret_ref (zdb passwords, S3 secret keys).
secrets_file = "secrets.toml"
# No two shards of a stripe share a failure domain at this level: node or farm.
placement_level = "node"
# Shards of a stripe that must land for a write to succeed (0 = k+1).
write_quorum = 0
# Objects up to this many bytes are kept sealed inside their metadata
# record instead of as shards (0 = never); they are as safe as the metadata.
inline_max_size = %d

# How new objects are stored: k data + m parity shards per block; any m
# backends may be lost at once without losing data.
[policy]
k = %d
m = %d
block_size = %d
compression = %q
encryption = %q
checksum = %q

[metastore]
kind = "pebble"

[healer]
probe_interval = "10s"
grace_period = "10m"
workers = 2
scrub_period = "168h"
gc_delay = "1h"
metrics_addr = "127.0.0.1:9310"

[healer.provisioner]
%s
# Metadata snapshots: the metadata is sealed and erasure coded onto the
# backends, so "healstore recover" rebuilds this machine from the master
# key and any one backend. What changed since the newest snapshot is what
# losing this machine would cost.
[snapshots]
# Check at least this often; upload when the metadata changed.
interval = %q
# Snapshot as soon as this many metadata commits piled up (-1: never early).
max_changes = %d
# Changes to backend bookkeeping alone (probe times) wait this long.
max_age = %q
# Snapshots kept on the backends.
keep = %d
`, DefaultInlineMaxSize, pol.K, pol.M, pol.BlockSize, pol.Compression, pol.Encryption, pol.Checksum, prov,
		snap.Interval, snap.MaxChanges, snap.MaxAge, snap.Keep)
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("b%d", i)
		p := filepath.Join("backends", name)
		fmt.Fprintf(&b, "\n[[backends]]\nname = %q\nkind = \"local\"\npath = %q\nnode = \"node%d\"\n", name, p, i)
	}
	// Check that what we wrote loads before handing it to the user.
	fresh, err := ParseConfig(cfgPath, []byte(b.String()))
	if err != nil {
		return "", fmt.Errorf("init: generated config does not load: %w", err)
	}
	if err := checkSameBackends(cfgPath, fresh); err != nil {
		return "", err
	}
	// An existing secrets file is kept: one the store could not open is
	// refused before anything is written.
	secretsPath := filepath.Join(abs, "secrets.toml")
	if _, err := readSecrets(secretsPath); err != nil {
		return "", refusef("init: %v; init keeps an existing secrets file, so fix it first", err)
	}
	// Every check passed: write.
	if newKey {
		if err := GenerateMasterKey(keyPath); err != nil {
			return "", fmt.Errorf("init: %w", err)
		}
	}
	if _, err := os.Stat(secretsPath); errors.Is(err, fs.ErrNotExist) {
		if err := writePrivate(secretsPath, []byte("# healstore secrets: ref = \"secret\" (zdb passwords, S3 secret keys). Keep this file mode 0600.\n")); err != nil {
			return "", fmt.Errorf("init: %w", err)
		}
	}
	for _, bs := range fresh.Backends {
		if !newKey {
			// The store exists (its key is kept). A backend whose data
			// directory is gone is an outage (a volume not mounted), not
			// a new backend: making it again would fill the file system
			// under the mount point. The store's open reports it; a new
			// backend of the rewritten config is made by the store too.
			if _, err := os.Stat(filepath.Join(bs.Path, "data")); errors.Is(err, fs.ErrNotExist) {
				continue
			}
		}
		if err := os.MkdirAll(bs.Path, 0o700); err != nil {
			return "", fmt.Errorf("init: %w", err)
		}
		if err := local.Prepare(bs.Path); err != nil {
			return "", fmt.Errorf("init: %w", err)
		}
	}
	if err := writePrivate(cfgPath, []byte(b.String())); err != nil {
		return "", fmt.Errorf("init: %w", err)
	}
	return cfgPath, nil
}

// checkSameBackends refuses (for Force) a new config that would point a
// backend of the existing config at another place: the store would look
// for that backend's shards where they are not. An existing config that
// does not load is not compared (replacing it is what Force is for).
func checkSameBackends(cfgPath string, fresh *Config) error {
	old, err := LoadConfig(cfgPath)
	if err != nil {
		return nil
	}
	// The metadata, too: init writes an embedded metastore in DIR/meta,
	// and a config pointing elsewhere (etcd, another metadata_dir) would
	// leave the store's objects behind in a metastore it no longer opens.
	if old.Metastore.Kind != fresh.Metastore.Kind || (old.Metastore.Kind == "pebble" && old.MetadataDir != fresh.MetadataDir) {
		return refusef("init: %s keeps the store's metadata elsewhere (metastore %s%s) than the config init writes (pebble in %s); "+
			"rewriting it would open an empty metastore. Edit %s instead",
			cfgPath, old.Metastore.Kind, map[bool]string{true: " in " + old.MetadataDir, false: ""}[old.Metastore.Kind == "pebble"], fresh.MetadataDir, cfgPath)
	}
	for _, ob := range old.Backends {
		for _, nb := range fresh.Backends {
			if ob.Name == nb.Name && ob != nb {
				return refusef("init: %s names backend %s differently from the config init writes (%+v, not %+v); "+
					"rewriting it would make the store look for that backend's shards elsewhere. Edit %s instead",
					cfgPath, ob.Name, ob, nb, cfgPath)
			}
		}
	}
	return nil
}
