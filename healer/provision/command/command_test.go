package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer/provision"
)

const testSecret = "s3cr3t-Pw-0001"

// syncBuf collects log output from concurrent writers.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	p      *Provisioner
	record string
	logs   *syncBuf
}

// newFixture runs testdata/prov.sh in the given mode and checks, when the
// test ends, that the secret never reached the logs.
func newFixture(t *testing.T, mode string, mutate func(*Config)) *fixture {
	t.Helper()
	record := t.TempDir()
	script, err := filepath.Abs("testdata/prov.sh")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Command: []string{script},
		Env:     []string{"HS_RECORD=" + record, "HS_MODE=" + mode},
		Timeout: 30 * time.Second,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &syncBuf{}
	p, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if strings.Contains(logs.String(), testSecret) || strings.Contains(logs.String(), "s3cr3t") {
			t.Errorf("secret leaked into logs:\n%s", logs.String())
		}
	})
	return &fixture{p: p, record: record, logs: logs}
}

func (f *fixture) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.record, name))
	if err != nil {
		t.Fatalf("program did not record %s: %v", name, err)
	}
	return string(b)
}

func (f *fixture) released(t *testing.T) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(f.record, "release.stdin"))
	return err == nil
}

func TestProvisionParsesSpecAndSecret(t *testing.T) {
	f := newFixture(t, "ok", nil)
	c := provision.Constraints{AvoidDomains: []string{"node:12", "node:13"}, Level: "node", MinSize: 1 << 30, NameHint: "hs-data"}
	spec, secret, err := f.p.Provision(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	want := backends.Spec{
		Name: "hs-data-01", Kind: "zdb", Address: "[2a10:b600::1]:9900", Namespace: "81-1-hs",
		Node: "11", Farm: "81", Quota: 10 << 30, SecretRef: "hs-data-01",
	}
	if spec != want {
		t.Errorf("spec = %+v\nwant  %+v", spec, want)
	}
	if secret != testSecret {
		t.Errorf("secret = %q", secret)
	}

	if got := f.read(t, "provision.args"); got != "provision\n" {
		t.Errorf("program args = %q, want the action as the only extra argument", got)
	}
	if got := f.read(t, "provision.env"); got != "provision\n" {
		t.Errorf("HEALSTORE_ACTION = %q", got)
	}
	var req struct {
		Action      string `json:"action"`
		Constraints struct {
			AvoidDomains []string `json:"avoid_domains"`
			Level        string   `json:"level"`
			MinSize      int64    `json:"min_size"`
			NameHint     string   `json:"name_hint"`
		} `json:"constraints"`
	}
	dec := json.NewDecoder(strings.NewReader(f.read(t, "provision.stdin")))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		t.Fatalf("stdin is not the documented request: %v", err)
	}
	if req.Action != "provision" || req.Constraints.Level != "node" || req.Constraints.MinSize != 1<<30 ||
		req.Constraints.NameHint != "hs-data" || strings.Join(req.Constraints.AvoidDomains, ",") != "node:12,node:13" {
		t.Errorf("request = %+v", req)
	}
	if f.released(t) {
		t.Error("an accepted backend was released")
	}
}

func TestProvisionKeepsGivenSecretRef(t *testing.T) {
	f := newFixture(t, "noref", nil)
	spec, secret, err := f.p.Provision(context.Background(), provision.Constraints{})
	if err != nil {
		t.Fatal(err)
	}
	if spec.SecretRef != "given-ref" || secret != testSecret {
		t.Errorf("secret_ref %q secret %q", spec.SecretRef, secret)
	}
}

func TestProvisionEmptyAvoidIsArray(t *testing.T) {
	f := newFixture(t, "ok", nil)
	if _, _, err := f.p.Provision(context.Background(), provision.Constraints{}); err != nil {
		t.Fatal(err)
	}
	// Scripts iterate over avoid_domains (jq '.constraints.avoid_domains[]');
	// null would break them.
	if got := f.read(t, "provision.stdin"); !strings.Contains(got, `"avoid_domains":[]`) {
		t.Errorf("stdin %s: avoid_domains should be an empty array", got)
	}
}

func TestReleaseSendsSpec(t *testing.T) {
	f := newFixture(t, "ok", nil)
	spec := backends.Spec{Name: "b1", Kind: "s3", Address: "s3.example:443", Bucket: "hs-b1", SecretRef: "b1"}
	if err := f.p.Release(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	var req struct {
		Action string        `json:"action"`
		Spec   backends.Spec `json:"spec"`
	}
	if err := json.Unmarshal([]byte(f.read(t, "release.stdin")), &req); err != nil {
		t.Fatal(err)
	}
	if req.Action != "release" || req.Spec != spec {
		t.Errorf("release request = %+v", req)
	}
	if got := f.read(t, "release.args"); got != "release\n" {
		t.Errorf("args = %q", got)
	}
}

func TestReleaseFailure(t *testing.T) {
	f := newFixture(t, "release-fail", nil)
	err := f.p.Release(context.Background(), backends.Spec{Name: "b1", Kind: "local", Path: "/x"})
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "cannot release") {
		t.Fatalf("err = %v, want ErrFailed with the program's diagnostic", err)
	}
}

