package healstore

import (
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/healstore/healstore/encoder"
)

// FuzzParseConfig feeds ParseConfig arbitrary config files. A bad file
// must give a *ConfigError (matching ErrBadConfig) that names the file and
// says what is wrong, never a panic. A file that parses must survive
// Marshal and ParseConfig again with an equal result.
func FuzzParseConfig(f *testing.F) {
	const path = "/srv/healstore/healstore.toml"
	initPath, err := Init(f.TempDir(), InitOptions{})
	if err != nil {
		f.Fatal(err)
	}
	initText, err := os.ReadFile(initPath)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(initText)
	f.Add([]byte(goodConfig))
	f.Add([]byte(goodConfig + "\n[snapshots]\ninterval = \"15s\"\nmax_changes = -1\nkeep = 5\n"))
	f.Add([]byte(goodConfig + "\n[metastore]\nkind = \"etcd\"\nendpoints = [\"127.0.0.1:2379\"]\n"))
	f.Add([]byte(goodConfig + "\n[metastore]\nkind = \"etcd\"\nendpoints = [\"HTTPS://127.0.0.1:2379\", \"Https://h:1\"]\nkey_file = \"k.pem\"\n"))
	f.Add([]byte(goodConfig + "\n[healer.provisioner]\nkind = \"command\"\n[healer.provisioner.settings]\ncommand = [\"/usr/local/bin/prov\", \"--zone\", \"a\"]\ntimeout = \"5m\"\n"))
	f.Add([]byte(goodConfig + "\n[[backends]]\nname = \"z\"\nkind = \"zdb\"\naddress = \"[2a10:b600::1]:9900\"\nnamespace = \"ns\"\nsecret_ref = \"z\"\nfarm = \"81\"\n"))
	f.Add([]byte(goodConfig + "\n[healer.provisioner]\nkind = \"tfgrid\"\n[healer.provisioner.settings]\nfarms = [81, 1]\nratio = nan\n" +
		"since = 1979-05-27T07:32:00Z\nday = 1979-05-27\nnested = {a = [[1, 2], [\"x\"]], b = {}}\n"))
	// k+m past the largest int wraps around below the shard cap.
	f.Add([]byte(strings.Replace(goodConfig, "k = 2", "k = 9223372036854775807", 1)))
	f.Add([]byte("bogus = 1\n" + goodConfig))
	f.Add([]byte(strings.Replace(goodConfig, "m = 1", "m = = 1", 1)))
	f.Add([]byte(strings.Replace(goodConfig, `"5s"`, `"5 parsecs"`, 1)))
	f.Add([]byte(strings.Replace(goodConfig, "k = 2", "k = \"two\"", 1)))
	f.Add([]byte("write_quorum = 1\n" + goodConfig))
	f.Add([]byte(goodConfig + "\n[[backends]]\nname = \"a\"\nkind = \"local\"\npath = \"x\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(path, data)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrBadConfig) {
				t.Fatalf("error %v (%T) is not a *ConfigError", err, err)
			}
			if ce.File != path || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			if ce.Field == "" && ce.Line == 0 {
				t.Fatalf("error %q names neither a key nor a line", err)
			}
			if strings.TrimSpace(ce.Msg) == "" {
				t.Fatalf("error %q does not say what is wrong", err)
			}
			return
		}
		// What Validate promises the rest of the store.
		k, m := cfg.Policy.K, cfg.Policy.M
		if k < 1 || m < 1 || k > encoder.MaxShards || m > encoder.MaxShards || k+m > encoder.MaxShards {
			t.Fatalf("accepted policy k=%d m=%d (at most %d shards)", k, m, encoder.MaxShards)
		}
		if q := cfg.Quorum(); q < k || q > k+m {
			t.Fatalf("accepted write quorum %d outside k=%d..k+m=%d", q, k, k+m)
		}
		data2, err := cfg.Marshal()
		if err != nil {
			t.Fatalf("a config that parsed does not marshal: %v", err)
		}
		again, err := ParseConfig(path, data2)
		if err != nil {
			t.Fatalf("marshalled config does not parse: %v\n%s", err, data2)
		}
		if !reflect.DeepEqual(normalConfig(again), normalConfig(cfg)) {
			data3, _ := again.Marshal()
			t.Fatalf("round trip changed the config:\nfirst\n%s\nthen\n%s", data2, data3)
		}
	})
}

