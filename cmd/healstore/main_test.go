package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/fuse"
	"github.com/healstore/healstore/healer"
)

// cli runs the command line in-process and returns stdout, stderr and the
// exit code.
func cli(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func TestInitPutGetAsANewUser(t *testing.T) {
	dir := t.TempDir()
	out, errs, code := cli(t, "", "init", filepath.Join(dir, "store"))
	if code != 0 {
		t.Fatalf("init: %d %s", code, errs)
	}
	cfg := filepath.Join(dir, "store", "healstore.toml")
	if !strings.Contains(out, cfg) || !strings.Contains(out, "data survives 2 lost backends") {
		t.Fatalf("init output: %s", out)
	}
	for _, f := range []string{"healstore.toml", "healstore.key", "secrets.toml"} {
		st, err := os.Stat(filepath.Join(dir, "store", f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st.Mode(), err)
		}
	}
	t.Setenv("HEALSTORE_CONFIG", cfg)

	src := filepath.Join(dir, "src")
	data := bytes.Repeat([]byte("healstore "), 1<<20) // 10 MiB: several blocks
	os.WriteFile(src, data, 0o644)
	if _, errs, code := cli(t, "", "put", "big", src); code != 0 {
		t.Fatalf("put: %d %s", code, errs)
	}
	if _, errs, code := cli(t, "from stdin\n", "put", "small", "-"); code != 0 {
		t.Fatalf("put stdin: %d %s", code, errs)
	}
	dst := filepath.Join(dir, "dst")
	if _, errs, code := cli(t, "", "get", "big", dst); code != 0 {
		t.Fatalf("get: %d %s", code, errs)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
		t.Fatal("get wrote different bytes")
	}
	if out, _, code := cli(t, "", "get", "small"); code != 0 || out != "from stdin\n" {
		t.Fatalf("get to stdout: %d %q", code, out)
	}

	// Two backends lost for good: gets still work.
	for _, b := range []string{"b2", "b5"} {
		os.RemoveAll(filepath.Join(dir, "store", "backends", b))
	}
	os.Remove(dst)
	if _, errs, code := cli(t, "", "get", "big", dst); code != 0 {
		t.Fatalf("get with two backends lost: %d %s", code, errs)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
		t.Fatal("degraded get wrote different bytes")
	}

	out, _, code = cli(t, "", "ls")
	if code != 0 || out != "big\nsmall\n" {
		t.Fatalf("ls: %d %q", code, out)
	}
	out, _, code = cli(t, "", "ls", "--json", "sm")
	var info struct {
		Name string `json:"name"`
		Size int64  `json:"size"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.Name != "small" || info.Size != 11 {
		t.Fatalf("ls --json: %d %q", code, out)
	}
	out, _, code = cli(t, "", "stat", "--json", "big")
	var st struct {
		Size       int64 `json:"size"`
		Redundancy struct {
			MinMargin int `json:"min_margin"`
		} `json:"redundancy"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Size != int64(len(data)) {
		t.Fatalf("stat --json: %d %q", code, out)
	}
	if out, _, code := cli(t, "", "rm", "small"); code != 0 || out != "" {
		t.Fatalf("rm: %d %q", code, out)
	}
	if _, errs, code := cli(t, "", "get", "small"); code != exitNotFound || !strings.Contains(errs, "not found") {
		t.Fatalf("get removed: %d %s", code, errs)
	}
	if _, _, code := cli(t, "", "rm", "-f", "small"); code != 0 {
		t.Fatalf("rm -f of a missing object: %d", code)
	}
}

func TestExitCodesAndMessages(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--config", filepath.Join(dir, "none.toml"), "ls"}, exitUsage, "healstore init"},
		{[]string{"get"}, exitUsage, "at least 1 argument"},
		{[]string{"put", "a", "b", "c"}, exitUsage, "at most 2"},
		{[]string{"ls", "--bogus"}, exitUsage, "unknown flag"},
		{[]string{"frobnicate"}, exitUsage, "unknown command"},
		{[]string{"init", dir, "--k", "0"}, exitUsage, "at least 1"},
		{[]string{"--log-level", "loud", "--config", filepath.Join(dir, "x"), "ls"}, exitUsage, ""},
	}
	for _, c := range cases {
		_, errs, code := cli(t, "", c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("%v: exit %d (want %d), stderr %q", c.args, code, c.code, errs)
		}
	}
	// A config with an unknown key: exit 2, naming file, line and key.
	p := filepath.Join(dir, "bad.toml")
	os.WriteFile(p, []byte("dir = \".\"\nmaster_key_file = \"k\"\ncolour = \"red\"\n"), 0o600)
	_, errs, code := cli(t, "", "--config", p, "ls")
	if code != exitUsage || !strings.Contains(errs, p+":3") || !strings.Contains(errs, "colour") {
		t.Fatalf("bad config: %d %q", code, errs)
	}
	// --help documents the exit codes.
	out, _, code := cli(t, "", "--help")
	if code != 0 || !strings.Contains(out, "3  object not found") {
		t.Fatalf("help: %d %q", code, out)
	}
}

// TestNamesAndFilesCheckedFirst: an empty NAME or a FILE that is a
// directory is a usage error reported before any config or store is read.
func TestNamesAndFilesCheckedFirst(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	os.WriteFile(f, []byte("x"), 0o644)
	noConfig := filepath.Join(dir, "none.toml")
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{"put", "", f}, `NAME is empty ("")`},
		{[]string{"put", "x", dir}, "FILE " + dir + " is a directory"},
		{[]string{"get", ""}, `NAME is empty ("")`},
		{[]string{"stat", ""}, `NAME is empty ("")`},
		{[]string{"rm", "a", ""}, `NAME is empty ("")`},
		{[]string{"put", "bad\xff", f}, "not valid UTF-8"},
		{[]string{"stat", "nul\x00"}, "NUL byte"},
		// The blocks of a mount's files are changed through the mount only.
		{[]string{"put", "fs/default/0000000000000002/0000000000000000", f}, "names a block of a file of healstore mount; change those files through the mount"},
		{[]string{"rm", "a", "fs/old/0000000000000002/00000000000000a1"}, "(--fs-blocks removes them anyway"},
		{[]string{"put", "fs/default/0000000000000002/ABC", f}, "names a block of a file of healstore mount"}, // a truncate would delete it
		{[]string{"put", "fs/default/0000000000000002/00000000000000000001", f}, "names a block of a file of healstore mount"},
	}
	for _, c := range cases {
		_, errs, code := cli(t, "", append([]string{"--config", noConfig}, c.args...)...)
		if code != exitUsage || !strings.Contains(errs, c.msg) || strings.Contains(errs, "none.toml") {
			t.Errorf("%q: exit %d (want %d), stderr %q (want %q, and no word of the config)", c.args, code, exitUsage, errs, c.msg)
		}
	}
}

