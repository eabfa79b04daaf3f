package tfgrid

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
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
	b, err := json.Marshal(settings)
	if err != nil {
		return Config{}, fmt.Errorf("tfgrid provisioner settings: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		msg := strings.TrimPrefix(err.Error(), "json: ")
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			key := typ.Field[strings.LastIndex(typ.Field, ".")+1:]
			msg = fmt.Sprintf("%s: want %s, got %s", key, typ.Type, typ.Value)
		}
		return Config{}, fmt.Errorf("tfgrid provisioner settings: %s", msg)
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
