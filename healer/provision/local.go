package provision

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/sys/unix"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/local"
)

// LocalConfig configures the Local provisioner.
type LocalConfig struct {
	// Dir is the parent directory; every new backend gets its own
	// sub-directory. Created if missing.
	Dir string `toml:"dir" json:"dir"`
	// Prefix names new backends when the constraints give no NameHint
	// (default "local").
	Prefix string `toml:"prefix,omitempty" json:"prefix,omitempty"`
	// Farm, when set, labels every new backend with this farm. Without it
	// each backend is its own farm as well as its own node.
	Farm string `toml:"farm,omitempty" json:"farm,omitempty"`
	// Quota in bytes for every new backend (0 = none).
	Quota int64 `toml:"quota,omitempty" json:"quota,omitempty"`
	// S3, when set, serves each new backend through its own local S3 gateway
	// process instead of opening the directory directly.
	S3 *LocalS3 `toml:"s3,omitempty" json:"s3,omitempty"`
}

// LocalS3 says how to start a local S3 gateway (versitygw's posix mode).
type LocalS3 struct {
	// Binary is the versitygw executable.
	Binary string `toml:"binary" json:"binary"`
	// AccessKey for the gateway's root account (default "healstore").
	AccessKey string `toml:"access_key,omitempty" json:"access_key,omitempty"`
	// Region (default "us-east-1").
	Region string `toml:"region,omitempty" json:"region,omitempty"`
	// StartTimeout bounds the wait for the gateway to listen (default 15s).
	StartTimeout time.Duration `toml:"-" json:"-"`
}

// Local creates new backends under one directory of this host. Its failure
// domains are labels only (everything shares one disk); it exists for
// single-host setups, demos and tests.
type Local struct {
	cfg LocalConfig

	mu    sync.Mutex
	procs map[string]*gateway // running gateways by backend name
}

// gateway is one running S3 gateway process; done closes when it exits.
type gateway struct {
	cmd  *exec.Cmd
	done chan struct{}
}

var _ Provisioner = (*Local)(nil)

// s3Bucket is the bucket every local gateway serves.
const s3Bucket = "healstore"

// serverState is what Local remembers about a gateway it started, so a
// restarted healer can start it again (Resume). The secret is kept apart in
// a 0600 file.
type serverState struct {
	Port      int    `json:"port"`
	AccessKey string `json:"access_key"`
	Region    string `json:"region"`
}

// NewLocal checks the config and creates Dir.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if cfg.Dir == "" {
		return nil, errors.New("local provisioner: dir is empty")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "local"
	}
	if cfg.Quota < 0 {
		return nil, fmt.Errorf("local provisioner: quota %d is negative", cfg.Quota)
	}
	if cfg.S3 != nil {
		s3 := *cfg.S3
		if s3.Binary == "" {
			return nil, errors.New("local provisioner: s3.binary is empty")
		}
		if s3.AccessKey == "" {
			s3.AccessKey = "healstore"
		}
		if s3.Region == "" {
			s3.Region = "us-east-1"
		}
		if s3.StartTimeout <= 0 {
			s3.StartTimeout = 15 * time.Second
		}
		cfg.S3 = &s3
	}
	abs, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("local provisioner: %w", err)
	}
	cfg.Dir = abs
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("local provisioner: %w", err)
	}
	return &Local{cfg: cfg, procs: map[string]*gateway{}}, nil
}

// Name implements Provisioner.
func (l *Local) Name() string { return "local" }

// Dir is the absolute parent directory of the backends Local creates.
func (l *Local) Dir() string { return l.cfg.Dir }

