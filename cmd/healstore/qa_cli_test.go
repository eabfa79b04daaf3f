package main_test

// The new user's path through the real binary: built once with go build,
// run as a separate process, so exit codes, stdout/stderr separation and
// file modes are what a shell sees.

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	qaBinOnce sync.Once
	qaBinPath string
	qaBinErr  error
	qaBinOut  []byte
)

// qaBinary builds cmd/healstore once per test binary run.
func qaBinary(t *testing.T) string {
	t.Helper()
	qaBinOnce.Do(func() {
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(gobin); err != nil {
			if gobin, qaBinErr = exec.LookPath("go"); qaBinErr != nil {
				return
			}
		}
		dir, err := os.MkdirTemp("", "healstore-qa-bin-")
		if err != nil {
			qaBinErr = err
			return
		}
		qaBinPath = filepath.Join(dir, "healstore")
		cmd := exec.Command(gobin, "build", "-buildvcs=false", "-o", qaBinPath, ".")
		qaBinOut, qaBinErr = cmd.CombinedOutput()
	})
	if qaBinErr != nil {
		t.Fatalf("go build: %v\n%s", qaBinErr, qaBinOut)
	}
	return qaBinPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if qaBinPath != "" {
		os.RemoveAll(filepath.Dir(qaBinPath))
	}
	os.Exit(code)
}

type qaResult struct {
	stdout, stderr string
	code           int
}

// qaRun runs the binary in dir with env (added to a clean environment that
// has no HEALSTORE_CONFIG of the caller's).
func qaRun(t *testing.T, dir string, env []string, stdin []byte, args ...string) qaResult {
	t.Helper()
	cmd := exec.Command(qaBinary(t), args...)
	cmd.Dir = dir
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "HEALSTORE_CONFIG=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args, err)
	}
	return qaResult{out.String(), errb.String(), code}
}

// expect fails unless r exited with code and stderr contains every want.
func (r qaResult) expect(t *testing.T, what string, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", what, r.code, code, r.stdout, r.stderr)
		return
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("%s: stderr does not say %q:\n%s", what, w, r.stderr)
		}
	}
}