// TestRmMissingReportedOnce: each missing name is reported once, and the
// other names are still deleted.
func TestRmMissingReportedOnce(t *testing.T) {
	newCLIStore(t)
	_, errs, code := cli(t, "", "rm", "never/was")
	if code != exitNotFound || strings.Count(errs, "not found") != 1 || !strings.Contains(errs, "never/was") {
		t.Fatalf("rm of one missing name: exit %d, stderr %q; want exit 3 and one report", code, errs)
	}
	if _, errs, code := cli(t, "data", "put", "here", "-"); code != 0 {
		t.Fatalf("put: %d %s", code, errs)
	}
	_, errs, code = cli(t, "", "rm", "gone1", "here", "gone2")
	if code != exitNotFound || strings.Count(errs, "not found") != 2 || strings.Count(errs, "healstore:") != 2 {
		t.Fatalf("rm of two missing names and one present: exit %d, stderr %q", code, errs)
	}
	if _, _, code := cli(t, "", "stat", "here"); code != exitNotFound {
		t.Fatalf("the present name was not deleted: stat exit %d", code)
	}
}

// TestMetastoreInUse: while another process holds the embedded metastore,
// a command says what is going on and what can be done about it.
func TestMetastoreInUse(t *testing.T) {
	dir := t.TempDir()
	if _, errs, code := cli(t, "", "init", filepath.Join(dir, "store")); code != 0 {
		t.Fatalf("init: %d %s", code, errs)
	}
	path := filepath.Join(dir, "store", "healstore.toml")
	cfg, err := healstore.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := healstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, errs, code := cli(t, "", "--config", path, "ls")
	t.Logf("%s", errs)
	for _, want := range []string{"another healstore process", "one process at a time", "healstore mount --with-healer", "etcd"} {
		if code != exitError || !strings.Contains(errs, want) {
			t.Fatalf("ls while the metastore is held: exit %d, stderr %q; want exit 1 and %q", code, errs, want)
		}
	}
}

