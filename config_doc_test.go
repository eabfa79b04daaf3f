package healstore

import (
	"encoding"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// docs/config.md is the reference for healstore.toml. These tests keep it
// in step with Config: every key a user can write must have a row in the
// doc, and every row must name a key the code still has.
//
// The doc's convention, which the test reads:
//   - a "## " heading names the table its key tables document: "## Top-level
//     keys" for keys before the first [table], otherwise the TOML header in
//     backticks, e.g. "## `[healer.provisioner]`" or "## `[[backends]]`".
//     Any other "## " heading ends the section; "### " headings stay in it.
//   - a key table is a Markdown table whose first header cell is "key"; each
//     of its rows starts with the key in backticks: | `grace_period` | ...
//     Other tables (such as the per-provisioner settings summary) are prose.
//
// The provisioner's free-form settings table is one key (`settings`); what
// goes inside it belongs to each provisioner and to docs/provisioning.md.

const configDocPath = "docs/config.md"

func TestConfigDocListsEveryKey(t *testing.T) {
	data, err := os.ReadFile(configDocPath)
	if err != nil {
		t.Fatal(err)
	}
	missing, stale, problems := configDocDrift(string(data))
	for _, p := range problems {
		t.Errorf("%s: %s", configDocPath, p)
	}
	for _, k := range missing {
		t.Errorf("%s does not document %s: add a row to the key table under its heading", configDocPath, k)
	}
	for _, k := range stale {
		t.Errorf("%s documents %s, which Config no longer has: remove its row", configDocPath, k)
	}
}

// The checker itself must notice a dropped row and a row for a key that
// does not exist; otherwise the test above passes whatever the doc says.
func TestConfigDocDriftIsDetected(t *testing.T) {
	data, err := os.ReadFile(configDocPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	cases := []struct {
		name, row, replace string
		missing, stale     []string
	}{
		{name: "top-level row dropped", row: "| `hedge_after` |", missing: []string{"hedge_after"}},
		{name: "nested table row dropped", row: "| `kind` | string | `\"\"` (none)", missing: []string{"[healer.provisioner] kind"}},
		{name: "array-of-tables row dropped", row: "| `secret_ref` |", missing: []string{"[[backends]] secret_ref"}},
		{name: "row renamed", row: "| `gc_delay` |", replace: "| `gc_dalay` |",
			missing: []string{"[healer] gc_delay"}, stale: []string{"[healer] gc_dalay"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out []string
			found := 0
			for _, line := range strings.SplitAfter(doc, "\n") {
				if strings.HasPrefix(line, c.row) {
					found++
					if c.replace == "" {
						continue
					}
					line = c.replace + strings.TrimPrefix(line, c.row)
				}
				out = append(out, line)
			}
			if found != 1 {
				t.Fatalf("the doc has %d rows starting %q, want 1 (update this test with the doc)", found, c.row)
			}
			missing, stale, problems := configDocDrift(strings.Join(out, ""))
			if len(problems) > 0 || !slices.Equal(missing, c.missing) || !slices.Equal(stale, c.stale) {
				t.Errorf("drift = missing %q, stale %q, problems %q; want missing %q, stale %q",
					missing, stale, problems, c.missing, c.stale)
			}
		})
	}
}

// The reflection walk must see nested tables and arrays of tables, and
// must not offer keys a file cannot set.
func TestConfigKeysWalk(t *testing.T) {
	keys := configKeys()
	for _, want := range []string{"dir", "inline_max_size", "[policy] k", "[metastore] endpoints",
		"[healer] release_replaced_after", "[healer.provisioner] settings", "[snapshots] keep",
		"[[backends]] name", "[[backends]] spare"} {
		if !slices.Contains(keys, want) {
			t.Errorf("configKeys() lacks %s", want)
		}
	}
	notKeys := []string{"Logger", "logger", "path", "policy", "metastore", "healer", "snapshots", "backends",
		"[healer] provisioner"}
	for _, k := range keys {
		if slices.Contains(notKeys, k) || strings.HasPrefix(k, "[healer.provisioner.settings]") {
			t.Errorf("configKeys() offers %s, which is not a key of its own", k)
		}
	}
}

// configKeys lists every key of healstore.toml as "[table] key" ("key" at
// the top level, "[[table]] key" in an array of tables), sorted.
func configKeys() []string {
	var out []string
	var walk func(t reflect.Type, header string)
	walk = func(t reflect.Type, header string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() || f.Tag.Get("toml") == "-" {
				continue
			}
			name := fieldKey(f)
			path := name
			if header != "" {
				path = strings.Trim(header, "[]") + "." + name
			}
			ft := derefType(f.Type)
			switch {
			case isTOMLTable(ft):
				walk(ft, "["+path+"]")
				continue
			case (ft.Kind() == reflect.Slice || ft.Kind() == reflect.Array) && isTOMLTable(derefType(ft.Elem())):
				walk(derefType(ft.Elem()), "[["+path+"]]")
				continue
			}
			// Scalars, arrays of scalars, and maps (free-form tables
			// whose keys belong to someone else) are keys of their own.
			if header == "" {
				out = append(out, name)
			} else {
				out = append(out, header+" "+name)
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	sort.Strings(out)
	return out
}

func derefType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// isTOMLTable: a struct written as a TOML table, not one that reads itself
// from a string (like a time or a duration would).
func isTOMLTable(t reflect.Type) bool {
	textType := reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
	return t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(textType)
}

var (
	docHeadingRE  = regexp.MustCompile("^## (.*)$")
	docTableRE    = regexp.MustCompile("^`(\\[\\[?[a-z0-9_.]+\\]\\]?)`$")
	docKeyCellRE  = regexp.MustCompile("^`([A-Za-z0-9_.-]+)`$")
	docTopHeading = "Top-level keys"
)

// configDocDrift compares the doc's key tables with configKeys: keys the
// doc lacks, keys it lists that the code lacks, and lines that break the
// convention.
func configDocDrift(doc string) (missing, stale, problems []string) {
	const outside = "\x00"
	section := outside
	documented := map[string]bool{}
	inFence, inKeyTable := false, false
	for n, line := range strings.Split(doc, "\n") {
		lineNo := n + 1
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			inKeyTable = false
		}
		if m := docHeadingRE.FindStringSubmatch(line); m != nil {
			title := strings.TrimSpace(m[1])
			switch tm := docTableRE.FindStringSubmatch(title); {
			case title == docTopHeading:
				section = ""
			case tm != nil:
				section = tm[1]
			default:
				section = outside
			}
			continue
		}
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		first := strings.TrimSpace(cells[0])
		if !inKeyTable {
			if first == "key" {
				if section == outside {
					problems = append(problems, "line "+strconv.Itoa(lineNo)+": a key table outside a table's section (## Top-level keys or ## `[table]`)")
				}
				inKeyTable = true
			}
			continue
		}
		if strings.Trim(first, "-: ") == "" {
			continue // the |---|---| line
		}
		m := docKeyCellRE.FindStringSubmatch(first)
		if m == nil {
			problems = append(problems, "line "+strconv.Itoa(lineNo)+": a key table row must start with one key in backticks, got "+first)
			continue
		}
		if section == outside {
			continue
		}
		key := m[1]
		if section != "" {
			key = section + " " + key
		}
		if documented[key] {
			problems = append(problems, "line "+strconv.Itoa(lineNo)+": "+key+" has a second row")
		}
		documented[key] = true
	}
	code := map[string]bool{}
	for _, k := range configKeys() {
		code[k] = true
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !code[k] {
			stale = append(stale, k)
		}
	}
	sort.Strings(stale)
	return missing, stale, problems
}
