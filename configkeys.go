package healstore

import (
	"bytes"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// checkKeys refuses what go-toml's typed decode would take silently:
//   - a key that names a config field only when case is ignored. go-toml
//     matches keys to fields case-insensitively, so `MASTER_KEY_FILE` would
//     be taken for master_key_file, and with both in a file one silently
//     wins. Keys are spelled one way, as healstore init writes them.
//   - a duration written as a bare number: `grace_period = 600` would be
//     600 nanoseconds. A bare 0 means the same in any unit and stays
//     allowed.
//
// Anything else wrong with the file is left to the typed decode.
func checkKeys(path string, data []byte) error {
	var doc map[string]any
	if toml.Unmarshal(data, &doc) != nil {
		return nil
	}
	return walkKeys(path, data, doc, reflect.TypeOf(Config{}), "")
}

func walkKeys(path string, data []byte, v any, t reflect.Type, at string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		items, ok := v.([]any)
		if !ok {
			return nil
		}
		for i, item := range items {
			if err := walkKeys(path, data, item, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Struct:
	default:
		return nil
	}
	table, ok := v.(map[string]any)
	if !ok {
		return nil
	}
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
		f, exact, ok := tomlField(t, k)
		if !ok {
			continue // unknown: the decoder names it
		}
		if !exact {
			return &ConfigError{File: path, Line: keyLine(data, k), Field: name,
				Msg: fmt.Sprintf("unknown key %q: keys are case-sensitive; did you mean %q?", k, fieldKey(f))}
		}
		if _, isString := table[k].(string); f.Type == durationType && !isString && table[k] != int64(0) {
			return &ConfigError{File: path, Line: keyLine(data, k), Field: name,
				Msg: fmt.Sprintf("%s = %v: a duration is a string with a unit, e.g. \"%vs\" or \"10m\"", k, table[k], table[k])}
		}
		if err := walkKeys(path, data, table[k], f.Type, name); err != nil {
			return err
		}
	}
	return nil
}

var durationType = reflect.TypeOf(Duration(0))

// tomlField finds the field of struct t that key k names, and whether the
// spelling is exact.
func tomlField(t reflect.Type, k string) (reflect.StructField, bool, bool) {
	var fold *reflect.StructField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || f.Tag.Get("toml") == "-" {
			continue
		}
		switch key := fieldKey(f); {
		case key == k:
			return f, true, true
		case fold == nil && strings.EqualFold(key, k):
			fold = &f
		}
	}
	if fold != nil {
		return *fold, false, true
	}
	return reflect.StructField{}, false, false
}

func fieldKey(f reflect.StructField) string {
	if name, _, _ := strings.Cut(f.Tag.Get("toml"), ","); name != "" {
		return name
	}
	return f.Name
}

// keyLine is the first line that sets key k or opens a table named by it, or
// 0 when none does plainly (quoted keys, inline tables).
func keyLine(data []byte, k string) int {
	re := regexp.MustCompile(`^\s*(\[\[?[^\]]*\b` + regexp.QuoteMeta(k) + `\b[^\]]*\]|` + regexp.QuoteMeta(k) + `\s*=)`)
	for i, line := range bytes.Split(data, []byte("\n")) {
		if re.Match(line) {
			return i + 1
		}
	}
	return 0
}