// Provision creates a new directory (and, with S3 configured, starts a
// gateway on it). Each backend is its own node; its farm is the configured
// one or, without it, its own.
func (l *Local) Provision(ctx context.Context, c Constraints) (backends.Spec, string, error) {
	if err := ctx.Err(); err != nil {
		return backends.Spec{}, "", err
	}
	if c.Level == "farm" && l.cfg.Farm != "" && c.Avoids(backends.Spec{Farm: l.cfg.Farm}) {
		return backends.Spec{}, "", &NoCapacityError{Provisioner: l.Name(),
			Reason: fmt.Sprintf("every local backend is in farm %q, which is to be avoided", l.cfg.Farm)}
	}
	if c.MinSize > 0 {
		var st unix.Statfs_t
		if err := unix.Statfs(l.cfg.Dir, &st); err != nil {
			return backends.Spec{}, "", fmt.Errorf("local provisioner: statfs %s: %w", l.cfg.Dir, err)
		}
		free := int64(st.Bavail) * st.Bsize
		if free < c.MinSize || (l.cfg.Quota > 0 && l.cfg.Quota < c.MinSize) {
			return backends.Spec{}, "", &NoCapacityError{Provisioner: l.Name(),
				Reason: fmt.Sprintf("%s has %d bytes free (quota %d), need %d", l.cfg.Dir, free, l.cfg.Quota, c.MinSize)}
		}
	}
	prefix := sanitize(c.NameHint)
	if prefix == "" {
		prefix = l.cfg.Prefix
	}
	name, dir, err := l.mkdirUnique(prefix, c)
	if err != nil {
		return backends.Spec{}, "", err
	}
	spec := backends.Spec{Name: name, Kind: backends.KindLocal, Path: dir, Quota: l.cfg.Quota, Node: name, Farm: l.cfg.Farm}
	if spec.Farm == "" {
		spec.Farm = name
	}
	if l.cfg.S3 == nil {
		// Laid out now, as healstore init lays out its backends: the
		// rebuild's first writes then make no directories.
		if err := local.Prepare(dir); err != nil {
			_ = os.RemoveAll(dir)
			return backends.Spec{}, "", fmt.Errorf("local provisioner: %w", err)
		}
		return spec, "", nil
	}
	secret, err := randomHex(20)
	if err != nil {
		_ = os.RemoveAll(dir)
		return backends.Spec{}, "", err
	}
	st := serverState{AccessKey: l.cfg.S3.AccessKey, Region: l.cfg.S3.Region}
	if err := l.startGateway(ctx, name, dir, &st, secret, true); err != nil {
		_ = os.RemoveAll(dir)
		return backends.Spec{}, "", err
	}
	spec.Kind = backends.KindS3
	spec.Path = ""
	spec.Address = fmt.Sprintf("127.0.0.1:%d", st.Port)
	spec.Bucket = s3Bucket
	spec.Region = st.Region
	spec.AccessKey = st.AccessKey
	spec.SecretRef = "s3/" + name
	return spec, secret, nil
}

// mkdirUnique creates <Dir>/<prefix>-<n> for the first free n whose name
// is not taken and whose domain is not avoided. (A free directory alone
// does not make a name free: a released backend's directory is gone, its
// record is not.)
func (l *Local) mkdirUnique(prefix string, c Constraints) (string, string, error) {
	for n := 1; n < 100000; n++ {
		name := fmt.Sprintf("%s-%d", prefix, n)
		if c.Avoids(backends.Spec{Name: name, Node: name, Farm: name}) || slices.Contains(c.TakenNames, name) {
			continue
		}
		dir := filepath.Join(l.cfg.Dir, name)
		err := os.Mkdir(dir, 0o700)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", "", fmt.Errorf("local provisioner: %w", err)
		}
		return name, dir, nil
	}
	return "", "", &NoCapacityError{Provisioner: l.Name(), Reason: "no free name under " + l.cfg.Dir}
}

// Release stops the backend's gateway, if any, and deletes its directory.
// It refuses specs whose directory is not one Local created.
func (l *Local) Release(ctx context.Context, spec backends.Spec) error {
	dir := filepath.Join(l.cfg.Dir, spec.Name)
	if spec.Kind == backends.KindLocal && filepath.Clean(spec.Path) != dir {
		return fmt.Errorf("local provisioner: backend %s lives at %s, not under %s; not releasing", spec.Name, spec.Path, l.cfg.Dir)
	}
	if spec.Name == "" || sanitize(spec.Name) != spec.Name {
		return fmt.Errorf("local provisioner: bad backend name %q", spec.Name)
	}
	l.stop(spec.Name)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("local provisioner: release %s: %w", spec.Name, err)
	}
	return nil
}

// Resume starts again the gateways of the given backends that Local created
// before (a healer restart, a reboot). Specs that are not local S3 gateways
// are ignored. A gateway already answering on its port is left alone.
func (l *Local) Resume(ctx context.Context, specs []backends.Spec) error {
	if l.cfg.S3 == nil {
		return nil
	}
	var errs []error
	for _, spec := range specs {
		if spec.Kind != backends.KindS3 {
			continue
		}
		dir := filepath.Join(l.cfg.Dir, spec.Name)
		raw, err := os.ReadFile(filepath.Join(dir, "server.json"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("resume %s: %w", spec.Name, err))
			continue
		}
		var st serverState
		if err := json.Unmarshal(raw, &st); err != nil {
			errs = append(errs, fmt.Errorf("resume %s: server.json: %w", spec.Name, err))
			continue
		}
		l.mu.Lock()
		_, running := l.procs[spec.Name]
		l.mu.Unlock()
		if running || dialable(fmt.Sprintf("127.0.0.1:%d", st.Port)) {
			continue
		}
		secret, err := os.ReadFile(filepath.Join(dir, "secret"))
		if err != nil {
			errs = append(errs, fmt.Errorf("resume %s: %w", spec.Name, err))
			continue
		}
		if err := l.startGateway(ctx, spec.Name, dir, &st, strings.TrimSpace(string(secret)), false); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("local provisioner: %w", errors.Join(errs...))
	}
	return nil
}

