package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// heal --workers outside 1..MaxWorkers is a usage error, before the store
// is opened: without a daemon 0 ran one worker and 5000 ran 5000 (the
// config caps healer.workers at 1024); with one, the daemon refuses them.
func TestHealWorkersOutOfRange(t *testing.T) {
	none := filepath.Join(t.TempDir(), "none.toml")
	for _, n := range []string{"0", "-1", "1025", "5000"} {
		_, errs, code := cli(t, "", "--config", none, "heal", "--workers", n)
		if code != exitUsage || !strings.Contains(errs, "--workers "+n) {
			t.Errorf("heal --workers %s: exit %d, stderr %q; want exit %d naming the flag", n, code, errs, exitUsage)
		}
	}
}
