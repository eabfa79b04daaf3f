package main

// This file holds the root command and what every command shares.
//
// For command files: build the command in a newXxxCmd(g *globalOptions)
// function with its own options struct (no package-level flag variables),
// validate in PreRunE, register it in newRootCmd, and get a store with
//
//	s, cfg, err := openStore(cmd, g)   // then: defer s.Close()
//
// openStore resolves --config (else $HEALSTORE_CONFIG, else ./healstore.toml),
// loads and validates the file, sets up logging from --log-level, opens the
// store (waiting up to lockWait while another command holds its embedded
// metastore: lockwait.go) and warns on stderr about backends it cannot reach. Its errors are
// already worded for users and map to the documented exit codes.
// Write results to g.stdout, diagnostics and progress to g.stderr.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/fuse"
)

// Exit codes.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2 // bad flags or arguments, bad or missing config
	exitNotFound = 3 // the named object does not exist
)

const exitCodesHelp = `Exit codes:
  0  success
  1  error (backends unreachable, too few backends reachable, I/O failure, ...)
  2  usage error or bad config (including a policy that needs more backends
     or failure domains than the store has)
  3  object not found (also: a named backend)`

// globalOptions are the persistent flags and the streams commands use.
type globalOptions struct {
	configPath string
	logLevel   string

	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// usageError marks errors that exit with exitUsage.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// notFoundError marks errors that exit with exitNotFound: a thing the
// user named (a backend) does not exist.
type notFoundError struct{ err error }

func (e *notFoundError) Error() string { return e.err.Error() }
func (e *notFoundError) Unwrap() error { return e.err }

// reportedError is an error a command already printed (rm prints each
// missing name as it goes): run sets the exit code from it without
// printing it again.
type reportedError struct{ err error }

func (e *reportedError) Error() string { return e.err.Error() }
func (e *reportedError) Unwrap() error { return e.err }

// checkNames refuses empty object names before any store is opened.
func checkNames(cmd *cobra.Command, names ...string) error {
	for _, n := range names {
		if n == "" {
			return usagef("%s: NAME is empty (\"\"); an object name needs at least one character", cmd.CommandPath())
		}
		if err := healstore.CheckName(n); err != nil {
			return usagef("%s: %v", cmd.CommandPath(), err)
		}
	}
	return nil
}

// checkWritableNames is checkNames for commands that change objects: the
// blocks of a mount's files (under fuse.ObjectPrefix) are changed
// through the mount only, or the file they belong to changes underneath it.
func checkWritableNames(cmd *cobra.Command, names ...string) error {
	if err := checkNames(cmd, names...); err != nil {
		return err
	}
	if f := cmd.Flags().Lookup("fs-blocks"); f != nil && f.Value.String() == "true" {
		return nil
	}
	for _, n := range names {
		if mountBlockName.MatchString(n) {
			hint := "change those files through the mount"
			if cmd.Flags().Lookup("fs-blocks") != nil {
				hint += " (--fs-blocks removes them anyway, for a filesystem no mount uses any more)"
			}
			return usagef("%s: %q names a block of a file of healstore mount; %s", cmd.CommandPath(), n, hint)
		}
	}
	return nil
}

// mountBlockName matches the names healstore mount gives its files' blocks
// (fs/<filesystem>/<inode as 16 hex>/<block as 16 hex>), and every name
// the mount would take for one: a truncate deletes any object under an
// inode whose last part parses as a hex block number.
var mountBlockName = regexp.MustCompile(`^` + regexp.QuoteMeta(fuse.ObjectPrefix) + `[^/]+/[0-9a-f]{16}/[0-9a-fA-F]+$`)

// argsBetween accepts min..max positional arguments (max < 0: no limit).
func argsBetween(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < min:
			return usagef("%s: needs at least %d argument(s), got %d (see --help)", cmd.CommandPath(), min, len(args))
		case max >= 0 && len(args) > max:
			return usagef("%s: takes at most %d argument(s), got %d (see --help)", cmd.CommandPath(), max, len(args))
		}
		return nil
	}
}

