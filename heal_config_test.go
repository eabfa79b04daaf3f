package healstore

import (
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/healer"
)

// TestHealerConfigReleaseReplaced: healer.release_replaced_after reaches
// the healer as written, negative included (keep replaced backends), and
// left out it takes the healer's default.
func TestHealerConfigReleaseReplaced(t *testing.T) {
	for _, tc := range []struct {
		line string
		want time.Duration
	}{
		{`release_replaced_after = "2h"`, 2 * time.Hour},
		{`release_replaced_after = "-1s"`, -time.Second},
		{``, healer.DefaultConfig().ReleaseReplacedAfter.D()},
	} {
		text := strings.Replace(goodConfig, "[healer]\n", "[healer]\n"+tc.line+"\n", 1)
		cfg, err := LoadConfig(writeConfig(t, text))
		if err != nil {
			t.Fatalf("%q: %v", tc.line, err)
		}
		hc := (&Store{cfg: cfg}).HealerConfig()
		if err := hc.Validate(); err != nil {
			t.Fatalf("%q: %v", tc.line, err)
		}
		got := hc.ReleaseReplacedAfter.D()
		if got == 0 {
			got = healer.DefaultConfig().ReleaseReplacedAfter.D() // the healer fills a zero in
		}
		if got != tc.want {
			t.Fatalf("%q: release_replaced_after %v, want %v", tc.line, got, tc.want)
		}
	}
}
