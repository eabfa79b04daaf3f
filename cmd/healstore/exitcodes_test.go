package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestErrorsHaveOnePrefix: an error that names its command ("healstore
// put: ...") is printed as is, not as "healstore: healstore put: ...".
func TestErrorsHaveOnePrefix(t *testing.T) {
	dir := t.TempDir()
	cases := [][]string{
		{"put"},
		{"put", "a", "b", "c"},
		{"ls", "--bogus"},
		{"get", ""},
		{"--config", filepath.Join(dir, "none.toml"), "ls"},
	}
	for _, args := range cases {
		_, errs, code := cli(t, "", args...)
		if code == 0 || strings.Count(errs, "healstore") == 0 || strings.Contains(errs, "healstore: healstore") ||
			!strings.HasPrefix(errs, "healstore") {
			t.Errorf("%q: exit %d, stderr %q; want one healstore prefix", args, code, errs)
		}
	}
}
