package provision

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/healstore/healstore/backends"
)

// LocalConfigFromSettings reads the local provisioner's settings from the
// [healer.provisioner.settings] table of healstore's config file:
//
//	dir    = "provisioned"        # relative to base (the store's directory)
//	prefix = "local"
//	quota  = 1073741824
//	farm   = "home"               # optional
//	s3     = { binary = "/usr/local/bin/versitygw" }   # optional: serve each over S3
//
// Unknown keys are errors, so a typo does not fall back to a default.
func LocalConfigFromSettings(settings map[string]any, base string) (LocalConfig, error) {
	var c LocalConfig
	if err := decodeSettings("local", settings, &c); err != nil {
		return c, err
	}
	if c.Dir == "" {
		return c, errors.New("local provisioner settings: dir is missing")
	}
	if !filepath.IsAbs(c.Dir) {
		c.Dir = filepath.Join(base, c.Dir)
	}
	return c, nil
}

// SpareSpecsFromSettings reads the spare pool from the settings table:
//
//	backends = [
//	  { name = "spare1", kind = "local", path = "spares/1", node = "n7" },
//	  { name = "spare2", kind = "s3", address = "10.0.0.9:7070", bucket = "hs", secret_ref = "s3/spare2" },
//	]
//
// Relative local paths are relative to base.
func SpareSpecsFromSettings(settings map[string]any, base string) ([]backends.Spec, error) {
	var s struct {
		Backends []backends.Spec `json:"backends"`
	}
	if err := decodeSettings("spare", settings, &s); err != nil {
		return nil, err
	}
	if len(s.Backends) == 0 {
		return nil, errors.New("spare provisioner settings: backends is empty")
	}
	for i := range s.Backends {
		b := &s.Backends[i]
		if b.Kind == backends.KindLocal && b.Path != "" && !filepath.IsAbs(b.Path) {
			b.Path = filepath.Join(base, b.Path)
		}
		if err := b.Validate(); err != nil {
			return nil, fmt.Errorf("spare provisioner settings: backends[%d]: %w", i, err)
		}
	}
	return s.Backends, nil
}

func decodeSettings(kind string, settings map[string]any, into any) error {
	b, err := json.Marshal(settings)
	if err != nil {
		return fmt.Errorf("%s provisioner settings: %w", kind, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			key := typ.Field[strings.LastIndex(typ.Field, ".")+1:]
			return fmt.Errorf("%s provisioner settings: %s: want %s, got %s", kind, key, typ.Type, typ.Value)
		}
		return fmt.Errorf("%s provisioner settings: %s", kind, strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}
