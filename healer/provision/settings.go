package provision

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
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
	if err := DecodeSettings("local", settings, &c); err != nil {
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
//	  { name = "spare2", kind = "s3", address = "10.0.0.9:7070", bucket = "healstore", secret_ref = "s3/spare2" },
//	]
//
// Relative local paths are relative to base.
func SpareSpecsFromSettings(settings map[string]any, base string) ([]backends.Spec, error) {
	var s struct {
		Backends []backends.Spec `json:"backends"`
	}
	if err := DecodeSettings("spare", settings, &s); err != nil {
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
		// Settings are new input: a field of another kind (bucket on a
		// local spare) is refused, not dropped.
		if err := b.ValidateInput(); err != nil {
			return nil, fmt.Errorf("spare provisioner settings: backends[%d]: %w", i, err)
		}
	}
	return s.Backends, nil
}

// DecodeSettings decodes a provisioner's [healer.provisioner.settings]
// table into into, a pointer to a struct with json tags; kind names the
// provisioner in errors. Unknown keys are errors, so a typo does not fall
// back to a default, and so is a key that names a field only when case is
// ignored: encoding/json would take `Max_Backends` for max_backends, and
// with both spellings in the table one would silently win.
func DecodeSettings(kind string, settings map[string]any, into any) error {
	if err := checkKeyCase(settings, reflect.TypeOf(into), ""); err != nil {
		return fmt.Errorf("%s provisioner settings: %w", kind, err)
	}
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

// checkKeyCase walks the decoded table v against type t and refuses the
// first key that matches a json field name only when case is ignored.
// Unknown keys are left to the decoder.
func checkKeyCase(v any, t reflect.Type, at string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		items, _ := v.([]any)
		for i, item := range items {
			if err := checkKeyCase(item, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Struct:
	default:
		return nil
	}
	table, _ := v.(map[string]any)
	fields := jsonFields(t)
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := k
		if at != "" {
			name = at + "." + k
		}
		if ft, ok := fields[k]; ok {
			if err := checkKeyCase(table[k], ft, name); err != nil {
				return err
			}
			continue
		}
		for f := range fields {
			if strings.EqualFold(f, k) {
				return fmt.Errorf("unknown key %q: keys are case-sensitive; did you mean %q?", name, f)
			}
		}
	}
	return nil
}

// jsonFields maps the json names of t's fields, promoted ones included, to
// their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case tag == "-":
		case f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct:
			for k, ft := range jsonFields(f.Type) {
				out[k] = ft
			}
		case !f.IsExported():
		case tag != "":
			out[tag] = f.Type
		default:
			out[f.Name] = f.Type
		}
	}
	return out
}