func newRootCmd(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:   "healstore",
		Short: "Self-healing erasure-coded storage",
		Long: `healstore cuts data into Reed-Solomon stripes, spreads the shards over backends
in separate failure domains, and heals lost redundancy by itself.

Start with:
  healstore init ./store
  export HEALSTORE_CONFIG=$PWD/store/healstore.toml
  healstore put hello ./file.txt
  healstore get hello -

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "config file (default: $HEALSTORE_CONFIG, else ./healstore.toml)")
	pf.StringVar(&g.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{fmt.Errorf("%s: %w (see --help)", cmd.CommandPath(), err)}
	})
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.SetIn(g.stdin)
	root.AddCommand(
		newInitCmd(g),
		newPutCmd(g),
		newGetCmd(g),
		newLsCmd(g),
		newRmCmd(g),
		newStatCmd(g),
		newBenchCmd(g),
		newDaemonCmd(g),
		newStatusCmd(g),
		newHealCmd(g),
		newScrubCmd(g),
		newBackendCmd(g),
		newDemoCmd(g),
		newMountCmd(g),
		newUmountCmd(g),
		newRecoverCmd(g),
	)
	return root
}

// run executes the CLI and returns the process exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globalOptions{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCmd(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var re *reportedError
	if !errors.As(err, &re) {
		fmt.Fprintln(stderr, errorLine(err))
	}
	return exitCode(err)
}

// errorLine is how run prints a command's error: with one "healstore"
// prefix. Errors that name the command (cmd.CommandPath(): "healstore
// put: ...") have theirs already.
func errorLine(err error) string {
	msg := err.Error()
	if strings.HasPrefix(msg, "healstore ") || strings.HasPrefix(msg, "healstore:") {
		return msg
	}
	return "healstore: " + msg
}

func exitCode(err error) int {
	var ue *usageError
	var nf *notFoundError
	var ib *healstore.InsufficientBackendsError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, healstore.ErrNotFound), errors.As(err, &nf):
		return exitNotFound
	case errors.As(err, &ue), errors.Is(err, healstore.ErrBadConfig), errors.Is(err, healstore.ErrInitRefused):
		return exitUsage
	case errors.As(err, &ib) && ib.Op == "open":
		// Open counts the backends the store has (reachable or not)
		// against the policy's k+m: the config asks for what the store
		// cannot do. Too few reachable fails later, at a read or write.
		return exitUsage
	case strings.HasPrefix(err.Error(), "unknown command"), strings.HasPrefix(err.Error(), "unknown flag"):
		return exitUsage
	}
	return exitError
}

// configPath resolves which config file a command uses.
func (g *globalOptions) resolveConfig() string {
	if g.configPath != "" {
		return g.configPath
	}
	if p := os.Getenv("HEALSTORE_CONFIG"); p != "" {
		return p
	}
	return healstore.ConfigFileName
}

func (g *globalOptions) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usagef("--log-level %q: use debug, info, warn or error", g.logLevel)
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl})), nil
}

// loadConfig loads the config file with a helpful message when it is
// missing.
func loadConfig(g *globalOptions) (*healstore.Config, error) {
	path := g.resolveConfig()
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, &healstore.ConfigError{File: path,
			Msg: "no such file; create a store with `healstore init DIR`, then pass --config DIR/healstore.toml or set HEALSTORE_CONFIG"}
	}
	cfg, err := healstore.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	log, err := g.logger()
	if err != nil {
		return nil, err
	}
	cfg.Logger = log
	return cfg, nil
}

// openStore loads the config and opens the store (see the comment at the
// top of this file). The caller closes the store.
func openStore(cmd *cobra.Command, g *globalOptions) (*healstore.Store, *healstore.Config, error) {
	s, cfg, _, err := openStoreTimed(cmd, g)
	return s, cfg, err
}

// openStoreTimed is openStore, and says how long opening the store took
// (its backends' probes; not a wait for the metadata another command
// held).
func openStoreTimed(cmd *cobra.Command, g *globalOptions) (*healstore.Store, *healstore.Config, time.Duration, error) {
	cfg, err := loadConfig(g)
	if err != nil {
		return nil, nil, 0, err
	}
	var took time.Duration
	s, err := openWaiting(cmd.Context(), g, cmd.CommandPath(), cfg, "", func(ctx context.Context, cfg *healstore.Config) (*healstore.Store, error) {
		start := time.Now()
		defer func() { took = time.Since(start) }()
		return healstore.Open(ctx, cfg)
	})
	if err != nil {
		return nil, nil, 0, openError(cfg, err)
	}
	for _, u := range s.Unreachable() {
		fmt.Fprintf(g.stderr, "healstore: warning: backend %s is unreachable: %s\n", u.Name, u.Error)
	}
	return s, cfg, took, nil
}

// openError words an error of opening the store for the user.
func openError(cfg *healstore.Config, err error) error {
	var le *lockedError
	if errors.Is(err, healstore.ErrBadConfig) || errors.As(err, &le) {
		return err // already names the file, or the command
	}
	return fmt.Errorf("open store (%s): %w", cfg.Path(), err)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progressMin is the transfer size from which progress is shown.
const progressMin = 8 << 20

// progress prints a transfer's progress on a terminal, at most every
// 200ms, on one line. A nil *progress does nothing.
type progress struct {
	w     io.Writer
	what  string
	total int64 // -1 when unknown
	done  int64
	start time.Time
	last  time.Time
}

// newProgress returns a progress meter on g.stderr when it is a terminal
// and the transfer is large (or of unknown size); else nil.
func newProgress(g *globalOptions, what string, total int64) *progress {
	if !isTerminal(g.stderr) || (total >= 0 && total < progressMin) {
		return nil
	}
	now := time.Now()
	return &progress{w: g.stderr, what: what, total: total, start: now, last: now}
}

func (p *progress) add(n int) {
	if p == nil {
		return
	}
	p.done += int64(n)
	if now := time.Now(); now.Sub(p.last) >= 200*time.Millisecond {
		p.last = now
		p.print(false)
	}
}

func (p *progress) finish() {
	if p != nil {
		p.print(true)
	}
}

func (p *progress) print(final bool) {
	secs := time.Since(p.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(p.done) / secs
	}
	line := fmt.Sprintf("\r%s %s", p.what, humanBytes(p.done))
	if p.total >= 0 {
		pct := 100.0
		if p.total > 0 {
			pct = 100 * float64(p.done) / float64(p.total)
		}
		line += fmt.Sprintf(" / %s (%3.0f%%)", humanBytes(p.total), pct)
	}
	line += fmt.Sprintf("  %s/s   ", humanBytes(int64(rate)))
	if final {
		line += "\n"
	}
	io.WriteString(p.w, line)
}

// progressReader counts bytes read through it.
type progressReader struct {
	r io.Reader
	p *progress
}

func (r progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.p.add(n)
	return n, err
}

// progressWriter counts bytes written through it.
type progressWriter struct {
	w io.Writer
	p *progress
}

func (w progressWriter) Write(b []byte) (int, error) {
	n, err := w.w.Write(b)
	w.p.add(n)
	return n, err
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