// normalConfig is a copy of c with empty lists and maps made nil: Marshal
// writes an absent list as [], which reads back empty, not nil.
func normalConfig(c *Config) Config {
	n := *c
	if len(n.Backends) == 0 {
		n.Backends = nil
	}
	if len(n.Metastore.Endpoints) == 0 {
		n.Metastore.Endpoints = nil
	}
	if len(n.Healer.Provisioner.Settings) == 0 {
		n.Healer.Provisioner.Settings = nil
	} else {
		n.Healer.Provisioner.Settings = normalValue(n.Healer.Provisioner.Settings).(map[string]any)
	}
	return n
}

// normalValue copies a provisioner setting with NaN replaced by a marker,
// since NaN (a valid TOML float) never equals itself.
func normalValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = normalValue(e)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = normalValue(e)
		}
		return l
	case float64:
		if math.IsNaN(v) {
			return "NaN marker"
		}
	}
	return v
}

// FuzzReadSecrets feeds readSecrets arbitrary secrets files (mode 0600).
// A malformed file gives an error that names the file and at most a line,
// never the file's content (which holds secrets). A file that reads must
// survive writeSecrets and readSecrets again unchanged.
func FuzzReadSecrets(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "secrets.toml")
	path2 := filepath.Join(dir, "secrets2.toml")
	errRE := regexp.MustCompile(`^secrets file ` + regexp.QuoteMeta(path) + `(:[0-9]+)?: malformed; each line must be ref = "secret"$`)
	f.Add([]byte("# healstore secrets: ref = \"secret\". Keep this file mode 0600.\nhs-data-01 = 's3cr3t-Pw-0001'\nzdb-b = \"pw\\n\\\"x\\\"\"\n"))
	f.Add([]byte("\"ref with space\" = \"v\"\n'a.b' = \"\"\n"))
	f.Add([]byte(""))
	f.Add([]byte("ref = s3cr3t\n"))
	f.Add([]byte("ref = 'one'\nref = 'two'\n"))
	f.Add([]byte("[table]\nref = \"x\"\n"))
	f.Add([]byte("ref = 12345\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := readSecrets(path)
		if err != nil {
			if !errRE.MatchString(err.Error()) {
				t.Fatalf("error %q is not the fixed malformed-file message", err)
			}
			return
		}
		if err := writeSecrets(path2, m); err != nil {
			t.Fatalf("secrets that read do not write: %v", err)
		}
		again, err := readSecrets(path2)
		if err != nil {
			t.Fatalf("written secrets do not read: %v", err)
		}
		if !maps.Equal(again, m) {
			t.Fatalf("round trip changed the secrets: %d refs, then %d", len(m), len(again))
		}
	})
}

// FuzzEtcdFiles feeds the etcd settings' file readers arbitrary file
// contents: a CA bundle either loads at least one certificate or fails,
// and a password file either yields its content less one line ending or
// fails with an error that never shows the content.
func FuzzEtcdFiles(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("s3cret-password\n"))
	f.Add([]byte("s3cret-password\r\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Add([]byte("\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "file")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
		if pool, err := loadCAFile(p); (pool == nil) == (err == nil) {
			t.Fatalf("loadCAFile: pool %v with error %v", pool != nil, err)
		}
		pw, err := readPasswordFile(p)
		if err != nil {
			// Content long enough to be told apart from the message's
			// own words must not appear in it.
			if s := strings.TrimSpace(string(data)); len(s) >= 12 && strings.Contains(err.Error(), s) {
				t.Fatalf("password file error shows the content: %v", err)
			}
			return
		}
		want := strings.TrimSuffix(string(data), "\n")
		if want != string(data) {
			want = strings.TrimSuffix(want, "\r")
		}
		if pw != want || pw == "" {
			t.Fatalf("password %q from file %q", pw, data)
		}
	})
}
