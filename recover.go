package healstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/all"
	"github.com/healstore/healstore/healer/snapshot"
	"github.com/healstore/healstore/metastore"
	pebblekv "github.com/healstore/healstore/metastore/pebble"
)

// ErrNoSnapshot: the reachable backends hold no readable snapshot of a
// store (none was taken, the backends are not a healstore store's, or
// every snapshot is damaged beyond repair).
var ErrNoSnapshot = errors.New("no usable metadata snapshot")

// RecoverOptions say where a lost store's data is and where to rebuild it.
type RecoverOptions struct {
	// KeyFile is the store's master key file (mode 0600); it is copied
	// into Dir.
	KeyFile string
	// Backends are where to start: at least one must be reachable (its
	// snapshot pointer names the others). A spec given here replaces the
	// one recorded for the same name (a local path may differ on the new
	// machine) and goes into the new config; failure-domain labels and
	// quota it leaves empty are the recorded ones. A field that does not apply
	// to the spec's kind is refused (backends.Spec.ValidateInput).
	Backends []backends.Spec
	// SecretsFile resolves the backends' secret refs (zdb passwords, S3
	// secret keys); it is copied into Dir. Optional when no backend needs
	// a secret; when given, a file that is not there is an error, before
	// anything is written.
	SecretsFile string
	// Dir is the new store directory. It must not exist or be empty.
	Dir string
	// Snapshot picks a snapshot by id; default: the newest that reads
	// back intact, falling back to older ones.
	Snapshot string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// SkippedSnapshot is a snapshot recovery tried and could not read.
type SkippedSnapshot struct {
	Snapshot SnapshotInfo `json:"snapshot"`
	Error    string       `json:"error"`
}

// LaterStripe is a stripe whose shards are on the backends but which the
// recovered metadata does not know: written after the snapshot (its object
// is lost from the metadata), or left by a write that never committed.
type LaterStripe struct {
	Stripe string `json:"stripe"`
	// K and M as the first readable shard header says (0 when none read).
	K int `json:"k"`
	M int `json:"m"`
	// Shards found, by index.
	Shards []ShardLocation `json:"shards"`
	// Bytes of all its shards.
	Bytes int64 `json:"bytes"`
	// Complete: at least K distinct shard indices were found, so the
	// sealed block is still decodable by whoever knows its object.
	Complete bool `json:"complete"`
	// Intent: the recovered metadata has a write intent naming it (a
	// write was in flight when the snapshot was taken).
	Intent bool `json:"intent"`
}

// DamagedStripe is a stripe of the recovered metadata with fewer than K of
// its shards found on the backends that could be listed.
type DamagedStripe struct {
	// Object is the name of the object it belongs to; "" when no object
	// in the metadata has it.
	Object string `json:"object"`
	Stripe string `json:"stripe"`
	// K shards are needed to read it; Present were found (shards on
	// backends that could not be listed count as present).
	K       int `json:"k"`
	Present int `json:"present"`
	// Missing are the absent shard indices, in order; MissingShards the
	// same with the backend and key the metadata records for each
	// (backend "" for a shard that was never placed).
	Missing       []int           `json:"missing"`
	MissingShards []ShardLocation `json:"missing_shards"`
	// Detail says the same in one line, as the text report prints it.
	Detail string `json:"detail"`
}

// ShardLocation is one shard on one backend.
type ShardLocation struct {
	Backend string `json:"backend"`
	Key     string `json:"key"`
	Index   int    `json:"index"`
}

// RecoverReport says what Recover found and did.
type RecoverReport struct {
	// ConfigPath is the config written for the recovered store.
	ConfigPath string `json:"config"`
	StoreID    string `json:"store_id"`
	// Snapshot is the snapshot restored; Skipped the newer ones that did
	// not read back.
	Snapshot SnapshotInfo      `json:"snapshot"`
	Skipped  []SkippedSnapshot `json:"skipped,omitempty"`
	// Pointers: how many backends' pointers were read, missing, damaged
	// or sealed with another key.
	Pointers struct {
		Read, Missing, Corrupt, WrongKey int
	} `json:"pointers"`
	// Unreachable backends (given, or named by a pointer) and why.
	Unreachable map[string]string `json:"unreachable,omitempty"`
	// Objects in the recovered metadata.
	Objects int `json:"objects"`
	// Damaged objects have a stripe with fewer than k shards left on the
	// backends that could be listed (objects deleted or replaced after
	// the snapshot, whose shards garbage collection removed, look so).
	Damaged []string `json:"damaged,omitempty"`
	// DamagedStripes say which shards those objects' stripes lack and on
	// which backends they were: the nodes to bring back. At most 1000,
	// by object name; DamagedStripeCount counts them all.
	DamagedStripes     []DamagedStripe `json:"damaged_stripes,omitempty"`
	DamagedStripeCount int             `json:"damaged_stripe_count"`
	// MissingByBackend counts, per backend, the shards the metadata places
	// there that its listing lacks (in damaged and queued stripes alike).
	MissingByBackend map[string]int `json:"missing_by_backend,omitempty"`
	// Queued counts stripes whose listed shards are partly missing; they
	// are on the repair queue for the healer.
	Queued int `json:"queued"`
	// Later lists stripes on the backends the metadata does not know;
	// LaterShards counts their shards.
	Later       []LaterStripe `json:"later,omitempty"`
	LaterShards int           `json:"later_shards"`
	// Unlisted backends could not be listed, so their shards were not
	// checked.
	Unlisted []string `json:"unlisted,omitempty"`
}

// Recover rebuilds a lost store's metadata in a new directory from the
// master key and its backends: it reads the snapshot pointers, restores
// the newest snapshot that reads back intact (older ones when the newest
// is damaged) into a pebble metastore in o.Dir/meta, copies the key and
// secrets, writes o.Dir/healstore.toml, opens the store, and compares the
// metadata with the shards the backends hold (see RecoverReport).
//
// Every object committed before the restored snapshot was taken reads
// back. Objects written after it are not in the metadata; their shards
// are reported in Later.
//
// Errors: ErrAuth when the key does not match the store on the backends
// (nothing is written then); ErrNoSnapshot when no snapshot is found or
// none reads back (o.Dir is left as it was).
func Recover(ctx context.Context, o RecoverOptions) (*RecoverReport, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch {
	case o.KeyFile == "":
		return nil, errors.New("recover: the master key file is required")
	case o.Dir == "":
		return nil, errors.New("recover: the target directory is required")
	case len(o.Backends) == 0:
		return nil, errors.New("recover: at least one backend is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	existed, err := checkEmptyDir(dir)
	if err != nil {
		return nil, err
	}
	for i, spec := range o.Backends {
		if err := spec.ValidateInput(); err != nil {
			return nil, fmt.Errorf("recover: backend %d: %w", i+1, err)
		}
		if spec.Kind == backends.KindLocal {
			if o.Backends[i].Path, err = filepath.Abs(spec.Path); err != nil {
				return nil, fmt.Errorf("recover: %w", err)
			}
		}
	}
	// A secrets file given must be there: OpenSecrets reads a missing one
	// as empty (a store's own is written by its first secret), which here
	// would recover without the backends' secrets, a typo failing later
	// and far from its cause. "" is no secrets file.
	if o.SecretsFile != "" {
		if err := checkPrivate(o.SecretsFile, "secrets file"); err != nil {
			return nil, fmt.Errorf("recover: %w", err)
		}
	}
	key, err := LoadMasterKey(o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	keys, err := snapshot.DeriveKeys(key)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	secrets, err := OpenSecrets(o.SecretsFile)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	rep := &RecoverReport{Unreachable: map[string]string{}}
	pool := newRecoverPool(secrets, log)
	defer pool.close()
	var names []string
	for _, spec := range o.Backends {
		pool.specs[spec.Name] = spec
		names = append(names, spec.Name)
	}
	given := pool.openAll(ctx, names)
	if len(given) == 0 {
		return nil, fmt.Errorf("recover: none of the %d backends could be opened: %s", len(o.Backends), pool.failures())
	}

	// Read every pointer and learn the other backends from them; read
	// theirs too, since a given backend may have been down when a newer
	// pointer was written.
	var reads []snapshot.PointerRead
	readFrom := given
	asked := map[string]bool{}
	var cat *snapshot.Catalog
	for round := 0; ; round++ {
		for _, b := range readFrom {
			asked[b.Name()] = true
		}
		reads = append(reads, snapshot.ReadPointers(ctx, keys, readFrom)...)
		cat = snapshot.Merge(reads)
		if cat.Read == 0 || round == 2 {
			break
		}
		var names []string
		for name, spec := range cat.Specs {
			if _, known := pool.specs[name]; !known {
				pool.specs[name] = spec
			}
			if !asked[name] {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			asked[name] = true
		}
		readFrom = pool.openAll(ctx, names)
		if len(readFrom) == 0 {
			break
		}
	}
	if cat.Read == 0 {
		switch {
		case cat.WrongKey > 0:
			return nil, fmt.Errorf("recover: the master key in %s is not the key of the store on these backends (their snapshot pointers were sealed with another key): %w",
				o.KeyFile, ErrAuth)
		case len(cat.Failed) > 0:
			return nil, fmt.Errorf("recover: %w: no snapshot pointer could be read: %s", ErrNoSnapshot, failedList(cat.Failed))
		default:
			return nil, fmt.Errorf("recover: %w: the backends hold no snapshot pointer (%s); was a healstore daemon (which takes the snapshots) running?",
				ErrNoSnapshot, backendNames(given))
		}
	}
	rep.StoreID = cat.StoreID
	rep.Pointers.Read, rep.Pointers.Missing, rep.Pointers.Corrupt, rep.Pointers.WrongKey = cat.Read, cat.Missing, cat.Corrupt, cat.WrongKey
	cands := cat.Snapshots
	if o.Snapshot != "" {
		cands = nil
		for _, m := range cat.Snapshots {
			if m.ID.String() == o.Snapshot {
				cands = append(cands, m)
			}
		}
		if len(cands) == 0 {
			return nil, fmt.Errorf("recover: %w: snapshot %s is not among those the pointers name", ErrNoSnapshot, o.Snapshot)
		}
	}

	// Restore into a scratch directory, newest snapshot first.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			clearDir(dir, !existed)
		}
	}()
	metaDir := filepath.Join(dir, "meta")
	var chosen *snapshot.Manifest
	for i := range cands {
		m := &cands[i]
		log.Info("restoring snapshot", "id", m.ID, "seq", m.Seq, "taken", m.Taken)
		err := restoreInto(ctx, keys, m, pool.opener(), metaDir+".partial", cat.StoreID, key)
		if err != nil {
			log.Warn("snapshot does not restore", "id", m.ID, "err", err)
			rep.Skipped = append(rep.Skipped, SkippedSnapshot{Snapshot: snapshotInfo(m), Error: err.Error()})
			os.RemoveAll(metaDir + ".partial")
			if errors.Is(err, ErrAuth) {
				return nil, fmt.Errorf("recover: %w", err)
			}
			continue
		}
		chosen = m
		break
	}
	if chosen == nil {
		var why []string
		for _, s := range rep.Skipped {
			why = append(why, fmt.Sprintf("%s (seq %d): %s", s.Snapshot.ID, s.Snapshot.Seq, s.Error))
		}
		return nil, fmt.Errorf("recover: %w: none of the %d snapshots reads back: %s", ErrNoSnapshot, len(cands), strings.Join(why, "; "))
	}
	if err := os.Rename(metaDir+".partial", metaDir); err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	rep.Snapshot = snapshotInfo(chosen)

	o.Backends = withRecordedLabels(o.Backends, cat.Specs)
	cfgPath, err := writeRecoveredConfig(dir, o, chosen)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	rep.ConfigPath = cfgPath
	ok = true
	for name, err := range pool.errs {
		rep.Unreachable[name] = err.Error()
	}

	// Open the recovered store and compare its metadata with the shards.
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		return rep, fmt.Errorf("recover: the written config does not load: %w", err)
	}
	cfg.Logger = log
	s, err := Open(ctx, cfg)
	if err != nil {
		return rep, fmt.Errorf("recover: the metadata was restored in %s but the store does not open: %w", dir, err)
	}
	defer s.Close()
	if err := s.survey(ctx, rep); err != nil {
		return rep, fmt.Errorf("recover: checking the backends: %w", err)
	}
	return rep, nil
}

// restoreInto restores m into a new pebble database in dir and checks
// that it is the expected store's metadata under this master key.
func restoreInto(ctx context.Context, keys *snapshot.Keys, m *snapshot.Manifest, open snapshot.Opener, dir, storeID string, key []byte) error {
	kv, err := pebblekv.Open(dir)
	if err != nil {
		return err
	}
	defer kv.Close()
	if _, err := snapshot.Restore(ctx, keys, m, open, kv); err != nil {
		return err
	}
	id, err := kv.Get(ctx, []byte("sys/store-id"))
	if err != nil {
		return fmt.Errorf("%w: the snapshot holds no store id: %v", snapshot.ErrCorrupt, err)
	}
	if string(id) != storeID {
		return fmt.Errorf("%w: the snapshot is of store %s, its pointer names %s", snapshot.ErrCorrupt, id, storeID)
	}
	st := metastore.New(kv)
	check, err := st.GetMeta(ctx, metaKeyCheck)
	if err == nil && string(check) != keyCheck(key) {
		return fmt.Errorf("the snapshot's store was created with another master key: %w", ErrAuth)
	}
	return nil
}

// checkEmptyDir refuses a target that holds anything; existed says
// whether it is there already (empty).
func checkEmptyDir(dir string) (existed bool, err error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("recover: %w", err)
	}
	if len(ents) > 0 {
		return true, fmt.Errorf("recover: %s is not empty; recover into a new or empty directory", dir)
	}
	return true, nil
}

// clearDir removes what a failed recovery put in dir, and dir itself when
// recovery made it. A directory the operator gave stays (emptied): its
// owner and mode, or a mount point, are theirs.
func clearDir(dir string, made bool) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
	if made {
		os.Remove(dir)
	}
}

