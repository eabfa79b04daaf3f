package command

import (
	"fmt"
	"time"

	"github.com/healstore/healstore/healer/provision"
)

// ConfigFromSettings reads a Config from the [healer.provisioner.settings]
// table of healstore's config file:
//
//	command = ["/etc/healstore/provision-s3.sh", "--region", "eu-1"]
//	env     = ["AWS_PROFILE=healstore"]
//	dir     = "/var/lib/healstore"
//	timeout = "15m"
//
// Unknown keys are errors, so a typo does not silently fall back to a
// default. Verify cannot be set here; the caller adds it.
func ConfigFromSettings(settings map[string]any) (Config, error) {
	var s struct {
		Config
		Timeout string `json:"timeout"`
	}
	if err := provision.DecodeSettings("command", settings, &s); err != nil {
		return Config{}, err
	}
	cfg := s.Config
	if s.Timeout != "" {
		d, err := time.ParseDuration(s.Timeout)
		if err != nil {
			return Config{}, fmt.Errorf("command provisioner settings: timeout %q: %w", s.Timeout, err)
		}
		cfg.Timeout = d
	}
	return cfg, nil
}
