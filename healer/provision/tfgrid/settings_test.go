package tfgrid

import (
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

func TestConfigFromSettings(t *testing.T) {
	doc := `
network = "test"
tfcmd = "/usr/local/bin/tfcmd"
twin_id = 4242
farms = [1, 4]
disk = "hdd"
size_gb = 200
max_size_gb = 500
max_backends = 6
address_family = "mycelium"
ledger = "/var/lib/healstore/tfgrid-ledger.json"
deploy_timeout = "15m"
probe_timeout = "3m"
failure_cooldown = "6h"
`
	var m map[string]any
	if err := toml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	cfg, err := ConfigFromSettings(m)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Network != "test" || cfg.Tfcmd != "/usr/local/bin/tfcmd" || cfg.TwinID != 4242 || len(cfg.Farms) != 2 || cfg.Farms[1] != 4 ||
		cfg.SizeGB != 200 || cfg.MaxSizeGB != 500 || cfg.MaxBackends != 6 || cfg.AddressFamily != "mycelium" ||
		cfg.Ledger != "/var/lib/healstore/tfgrid-ledger.json" || cfg.DeployTimeout != 15*time.Minute ||
		cfg.ProbeTimeout != 3*time.Minute || cfg.FailureCooldown != 6*time.Hour {
		t.Errorf("cfg = %+v", cfg)
	}
	for bad, want := range map[string]string{
		`max_backend = 3`:       `unknown field "max_backend"`,
		`farms = "1,4"`:         "farms: want []uint64, got string",
		`probe_timeout = "90"`:  `probe_timeout "90"`,
		`max_size_gb = "lots"`:  "max_size_gb",
		`Max_Backends = 3`:      `unknown key "Max_Backends": keys are case-sensitive; did you mean "max_backends"?`,
		`Deploy_Timeout = "1m"`: `did you mean "deploy_timeout"`,
	} {
		var m map[string]any
		if err := toml.Unmarshal([]byte(bad), &m); err != nil {
			t.Fatal(err)
		}
		if _, err := ConfigFromSettings(m); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want it to say %s", bad, err, want)
		}
	}
}