// Stop stops the gateway serving one backend (a test's way to kill it); the
// data stays. Resume starts it again.
func (l *Local) Stop(name string) { l.stop(name) }

// Close stops every gateway this Local started; data stays on disk.
func (l *Local) Close() error {
	l.mu.Lock()
	names := make([]string, 0, len(l.procs))
	for n := range l.procs {
		names = append(names, n)
	}
	l.mu.Unlock()
	for _, n := range names {
		l.stop(n)
	}
	return nil
}

func (l *Local) stop(name string) {
	l.mu.Lock()
	g := l.procs[name]
	delete(l.procs, name)
	l.mu.Unlock()
	if g != nil {
		g.halt()
	}
}

// startGateway runs the gateway on dir/data. With fresh set it picks a
// port, records server.json and the secret, and creates the bucket.
func (l *Local) startGateway(ctx context.Context, name, dir string, st *serverState, secret string, fresh bool) error {
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return fmt.Errorf("local provisioner: %w", err)
	}
	if fresh {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("local provisioner: %w", err)
		}
		st.Port = port
	}
	addr := fmt.Sprintf("127.0.0.1:%d", st.Port)
	logf, err := os.OpenFile(filepath.Join(dir, "gateway.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("local provisioner: %w", err)
	}
	defer logf.Close()
	// The secret goes through the environment, never the argument list,
	// so it does not show in ps.
	cmd := exec.Command(l.cfg.S3.Binary, "--port", addr, "--quiet", "posix", data)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+st.AccessKey, "ROOT_SECRET_KEY="+secret)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The gateway dies with the healer rather than outliving it on the port.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("local provisioner: start s3 gateway for %s: %w", name, err)
	}
	g := &gateway{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(g.done) }()
	deadline := time.Now().Add(l.cfg.S3.StartTimeout)
	for !dialable(addr) {
		select {
		case <-g.done:
			return fmt.Errorf("local provisioner: s3 gateway for %s exited at start (see %s)", name, filepath.Join(dir, "gateway.log"))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			g.halt()
			return fmt.Errorf("local provisioner: s3 gateway for %s did not listen on %s within %s (see %s)",
				name, addr, l.cfg.S3.StartTimeout, filepath.Join(dir, "gateway.log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.mu.Lock()
	l.procs[name] = g
	l.mu.Unlock()
	if !fresh {
		return nil
	}
	if err := writeFile0600(filepath.Join(dir, "secret"), []byte(secret+"\n")); err != nil {
		l.stop(name)
		return err
	}
	raw, _ := json.Marshal(st)
	if err := writeFile0600(filepath.Join(dir, "server.json"), raw); err != nil {
		l.stop(name)
		return err
	}
	cl, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(st.AccessKey, secret, ""), Region: st.Region})
	if err != nil {
		l.stop(name)
		return fmt.Errorf("local provisioner: s3 client for %s: %w", name, err)
	}
	mctx, cancel := context.WithTimeout(ctx, l.cfg.S3.StartTimeout)
	defer cancel()
	if err := cl.MakeBucket(mctx, s3Bucket, minio.MakeBucketOptions{Region: st.Region}); err != nil {
		l.stop(name)
		return fmt.Errorf("local provisioner: create bucket on %s: %v", addr, redact(err, secret))
	}
	return nil
}

// halt asks the gateway to stop and kills it if it lingers.
func (g *gateway) halt() {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(5 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
	}
}

func writeFile0600(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("local provisioner: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("local provisioner: %w", err)
	}
	return nil
}

// redact keeps a secret out of an error message whatever the client put in it.
func redact(err error, secret string) string {
	s := err.Error()
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	return s
}

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("local provisioner: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// sanitize keeps a name hint within backend-name characters.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		}
	}
	out := strings.TrimLeft(b.String(), "-_.")
	if len(out) > 48 {
		out = out[:48]
	}
	return out
}
