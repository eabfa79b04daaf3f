package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
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
	if err := decodeSettings(settings, &s); err != nil {
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

func decodeSettings(settings map[string]any, into any) error {
	b, err := json.Marshal(settings)
	if err != nil {
		return fmt.Errorf("command provisioner settings: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("command provisioner settings: %s", settingsError(err))
	}
	return nil
}

// settingsError names the offending key without Go struct paths.
func settingsError(err error) string {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		key := typ.Field[strings.LastIndex(typ.Field, ".")+1:]
		return fmt.Sprintf("%s: want %s, got %s", key, typ.Type, typ.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}