// TestInitProvisionsLocally: the store healstore init makes replaces a
// lost backend with a new directory under DIR/provisioned, with no one at
// the keyboard; --provisioner none leaves it to the user.
func TestInitProvisionsLocally(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	out, errs, code := cli(t, "", "init", store)
	if code != 0 || !strings.Contains(out, filepath.Join(store, "provisioned")) {
		t.Fatalf("init: %d %q %s", code, out, errs)
	}
	cfg, err := healstore.LoadConfig(filepath.Join(store, "healstore.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Healer.Provisioner.Kind != "local" {
		t.Fatalf("init's provisioner %+v, want local", cfg.Healer.Provisioner)
	}
	cfg.Healer.GracePeriod = 0
	ctx := context.Background()
	s, err := healstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Put(ctx, "a", strings.NewReader(strings.Repeat("a", 100<<10))); err != nil {
		t.Fatal(err)
	}
	h, err := s.NewHealer(ctx, healstore.HealerOptions{Tune: func(c *healer.Config) { c.SuspectAfter = 1 }})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	_ = h.ProbeAll(ctx)
	// b1 vanishes for good; a plain file keeps anything from recreating it.
	b1 := filepath.Join(store, "backends", "b1")
	if err := os.Rename(b1, b1+".dead"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(b1, []byte("dead\n"), 0o600)
	if err := h.ProbeAll(ctx); err != nil {
		t.Fatal(err)
	}
	made, _ := os.ReadDir(filepath.Join(store, "provisioned"))
	if len(made) != 1 {
		t.Fatalf("after b1 was lost, %s holds %d entries, want one replacement backend", filepath.Join(store, "provisioned"), len(made))
	}
	if _, err := h.RepairAll(ctx, nil); err != nil {
		t.Fatal(err)
	}
	r, err := s.Open(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	none := filepath.Join(dir, "manual")
	if _, errs, code := cli(t, "", "init", "--provisioner", "none", none); code != 0 {
		t.Fatalf("init --provisioner none: %d %s", code, errs)
	}
	cfg, err = healstore.LoadConfig(filepath.Join(none, "healstore.toml"))
	if err != nil || cfg.Healer.Provisioner.Kind != "" {
		t.Fatalf("init --provisioner none wrote provisioner %+v, %v", cfg.Healer.Provisioner, err)
	}
	if _, errs, code := cli(t, "", "init", "--provisioner", "tfgrid", filepath.Join(dir, "x")); code != exitUsage || !strings.Contains(errs, "local or none") {
		t.Fatalf("init --provisioner tfgrid: %d %s", code, errs)
	}
}

// A put that lands with the write quorum but not every shard succeeds, and
// says so: the object is at reduced redundancy until the healer repairs it.
func TestPutSaysWhenShort(t *testing.T) {
	dir := newCLIStore(t)
	src := filepath.Join(dir, "src")
	os.WriteFile(src, bytes.Repeat([]byte("short "), 200_000), 0o644)
	if _, errs, code := cli(t, "", "put", "full", src); code != 0 || strings.Contains(errs, "warning") {
		t.Fatalf("put with every backend up: %d %q", code, errs)
	}
	// One of the six backends of a 4+2 store gone: every stripe is short.
	gone := filepath.Join(dir, "store", "backends", "b3")
	if err := os.RemoveAll(gone); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gone, []byte("this disk is gone\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs, code := cli(t, "", "put", "obj2", src)
	if code != 0 || !strings.HasPrefix(out, "stored obj2: ") {
		t.Fatalf("put with a backend gone: %d %q %q", code, out, errs)
	}
	if !strings.Contains(errs, "warning: obj2: 1 of 1 blocks were stored short of their 4+2 shards (1 shards missing; can lose 1 more backend(s) instead of 2)") {
		t.Fatalf("put with a backend gone says nothing of it: %q", errs)
	}
	out, _, code = cli(t, "", "put", "--json", "short2", src)
	var info struct {
		Redundancy struct {
			Degraded int `json:"degraded_stripes"`
		} `json:"redundancy"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.Redundancy.Degraded != 1 {
		t.Fatalf("put --json with a backend gone: %d %q", code, out)
	}
}

// Only names shaped like a mount's blocks are guarded, and rm --fs-blocks
// removes those of a filesystem no mount uses.
func TestFSBlockNamesGuarded(t *testing.T) {
	dir := newCLIStore(t)
	if _, errs, code := cli(t, "x", "put", "fs/notes.txt", "-"); code != 0 {
		t.Fatalf("put of an ordinary object under fs/: %d %s", code, errs)
	}
	block := "fs/old/0000000000000002/0000000000000000"
	cfg, err := healstore.LoadConfig(filepath.Join(dir, "store", "healstore.toml"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := healstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(context.Background(), block, strings.NewReader("a block")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, _, code := cli(t, "", "rm", block); code != exitUsage {
		t.Fatalf("rm of a mount block without --fs-blocks: exit %d", code)
	}
	if _, errs, code := cli(t, "", "rm", "--fs-blocks", block, "fs/notes.txt"); code != 0 {
		t.Fatalf("rm --fs-blocks: %d %s", code, errs)
	}
	if out, _, _ := cli(t, "", "ls", "fs/"); out != "" {
		t.Fatalf("left after rm --fs-blocks: %q", out)
	}
}

// newCLIStore makes a store with healstore init in a new directory, points
// $HEALSTORE_CONFIG at it for the test, and returns the directory (the
// store is DIR/store).
func newCLIStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, errs, code := cli(t, "", "init", filepath.Join(dir, "store")); code != 0 {
		t.Fatalf("init: %d %s", code, errs)
	}
	t.Setenv("HEALSTORE_CONFIG", filepath.Join(dir, "store", "healstore.toml"))
	return dir
}

// init --force keeps the metastore init writes (pebble in DIR/meta): a
// config whose metadata lives elsewhere is not rewritten, or the store
// would open an empty metastore.
func TestInitForceKeepsMetadataWhereItIs(t *testing.T) {
	dir := newCLIStore(t)
	cfgPath := filepath.Join(dir, "store", "healstore.toml")
	old, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(old), `dir = "."`, "dir = \".\"\nmetadata_dir = \"elsewhere\"", 1)
	if err := os.WriteFile(cfgPath, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errs, code := cli(t, "", "init", "--force", filepath.Join(dir, "store"))
	if code != exitUsage || !strings.Contains(errs, "keeps the store's metadata elsewhere") {
		t.Fatalf("init --force over a config with metadata_dir: %d %s", code, errs)
	}
	if now, _ := os.ReadFile(cfgPath); string(now) != edited {
		t.Fatal("init --force rewrote a config whose metadata lives elsewhere")
	}
	// With the metadata where init puts it, --force rewrites the config.
	if err := os.WriteFile(cfgPath, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := cli(t, "", "init", "--force", filepath.Join(dir, "store")); code != 0 {
		t.Fatalf("init --force: %d %s", code, errs)
	}
}

func TestMountSetsGCPercentUnlessGOGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	current := func() int { p := debug.SetGCPercent(100); debug.SetGCPercent(p); return p }

	env := func(vars map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	}
	if pct, ok := applyMountGC(env(map[string]string{"GOGC": "200"})); ok || pct != 0 {
		t.Fatalf("with GOGC set: applyMountGC = %d, %v; want the user's choice left alone", pct, ok)
	}
	if got := current(); got != 100 {
		t.Fatalf("with GOGC set: GC percent became %d, want it unchanged (100)", got)
	}
	if pct, ok := applyMountGC(env(nil)); !ok || pct != fuse.GCPercent {
		t.Fatalf("without GOGC: applyMountGC = %d, %v; want %d, true", pct, ok, fuse.GCPercent)
	}
	if got := current(); got != fuse.GCPercent {
		t.Fatalf("without GOGC: GC percent is %d, want %d", got, fuse.GCPercent)
	}
}

// TestInitSaysWhatWritesSurvive: init tells apart what the data survives
// (m lost backends) from what writes go on through: the write quorum
// (k+1) must still find backends, so over k+m backends a write fails with
// m of them lost until the healer has replaced one.
func TestInitSaysWhatWritesSurvive(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "data survives 2 lost backends; writes go on with 1 lost, with more once lost ones are replaced"},
		{[]string{"--backends", "7"}, "data survives 2 lost backends; writes go on with 2 lost"},
		{[]string{"--k", "2", "--m", "1"}, "data survives 1 lost backend; writes need all 3 up, or lost ones replaced"},
	} {
		dir := t.TempDir()
		out, errs, code := cli(t, "", append(append([]string{"init"}, c.args...), filepath.Join(dir, "s"))...)
		if code != 0 {
			t.Fatalf("init %v: %d %s", c.args, code, errs)
		}
		if !strings.Contains(out, "("+c.want+")") {
			t.Errorf("init %v said:\n%s\nwant (%s)", c.args, out, c.want)
		}
	}
}
