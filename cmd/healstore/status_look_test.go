package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/metastore"
)

// TestStatusWithoutDaemonProbes: with no daemon running, status probes
// every backend instead of showing the states last recorded, and stat
// counts shards on a backend that could not be opened as missing. A backend
// whose directory is gone, and one wiped of everything, show their error,
// and the stripes they held count as degraded. Before, both showed as up
// and the store as at full redundancy, while the same command warned on
// stderr that one of them was unreachable; and one that came back after a
// daemon recorded it suspect stayed suspect, its shards missing.
func TestStatusWithoutDaemonProbes(t *testing.T) {
	dir, cfg := newStore(t)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, make([]byte, 100_000), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := cli(t, "", "put", "obj", src); code != 0 {
		t.Fatalf("put: exit %d: %s", code, errs)
	}
	var queued int
	var states []string
	var room space
	status := func() (map[string]string, map[string]float64, int) {
		t.Helper()
		out, errs, code := cli(t, "", "status", "--json")
		if code != 0 {
			t.Fatalf("status: exit %d: %s", code, errs)
		}
		var st struct {
			Degraded int `json:"degraded_stripes"`
			Queue    struct {
				Depth int `json:"depth"`
			} `json:"queue"`
			Space    space `json:"space"`
			Backends []struct {
				Name      string  `json:"name"`
				State     string  `json:"state"`
				LastError string  `json:"last_error"`
				Known     bool    `json:"capacity_known"`
				Free      float64 `json:"free"`
			} `json:"backends"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		errsBy, free := map[string]string{}, map[string]float64{}
		queued, states, room = st.Queue.Depth, nil, st.Space
		for _, b := range st.Backends {
			states = append(states, b.State)
			errsBy[b.Name] = b.LastError
			if b.Known {
				free[b.Name] = b.Free
			}
		}
		return errsBy, free, st.Degraded
	}

	// b1 was suspect when the last daemon stopped, and answers now.
	conf, err := healstore.LoadConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := healstore.Open(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Meta().UpdateBackend(context.Background(), "b1", func(rec *metastore.BackendRecord) error {
		rec.State, rec.Since = metastore.StateSuspect, time.Now()
		return nil
	})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}

	lastErr, free, degraded := status()
	if states[0] != "up" {
		t.Errorf("b1 answers, status shows it %s", states[0])
	}
	if degraded != 0 || len(free) != 6 {
		t.Fatalf("healthy store: %d degraded, capacity known for %d backends (want 0 and 6); errors %v", degraded, len(free), lastErr)
	}
	for name, e := range lastErr {
		if e != "" {
			t.Fatalf("healthy store: %s shows error %q", name, e)
		}
	}
	// The six backends share the test's disk: its free space once, and
	// 4/6 of it for data. Before, summing them said six times as much.
	var disk unix.Statfs_t
	if err := unix.Statfs(dir, &disk); err != nil {
		t.Fatal(err)
	}
	diskFree := float64(disk.Bavail) * float64(disk.Bsize)
	if room.FileSystems != 1 || room.Backends != 6 || float64(room.Free) > diskFree*1.05 || float64(room.Free) < diskFree*0.95 ||
		room.ForData != int64(float64(room.Free)*4/6) {
		t.Fatalf("space %+v; the disk has %.0f bytes free", room, diskFree)
	}

	b2 := filepath.Join(dir, "backends", "b2", "data")
	entries, err := os.ReadDir(b2)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(b2, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(filepath.Join(dir, "backends", "b3")); err != nil {
		t.Fatal(err)
	}
	lastErr, free, degraded = status()
	if degraded == 0 {
		t.Fatalf("b2 wiped and b3 gone, status says no stripe is degraded; errors %v", lastErr)
	}
	if !strings.Contains(lastErr["b2"], "identity marker") {
		t.Errorf("wiped b2's error: %q", lastErr["b2"])
	}
	if !strings.Contains(lastErr["b3"], "gone") {
		t.Errorf("missing b3's error: %q", lastErr["b3"])
	}
	if _, ok := free["b3"]; ok {
		t.Errorf("capacity of unreachable b3 reported as known")
	}
	if room.Backends != 4 {
		t.Errorf("space counts %d backends, want the 4 that answer with their marker", room.Backends)
	}
	// stat counts the shards on b3, which this process could not open,
	// as missing (it contacts no backend, so wiped b2 goes unnoticed).
	out, errs, code := cli(t, "", "stat", "obj", "--json")
	if code != 0 {
		t.Fatalf("stat: exit %d: %s", code, errs)
	}
	var info struct {
		Redundancy struct {
			MinMargin int `json:"min_margin"`
			Missing   int `json:"missing_shards"`
		} `json:"redundancy"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("stat --json: %v\n%s", err, out)
	}
	if info.Redundancy.MinMargin > 1 || info.Redundancy.Missing == 0 {
		t.Errorf("stat with b3 gone: %s", out)
	}
	// Looking records nothing: deciding is the daemon's.
	if queued != 0 || strings.Join(states, ",") != "up,up,up,up,up,up" {
		t.Errorf("status changed the store: queue depth %d, states %v", queued, states)
	}
	if s, err = healstore.Open(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Meta().GetBackend(context.Background(), "b1")
	s.Close()
	if err != nil || rec.State != metastore.StateSuspect {
		t.Errorf("b1's recorded state changed by status: %v %v", rec, err)
	}
	for _, name := range []string{"b1", "b4", "b5", "b6"} {
		if lastErr[name] != "" {
			t.Errorf("%s shows error %q", name, lastErr[name])
		}
	}
}

// TestStatusSpaceWithQuotasOnOneDisk: local backends with quotas on one
// file system count their quotas' free space, but together no more than
// the file system has. Each used to count alone: six quotas larger than
// the disk said six times its free space.
func TestStatusSpaceWithQuotasOnOneDisk(t *testing.T) {
	dir, cfgPath := newStore(t)
	var disk unix.Statfs_t
	if err := unix.Statfs(dir, &disk); err != nil {
		t.Fatal(err)
	}
	diskFree := float64(disk.Bavail) * float64(disk.Bsize)
	for _, c := range []struct {
		quota int64
		want  func() float64
	}{
		{1 << 50, func() float64 { return diskFree }}, // each quota larger than the disk
		{64 << 20, func() float64 { return 6 * 64 << 20 }},
	} {
		cfg, err := healstore.LoadConfig(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		for i := range cfg.Backends {
			cfg.Backends[i].Quota = c.quota
		}
		body, err := cfg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfgPath, body, 0o600); err != nil {
			t.Fatal(err)
		}
		out, errs, code := cli(t, "", "status", "--json")
		if code != 0 {
			t.Fatalf("status: exit %d: %s", code, errs)
		}
		var st struct {
			Space space `json:"space"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		want := c.want()
		if room := st.Space; room.Backends != 6 || room.FileSystems != 1 || float64(room.Free) > want*1.05 || float64(room.Free) < want*0.95 {
			t.Fatalf("quotas of %d bytes: space %+v; want about %.0f bytes free on 1 file system", c.quota, room, want)
		}
	}
}

// With no daemon running, status says that nothing repairs the store and
// how to start what does, and leaves out the repair counters of the healer
// it ran for the census, which never repaired anything: before, it showed
// "repairs since start: 0 done" as if a healer were at work. Through a
// daemon it shows the daemon's counters and no such line.
func TestStatusSaysWhenNoHealerRuns(t *testing.T) {
	_, cfg := newStore(t)
	out, errs, code := cli(t, "", "status")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "healer: not running") || !strings.Contains(out, "healstore daemon") || strings.Contains(out, "repairs since start") {
		t.Errorf("status with no daemon should say no healer runs, and show no repair counters:\n%s", out)
	}
	healerRunning := func() bool {
		t.Helper()
		out, errs, code := cli(t, "", "status", "--json")
		if code != 0 {
			t.Fatalf("status --json: exit %d: %s", code, errs)
		}
		var st struct {
			Running *bool `json:"healer_running"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Running == nil {
			t.Fatalf("status --json has no healer_running (%v):\n%s", err, out)
		}
		return *st.Running
	}
	if healerRunning() {
		t.Error("status --json with no daemon: healer_running is true")
	}

	setMetricsAddr(t, cfg, freeAddr(t))
	runDaemon(t, cfg)
	out, errs, code = cli(t, "", "status")
	if code != 0 {
		t.Fatalf("status through the daemon: exit %d: %s", code, errs)
	}
	if strings.Contains(out, "not running") || !strings.Contains(out, "repairs since start") {
		t.Errorf("status through the daemon:\n%s", out)
	}
	if !healerRunning() {
		t.Error("status --json through the daemon: healer_running is false")
	}
}