func TestFailedProgramErrorHasDiagnosticsButNoSecret(t *testing.T) {
	f := newFixture(t, "fail", nil)
	_, _, err := f.p.Provision(context.Background(), provision.Constraints{NameHint: "x"})
	if !errors.Is(err, ErrFailed) {
		t.Fatalf("err = %v, want ErrFailed", err)
	}
	msg := err.Error()
	for _, want := range []string{"exit status 3", "node 11 has no free capacity"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "s3cr3t") {
		t.Errorf("error leaks the password: %q", msg)
	}
}

func TestBadOutput(t *testing.T) {
	cases := []struct {
		mode string
		want string // part of the error text
	}{
		{"empty", "stdout is empty"},
		{"text", "does not start with a JSON object"},
		{"syntax", "syntax error near byte"},
		{"two", "more than one JSON value"},
		{"password", `unknown field "password" (put the password or secret key in "secret")`},
		{"typo", `unknown field "adress"`},
		{"type", `field "quota" must be a JSON number, not string`},
		{"invalid", "needs address"},
		{"truncated", "ends in the middle"},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			f := newFixture(t, tc.mode, nil)
			_, secret, err := f.p.Provision(context.Background(), provision.Constraints{})
			if !errors.Is(err, ErrBadOutput) {
				t.Fatalf("err = %v, want ErrBadOutput", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") || secret != "" {
				t.Errorf("error or result leaks the secret: %q", err)
			}
		})
	}
}

func TestConstraintViolationReleases(t *testing.T) {
	cases := []struct {
		mode string
		c    provision.Constraints
		want string
	}{
		{"avoided", provision.Constraints{AvoidDomains: []string{"node:12"}, Level: "node"}, "failure domain node:12"},
		{"small", provision.Constraints{MinSize: 1 << 20}, "quota 1000 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			f := newFixture(t, tc.mode, nil)
			_, _, err := f.p.Provision(context.Background(), tc.c)
			if !errors.Is(err, ErrConstraint) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrConstraint saying %q", err, tc.want)
			}
			if !f.released(t) {
				t.Fatal("rejected backend was not released")
			}
			if got := f.read(t, "release.stdin"); !strings.Contains(got, `"name":"a"`) {
				t.Errorf("release got %s", got)
			}
		})
	}
}

func TestVerifyFailureReleases(t *testing.T) {
	var gotSecret string
	f := newFixture(t, "ok", func(c *Config) {
		c.Verify = func(_ context.Context, spec backends.Spec, secret string) error {
			gotSecret = secret
			return errors.New("namespace not writable")
		}
	})
	_, _, err := f.p.Provision(context.Background(), provision.Constraints{})
	if err == nil || !strings.Contains(err.Error(), "namespace not writable") {
		t.Fatalf("err = %v", err)
	}
	if gotSecret != testSecret {
		t.Errorf("verify got secret %q", gotSecret)
	}
	if !f.released(t) {
		t.Fatal("backend that failed verification was not released")
	}
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	f := newFixture(t, "hang", func(c *Config) { c.Timeout = 300 * time.Millisecond })
	start := time.Now()
	_, _, err := f.p.Provision(context.Background(), provision.Constraints{})
	if !errors.Is(err, ErrFailed) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrFailed and DeadlineExceeded", err)
	}
	// The script and its child sleep 60 s; returning well before that
	// shows the whole group was killed (bound kept loose for slow CI).
	if el := time.Since(start); el > 30*time.Second {
		t.Errorf("Provision took %v after a 300ms timeout", el)
	}
}

func TestCallerCancel(t *testing.T) {
	f := newFixture(t, "hang", nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	_, _, err := f.p.Provision(ctx, provision.Constraints{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestNewValidates(t *testing.T) {
	for name, cfg := range map[string]Config{
		"empty command":    {},
		"empty program":    {Command: []string{""}},
		"bad env":          {Command: []string{"x"}, Env: []string{"NOEQUALS"}},
		"negative timeout": {Command: []string{"x"}, Timeout: -time.Second},
	} {
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
	if _, err := New(Config{Command: []string{"/bin/true"}}, nil); err != nil {
		t.Errorf("minimal config: %v", err)
	}
}

func TestMissingProgram(t *testing.T) {
	p, err := New(Config{Command: []string{"/nonexistent/healstore-provision"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = p.Provision(context.Background(), provision.Constraints{})
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "/nonexistent/healstore-provision") {
		t.Fatalf("err = %v", err)
	}
}

func TestRedact(t *testing.T) {
	in := strings.Join([]string{
		`{"password": "p1-value", "Secret_Key":"p2-value"}`,
		`tfcmd deploy zdb --password p3-value --node 1`,
		`aws --secret-key=p4-value`,
		`AWS_SECRET_ACCESS_KEY=p5-value password: p6-value`,
		`wrong password for namespace x`,
		`plain p7-value`,
	}, "\n")
	out := redact(in, "p7-value")
	for _, leaked := range []string{"p1-value", "p2-value", "p3-value", "p4-value", "p5-value", "p6-value", "p7-value"} {
		if strings.Contains(out, leaked) {
			t.Errorf("redact left %s in:\n%s", leaked, out)
		}
	}
	if !strings.Contains(out, "wrong password for namespace x") {
		t.Errorf("redact mangled an ordinary sentence:\n%s", out)
	}
}

func TestTailDropsPartialFirstLine(t *testing.T) {
	tl := &tail{max: 16}
	tl.Write([]byte("label: abcdefgh-secret-half\nlast line\n"))
	if got := tl.String(); got != "last line\n" {
		t.Errorf("tail = %q", got)
	}
}
