package tfgrid

import (
	"fmt"
	"time"

	"github.com/healstore/healstore/healer/provision"
)

// ConfigFromSettings reads a Config from the [healer.provisioner.settings]
// table of healstore's config file. Keys are the toml names of Config's
// fields, plus deploy_timeout, probe_timeout and failure_cooldown as
// duration strings ("10m"). Unknown keys are errors, so a typo in a cap
// like max_backends never silently falls back to the default.
func ConfigFromSettings(settings map[string]any) (Config, error) {
	var s struct {
		Config
		DeployTimeout   string `json:"deploy_timeout"`
		ProbeTimeout    string `json:"probe_timeout"`
		FailureCooldown string `json:"failure_cooldown"`
	}
	if err := provision.DecodeSettings("tfgrid", settings, &s); err != nil {
		return Config{}, err
	}
	cfg := s.Config
	for _, d := range []struct {
		name string
		text string
		dst  *time.Duration
	}{
		{"deploy_timeout", s.DeployTimeout, &cfg.DeployTimeout},
		{"probe_timeout", s.ProbeTimeout, &cfg.ProbeTimeout},
		{"failure_cooldown", s.FailureCooldown, &cfg.FailureCooldown},
	} {
		if d.text == "" {
			continue
		}
		v, err := time.ParseDuration(d.text)
		if err != nil {
			return Config{}, fmt.Errorf("tfgrid provisioner settings: %s %q: %w", d.name, d.text, err)
		}
		*d.dst = v
	}
	return cfg, nil
}