func TestQACLINewUser(t *testing.T) {
	work := t.TempDir()
	store := filepath.Join(work, "store")
	r := qaRun(t, work, nil, nil, "init", "store")
	r.expect(t, "init", 0)
	cfgPath := filepath.Join(store, "healstore.toml")
	if !strings.Contains(r.stdout, cfgPath) {
		t.Errorf("init does not print where the config went:\n%s", r.stdout)
	}
	for _, f := range []string{"healstore.toml", "healstore.key", "secrets.toml"} {
		st, err := os.Stat(filepath.Join(store, f))
		if err != nil {
			t.Fatalf("init wrote no %s: %v", f, err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", f, st.Mode().Perm())
		}
	}
	key, _ := os.ReadFile(filepath.Join(store, "healstore.key"))
	// A second init must not replace the master key; refusing is a usage error (exit 2).
	qaRun(t, work, nil, nil, "init", "store").expect(t, "init over an existing store", 2)
	if k2, _ := os.ReadFile(filepath.Join(store, "healstore.key")); !bytes.Equal(k2, key) {
		t.Fatal("a second init changed the master key")
	}
	if strings.Contains(r.stdout+r.stderr, strings.TrimSpace(string(key))) {
		t.Fatal("init printed the master key")
	}

	// From here on the config comes from HEALSTORE_CONFIG, as init says.
	env := []string{"HEALSTORE_CONFIG=" + cfgPath}
	data := make([]byte, 5<<20+12345) // two 4 MiB blocks
	rand.Read(data)
	src := filepath.Join(work, "photo.raw")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r = qaRun(t, work, env, nil, "put", "photos/one", src)
	r.expect(t, "put", 0)
	qaRun(t, work, env, []byte("from a pipe\n"), "put", "notes/pipe", "-").expect(t, "put from stdin", 0)
	r = qaRun(t, work, env, nil, "put", "--json", "notes/json", src)
	r.expect(t, "put --json", 0)
	var put map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &put); err != nil {
		t.Errorf("put --json prints no JSON object: %v\n%s", err, r.stdout)
	}

	dst := filepath.Join(work, "back.raw")
	qaRun(t, work, env, nil, "get", "photos/one", dst).expect(t, "get to a file", 0)
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
		t.Fatal("get wrote different bytes")
	}
	r = qaRun(t, work, env, nil, "get", "photos/one", "-")
	r.expect(t, "get to stdout", 0)
	if r.stdout != string(data) {
		t.Fatalf("get to stdout: %d bytes, not the %d stored (logs or progress on stdout?)", len(r.stdout), len(data))
	}
	r = qaRun(t, work, env, nil, "get", "notes/pipe")
	if r.code != 0 || r.stdout != "from a pipe\n" {
		t.Errorf("get with no FILE: exit %d, stdout %q", r.code, r.stdout)
	}

	r = qaRun(t, work, env, nil, "ls")
	r.expect(t, "ls", 0)
	names := strings.Fields(r.stdout)
	if strings.Join(names, " ") != "notes/json notes/pipe photos/one" {
		t.Errorf("ls printed %q, want the three names in order", r.stdout)
	}
	r = qaRun(t, work, env, nil, "ls", "notes/")
	if strings.Join(strings.Fields(r.stdout), " ") != "notes/json notes/pipe" {
		t.Errorf("ls notes/ printed %q", r.stdout)
	}

	r = qaRun(t, work, env, nil, "stat", "--json", "photos/one")
	r.expect(t, "stat --json", 0)
	var st struct {
		Name       string `json:"name"`
		Size       int64  `json:"size"`
		Blocks     int    `json:"blocks"`
		Redundancy struct {
			MinMargin       int `json:"min_margin"`
			DegradedStripes int `json:"degraded_stripes"`
		} `json:"redundancy"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("stat --json: %v\n%s", err, r.stdout)
	}
	if st.Name != "photos/one" || st.Size != int64(len(data)) || st.Blocks != 2 ||
		st.Redundancy.MinMargin != 2 || st.Redundancy.DegradedStripes != 0 {
		t.Errorf("stat --json: %+v (%s)", st, r.stdout)
	}

	qaRun(t, work, env, nil, "rm", "photos/one").expect(t, "rm", 0)
	missing := filepath.Join(work, "missing.out")
	r = qaRun(t, work, env, nil, "get", "photos/one", missing)
	r.expect(t, "get of a deleted object", 3, "not found")
	if _, err := os.Stat(missing); err == nil {
		t.Error("a failed get left its output file behind")
	}
	qaRun(t, work, env, nil, "get", "never/was", "-").expect(t, "get of a name never stored", 3, "not found")
	qaRun(t, work, env, nil, "stat", "never/was").expect(t, "stat of a missing name", 3, "not found")
	qaRun(t, work, env, nil, "rm", "never/was").expect(t, "rm of a missing name", 3, "not found")
	qaRun(t, work, env, nil, "rm", "-f", "never/was").expect(t, "rm -f of a missing name", 0)

	// Usage errors: exit 2 with a message that names the problem.
	qaRun(t, work, env, nil, "ls", "--no-such-flag").expect(t, "unknown flag", 2, "unknown flag", "--no-such-flag")
	qaRun(t, work, env, nil, "frobnicate").expect(t, "unknown command", 2, "unknown command", "frobnicate")
	qaRun(t, work, env, nil, "get").expect(t, "get without NAME", 2)
	qaRun(t, work, nil, nil, "ls").expect(t, "no config anywhere", 2, "healstore.toml", "healstore init")

	good, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	bad := func(name, from, to string) string {
		t.Helper()
		if !strings.Contains(string(good), from) {
			t.Fatalf("config has no %q to break", from)
		}
		p := filepath.Join(store, name)
		if err := os.WriteFile(p, []byte(strings.Replace(string(good), from, to, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := bad("k0.toml", "k = 4", "k = 0")
	qaRun(t, work, nil, nil, "--config", p, "ls").expect(t, "config with k = 0", 2, p, "policy.k")
	p = bad("typo.toml", "[policy]", "[policy]\nblocksize = 1")
	qaRun(t, work, nil, nil, "--config", p, "ls").expect(t, "config with an unknown key", 2, "blocksize")
	p = bad("syntax.toml", "[policy]", "[policy\n")
	qaRun(t, work, nil, nil, "--config", p, "ls").expect(t, "config that is not TOML", 2, p)
	p = bad("nokey.toml", `master_key_file = "healstore.key"`, `master_key_file = "absent.key"`)
	qaRun(t, work, nil, nil, "--config", p, "ls").expect(t, "config naming a missing key file", 2, "absent.key")

	// A key file others can read is refused, saying how to fix it.
	keyPath := filepath.Join(store, "healstore.key")
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	r = qaRun(t, work, env, nil, "ls")
	r.expect(t, "key file mode 0644", 2, "chmod 600")
	if strings.Contains(r.stderr, strings.TrimSpace(string(key))) {
		t.Error("the error about the key file shows the key")
	}
	os.Chmod(keyPath, 0o600)
	qaRun(t, work, env, nil, "ls").expect(t, "ls after fixing the key mode", 0)
}

// designCommands are the CLI commands DESIGN.md ("Interfaces users
// touch") promises.
var designCommands = []string{"init", "put", "get", "ls", "rm", "stat", "mount", "daemon", "status",
	"backend", "heal", "scrub", "recover", "bench", "demo"}

// helpCommands returns the command names of a help text's "Available
// Commands" section.
func helpCommands(help string) map[string]bool {
	out := map[string]bool{}
	_, rest, ok := strings.Cut(help, "Available Commands:")
	if !ok {
		return out
	}
	line := regexp.MustCompile(`^  ([a-z][a-z-]*)\s`)
	for _, l := range strings.Split(rest, "\n") {
		if strings.TrimSpace(l) == "" {
			if len(out) > 0 {
				break
			}
			continue
		}
		if m := line.FindStringSubmatch(l); m != nil {
			out[m[1]] = true
		}
	}
	return out
}

func TestQACLIHelpListsDesignCommands(t *testing.T) {
	work := t.TempDir()
	r := qaRun(t, work, nil, nil, "--help")
	r.expect(t, "--help", 0)
	have := helpCommands(r.stdout)
	for _, c := range designCommands {
		if !have[c] {
			t.Errorf("healstore --help does not list %q (DESIGN.md lists it among the commands users touch)", c)
			continue
		}
		h := qaRun(t, work, nil, nil, c, "--help")
		h.expect(t, c+" --help", 0)
		if !strings.Contains(h.stdout, "Usage:") {
			t.Errorf("%s --help prints no usage:\n%s", c, h.stdout)
		}
	}
	sub := helpCommands(qaRun(t, work, nil, nil, "backend", "--help").stdout)
	for _, c := range []string{"add", "rm", "drain", "ls"} {
		if !sub[c] {
			t.Errorf("healstore backend --help does not list %q", c)
		}
	}
	for _, code := range []string{"0", "1", "2", "3"} {
		if !regexp.MustCompile(`(?m)^\s+` + code + `\s+\S`).MatchString(r.stdout) {
			t.Errorf("healstore --help does not document exit code %s", code)
		}
	}
}

// docCommands returns every healstore command line in the fenced code
// blocks of the given markdown files (continuation lines joined, comments
// dropped), as argument lists after "healstore".
func docCommands(t *testing.T, files []string) map[string][][]string {
	t.Helper()
	out := map[string][][]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		in := false
		var pending string
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				in = !in
				pending = ""
				continue
			}
			if !in {
				continue
			}
			if i := strings.Index(line, " #"); i >= 0 {
				line = line[:i]
			}
			line = pending + line
			if strings.HasSuffix(strings.TrimSpace(line), "\\") {
				pending = strings.TrimSuffix(strings.TrimSpace(line), "\\") + " "
				continue
			}
			pending = ""
			for _, part := range strings.Split(line, ";") {
				fields := strings.Fields(part)
				for i, w := range fields {
					if w == "healstore" || w == "./healstore" {
						out[f] = append(out[f], fields[i+1:])
						break
					}
				}
			}
		}
	}
	return out
}

var flagRE = regexp.MustCompile(`(?m)^\s+(?:(-[a-zA-Z]), )?(--[a-z0-9-]+)`)

// TestQADocsCommandsMatchCLI runs `--help` for every healstore command the
// README and docs show and checks that the command exists and knows every
// flag they pass it.
func TestQADocsCommandsMatchCLI(t *testing.T) {
	files, _ := filepath.Glob("../../docs/*.md")
	files = append(files, "../../README.md")
	cmds := docCommands(t, files)
	work := t.TempDir()
	helps := map[string]qaResult{}
	help := func(path []string) qaResult {
		key := strings.Join(path, " ")
		if r, ok := helps[key]; ok {
			return r
		}
		r := qaRun(t, work, nil, nil, append(append([]string{}, path...), "--help")...)
		helps[key] = r
		return r
	}
	n := 0
	for f, lines := range cmds {
		for _, args := range lines {
			// Global flags may come first.
			var path, flags []string
			for i := 0; i < len(args); i++ {
				a := args[i]
				switch {
				case a == "--config" || a == "--log-level":
					i++
				case strings.HasPrefix(a, "-"):
					flags = append(flags, strings.SplitN(a, "=", 2)[0])
				case len(flags) == 0 && len(path) < 2:
					// A command word, or the first positional argument:
					// only words the parent's help lists are commands.
					sub := helpCommands(help(path).stdout)
					if sub[a] {
						path = append(path, a)
					} else if len(sub) > 0 && (len(path) == 0 || !sub["help"]) {
						// A command with subcommands (other than the root's
						// help) takes no positional argument.
						t.Errorf("%s: `healstore %s`: no command %q", f, strings.Join(args, " "), strings.Join(append(path, a), " "))
					}
				}
			}
			if len(path) == 0 {
				continue
			}
			n++
			h := help(path)
			if h.code != 0 {
				t.Errorf("%s: healstore %s --help: exit %d", f, strings.Join(path, " "), h.code)
				continue
			}
			known := map[string]bool{"--help": true, "-h": true}
			for _, m := range flagRE.FindAllStringSubmatch(h.stdout, -1) {
				known[m[2]] = true
				if m[1] != "" {
					known[m[1]] = true
				}
			}
			for _, fl := range flags {
				if !known[fl] {
					t.Errorf("%s: `healstore %s`: %s has no flag %s", f, strings.Join(args, " "), strings.Join(path, " "), fl)
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d healstore commands found in the docs: the check covered too little", n)
	}
	t.Logf("%d documented command lines checked against --help", n)
}
