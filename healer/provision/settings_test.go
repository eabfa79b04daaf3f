package provision

import (
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

func settings(t *testing.T, text string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := toml.Unmarshal([]byte(text), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLocalConfigFromSettings(t *testing.T) {
	c, err := LocalConfigFromSettings(settings(t, `dir = "prov"
prefix = "x"
quota = 1024
s3 = { binary = "/bin/gw", region = "eu" }`), "/store")
	if err != nil {
		t.Fatal(err)
	}
	if c.Dir != "/store/prov" || c.Prefix != "x" || c.Quota != 1024 || c.S3 == nil || c.S3.Binary != "/bin/gw" || c.S3.Region != "eu" {
		t.Fatalf("%+v %+v", c, c.S3)
	}
	for _, bad := range []string{`prefix = "x"`, `dir = "d"
qouta = 5`, `dir = 5`} {
		if _, err := LocalConfigFromSettings(settings(t, bad), "/s"); err == nil || !strings.Contains(err.Error(), "local provisioner settings") {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}

func TestSpareSpecsFromSettings(t *testing.T) {
	specs, err := SpareSpecsFromSettings(settings(t, `backends = [
  { name = "s1", kind = "local", path = "spares/1", node = "n7" },
  { name = "s2", kind = "s3", address = "h:1", bucket = "bkt", secret_ref = "s3/s2" },
]`), "/store")
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 2 || specs[0].Path != "/store/spares/1" || specs[1].SecretRef != "s3/s2" {
		t.Fatalf("%+v", specs)
	}
	if _, err := SpareSpecsFromSettings(settings(t, `backends = [{ name = "s1", kind = "local" }]`), "/"); err == nil {
		t.Fatal("spec without path accepted")
	}
	if _, err := SpareSpecsFromSettings(settings(t, `x = 1`), "/"); err == nil {
		t.Fatal("unknown key accepted")
	}
	// A key of another kind is refused, naming it, not dropped.
	_, err = SpareSpecsFromSettings(settings(t, `backends = [
  { name = "s1", kind = "local", path = "spares/1" },
  { name = "s2", kind = "local", path = "spares/2", bucket = "bkt" },
]`), "/store")
	if want := "spare provisioner settings: backends[1]: backend s2: bucket does not apply to a local backend (only to s3)"; err == nil || err.Error() != want {
		t.Fatalf("local spare with a bucket: %v, want %q", err, want)
	}
}

// encoding/json matches keys case-insensitively; the settings table does
// not, in nested tables and arrays too.
func TestSettingsKeysAreCaseSensitive(t *testing.T) {
	for text, want := range map[string]string{
		"DIR = \"prov\"":                       `unknown key "DIR": keys are case-sensitive; did you mean "dir"?`,
		"dir = \"a\"\nDir = \"b\"":             `did you mean "dir"`,
		"dir = \"a\"\ns3 = { Binary = \"x\" }": `unknown key "s3.Binary"`,
	} {
		_, err := LocalConfigFromSettings(settings(t, text), "/s")
		if err == nil || !strings.HasPrefix(err.Error(), "local provisioner settings: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %s", text, err, want)
		}
	}
	_, err := SpareSpecsFromSettings(settings(t, `backends = [
  { name = "s1", kind = "local", path = "p", node = "n7" },
  { name = "s2", kind = "local", Path = "q", node = "n8" },
]`), "/")
	if err == nil || !strings.Contains(err.Error(), `unknown key "backends[1].Path"`) {
		t.Fatalf("spare with Path: %v", err)
	}
}
