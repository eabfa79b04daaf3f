package healstore

import (
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// TestSnapshotConfigTOML: the snapshot settings read from a config file
// section as the other durations do.
func TestSnapshotConfigTOML(t *testing.T) {
	var c SnapshotConfig
	in := "interval = \"15s\"\nmax_changes = 200\nmax_age = \"5m\"\nkeep = 5\n"
	if err := toml.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	want := SnapshotConfig{Interval: Duration(15 * time.Second), MaxChanges: 200, MaxAge: Duration(5 * time.Minute), Keep: 5}
	if c != want {
		t.Fatalf("parsed %+v, want %+v", c, want)
	}
	out, err := toml.Marshal(DefaultSnapshotConfig())
	if err != nil {
		t.Fatal(err)
	}
	var back SnapshotConfig
	if err := toml.Unmarshal(out, &back); err != nil || back != DefaultSnapshotConfig() {
		t.Fatalf("defaults round trip: %+v, %v\n%s", back, err, out)
	}
	if d := DefaultSnapshotConfig(); d.Interval.Std() != 30*time.Second || d.Keep != 3 || d.MaxChanges != 1000 {
		t.Fatalf("defaults %+v", d)
	}
}