// withRecordedLabels fills in, for each given spec, the failure-domain
// labels and quota the lost store recorded for that backend when the spec
// gives none: a spec is given to reach a backend from the new machine,
// and one written into the config without them would make the backend a
// domain of its own (placement could put two shards of a stripe on one
// real node) and lift its quota. Labels given are kept as given.
func withRecordedLabels(given []backends.Spec, recorded map[string]backends.Spec) []backends.Spec {
	out := slices.Clone(given)
	for i, spec := range out {
		rec, ok := recorded[spec.Name]
		if !ok || rec.Kind != spec.Kind {
			continue
		}
		if spec.Node == "" && spec.Farm == "" {
			out[i].Node, out[i].Farm = rec.Node, rec.Farm
		}
		if spec.Quota == 0 {
			out[i].Quota = rec.Quota
		}
	}
	return out
}

// writeRecoveredConfig copies the key and secrets into dir and writes a
// config from the snapshot's settings and the given backends.
func writeRecoveredConfig(dir string, o RecoverOptions, m *snapshot.Manifest) (string, error) {
	cfg := DefaultConfig()
	if len(m.Settings) > 0 {
		var rs recoverySettings
		if err := json.Unmarshal(m.Settings, &rs); err != nil {
			return "", fmt.Errorf("snapshot settings: %w", err)
		}
		cfg.Policy, cfg.PlacementLevel, cfg.WriteQuorum, cfg.HedgeAfter, cfg.Healer = rs.Policy, rs.PlacementLevel, rs.WriteQuorum, rs.HedgeAfter, rs.Healer
		if rs.InlineMaxSize != nil {
			cfg.InlineMaxSize = *rs.InlineMaxSize
		}
		if rs.Snapshots != nil {
			cfg.Snapshots = *rs.Snapshots
		}
	}
	keyData, err := os.ReadFile(o.KeyFile)
	if err != nil {
		return "", err
	}
	if err := writePrivate(filepath.Join(dir, "healstore.key"), keyData); err != nil {
		return "", err
	}
	secrets := []byte("# healstore secrets: ref = \"secret\" (zdb passwords, S3 secret keys). Keep this file mode 0600.\n")
	if o.SecretsFile != "" {
		if secrets, err = os.ReadFile(o.SecretsFile); err != nil {
			return "", err
		}
	}
	if err := writePrivate(filepath.Join(dir, "secrets.toml"), secrets); err != nil {
		return "", err
	}
	cfg.Dir = "."
	cfg.MasterKeyFile = "healstore.key"
	cfg.SecretsFile = "secrets.toml"
	cfg.Metastore = MetastoreConfig{Kind: "pebble"}
	cfg.Backends = o.Backends
	body, err := cfg.Marshal()
	if err != nil {
		return "", err
	}
	head := fmt.Sprintf("# healstore configuration, written by healstore recover from snapshot %s\n# (seq %d, taken %s). Relative paths are relative to this file's directory.\n# Backends not listed here are known from the recovered metadata.\n\n",
		m.ID, m.Seq, m.Taken.Format(time.RFC3339))
	path := filepath.Join(dir, ConfigFileName)
	if _, err := ParseConfig(path, body); err != nil {
		return "", fmt.Errorf("the generated config does not load: %w", err)
	}
	if err := writePrivate(path, append([]byte(head), body...)); err != nil {
		return "", err
	}
	return path, nil
}

