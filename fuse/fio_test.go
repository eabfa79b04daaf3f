package fuse

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// fioJob returns the path of a job file of bench/fio (written for the
// benchmarks and for this test).
func fioJob(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "bench", "fio", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("fio job file: %v", err)
	}
	return p
}

// runFio runs a job file with the HEALSTORE_FIO_* variables set and
// returns its output. fio runs in a scratch directory (it leaves verify
// state files in its working directory).
func runFio(t testing.TB, job string, env map[string]string, args ...string) string {
	t.Helper()
	fio := requireTool(t, "fio")
	cmd := exec.Command(fio, append(args, job)...)
	cmd.Dir = t.TempDir()
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := runBounded(t, cmd, 20*time.Minute)
	if err != nil {
		t.Fatalf("fio %s: %v\n%s", filepath.Base(job), err, out)
	}
	return string(out)
}

// TestFioVerify writes through the mount with fio, a crc32c checksum in
// every block, sequential 1 MiB and random 4 KiB writes over files much
// larger than the write-back cache (so blocks are uploaded, evicted and
// read back from the store while the run goes on), and has fio check every
// block. A second run after a remount with an empty cache checks the same
// data as read from the store alone.
func TestFioVerify(t *testing.T) {
	requireTool(t, "fio")
	e := newMount(t, nil, Options{BlockSize: 64 << 10, CacheSize: 2 << 20, ReadCacheSize: 1 << 20})
	job := fioJob(t, "verify-crc32c.fio")
	env := map[string]string{
		"HEALSTORE_FIO_DIR":       e.dir,
		"HEALSTORE_FIO_SIZE":      "8M",
		"HEALSTORE_FIO_RAND_SIZE": "8M",
	}
	start := time.Now()
	runFio(t, job, env)
	t.Logf("write and verify: %v", time.Since(start))
	start = time.Now()
	e.remount()
	runFio(t, job, env, "--verify_only")
	t.Logf("remount and verify: %v", time.Since(start))
}