// recoverPool opens backends by name from the specs known so far.
type recoverPool struct {
	secrets *SecretStore
	log     *slog.Logger

	mu     sync.Mutex
	specs  map[string]backends.Spec
	opened map[string]backends.Backend
	errs   map[string]error
}

func newRecoverPool(secrets *SecretStore, log *slog.Logger) *recoverPool {
	return &recoverPool{secrets: secrets, log: log, specs: map[string]backends.Spec{},
		opened: map[string]backends.Backend{}, errs: map[string]error{}}
}

// openTimeout bounds opening one backend during recovery.
const recoverOpenTimeout = 10 * time.Second

func (p *recoverPool) open(ctx context.Context, name string) (backends.Backend, bool) {
	p.mu.Lock()
	if b, ok := p.opened[name]; ok {
		p.mu.Unlock()
		return b, true
	}
	if _, failed := p.errs[name]; failed {
		p.mu.Unlock()
		return nil, false
	}
	spec, ok := p.specs[name]
	if !ok {
		p.errs[name] = errors.New("no spec known (give it with --backend)")
		p.mu.Unlock()
		return nil, false
	}
	p.mu.Unlock()
	// Opened without the lock: an unreachable backend takes its timeout
	// while the others open.
	octx, cancel := context.WithTimeout(ctx, recoverOpenTimeout)
	defer cancel()
	// The backends hold the lost store's shards: one that is not there
	// is reported, never made.
	b, err := all.OpenUsed(octx, spec, p.secrets.Lookup)
	if err == nil {
		if _, err = b.Probe(octx); err != nil {
			b.Close()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if _, seen := p.errs[name]; !seen {
			p.log.Warn("backend unreachable", "backend", name, "err", err)
			p.errs[name] = err
		}
		return nil, false
	}
	if other, raced := p.opened[name]; raced {
		b.Close()
		return other, true
	}
	p.opened[name] = b
	return b, true
}

// openAll opens the named backends in parallel and returns those that
// opened.
func (p *recoverPool) openAll(ctx context.Context, names []string) []backends.Backend {
	out := make([]backends.Backend, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b, ok := p.open(ctx, name); ok {
				out[i] = b
			}
		}()
	}
	wg.Wait()
	var got []backends.Backend
	for _, b := range out {
		if b != nil {
			got = append(got, b)
		}
	}
	return got
}

func (p *recoverPool) opener() snapshot.Opener { return p.open }

func (p *recoverPool) failures() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return failedList(p.errs)
}

func (p *recoverPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.opened {
		b.Close()
	}
}

func failedList(m map[string]error) string {
	var out []string
	for name, err := range m {
		out = append(out, fmt.Sprintf("%s: %v", name, err))
	}
	sort.Strings(out)
	return joinLimited(out, 5)
}

func backendNames(bs []backends.Backend) string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Name())
	}
	return joinLimited(out, 5)
}
