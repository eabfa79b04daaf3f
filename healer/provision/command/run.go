package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// stderrTail is how much of the program's stderr an error keeps: enough
// for the last few diagnostic lines, not a whole log.
const stderrTail = 2048

// run starts the program with the request on stdin and returns its stdout.
// secret, when known, is masked in any stderr text that reaches the error.
func (p *Provisioner) run(ctx context.Context, req request, secret string) ([]byte, error) {
	in, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("command provisioner: encoding %s request: %w", req.Action, err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()

	args := append(p.cfg.Command[1:len(p.cfg.Command):len(p.cfg.Command)], req.Action)
	cmd := exec.CommandContext(ctx, p.cfg.Command[0], args...)
	cmd.Dir = p.cfg.Dir
	cmd.Env = append(os.Environ(), p.cfg.Env...)
	cmd.Env = append(cmd.Env, "HEALSTORE_ACTION="+req.Action)
	cmd.Stdin = bytes.NewReader(in)
	stdout := &capped{max: maxStdout}
	stderr := &tail{max: stderrTail}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// The program usually starts others (tfcmd, curl, aws); a timeout must
	// kill all of them, so it runs in its own process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A grandchild that keeps our pipes open must not hold Wait forever.
	cmd.WaitDelay = 5 * time.Second

	runErr := cmd.Run()
	name := p.cfg.Command[0]
	if runErr != nil {
		diag := redact(stderr.String(), secret)
		if diag != "" {
			diag = "; stderr: " + diag
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("%w: %s %s: stopped after %v: %w%s", ErrFailed, name, req.Action, p.cfg.Timeout, ctxErr, diag)
		}
		var exit *exec.ExitError
		if errors.As(runErr, &exit) {
			return nil, fmt.Errorf("%w: %s %s: %v%s", ErrFailed, name, req.Action, exit.ProcessState, diag)
		}
		return nil, fmt.Errorf("%w: %s %s: %w", ErrFailed, name, req.Action, runErr)
	}
	if stdout.over {
		return nil, fmt.Errorf("%w: stdout is longer than %d bytes; print only the spec", ErrBadOutput, maxStdout)
	}
	return stdout.buf.Bytes(), nil
}

// capped keeps at most max bytes and remembers that more came.
type capped struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (c *capped) Write(b []byte) (int, error) {
	if room := c.max - c.buf.Len(); len(b) > room {
		c.over = true
		c.buf.Write(b[:max(room, 0)])
		return len(b), nil
	}
	return c.buf.Write(b)
}

// tail keeps the last max bytes written.
type tail struct {
	buf []byte
	max int
	cut bool
}

func (t *tail) Write(b []byte) (int, error) {
	t.buf = append(t.buf, b...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
		t.cut = true
	}
	return len(b), nil
}

// String returns the kept text. After a cut the first line is partial
// (maybe the second half of a secret whose label was cut off), so it goes.
func (t *tail) String() string {
	s := string(t.buf)
	if t.cut {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			return s[i+1:]
		}
		return ""
	}
	return s
}

var (
	// "password": "x", "secret_key":"x" (JSON, as tfcmd get prints it)
	jsonSecretRE = regexp.MustCompile(`(?i)("[a-z_]*(?:password|secret)[a-z_]*"\s*:\s*)"(?:[^"\\]|\\.)*"`)
	// --password x, --password=x
	flagSecretRE = regexp.MustCompile(`(?i)(--?[a-z_-]*(?:password|secret)[a-z_-]*(?:=|\s+))[^\s"']+`)
	// password=x, SECRET_KEY: x
	assignSecretRE = regexp.MustCompile(`(?i)(\b[a-z_]*(?:password|secret)[a-z_]*\s*[=:]\s*)[^\s"',}]+`)
)

// redact masks secrets in diagnostic text and trims it to the last lines.
// It cannot know every secret a program might print, so the protocol also
// tells programs to keep secrets off stderr; this catches the usual forms.
func redact(s, secret string) string {
	s = strings.ToValidUTF8(s, "?")
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	s = jsonSecretRE.ReplaceAllString(s, `${1}"[redacted]"`)
	s = flagSecretRE.ReplaceAllString(s, `${1}[redacted]`)
	s = assignSecretRE.ReplaceAllString(s, `${1}[redacted]`)
	s = strings.TrimSpace(s)
	if lines := strings.Split(s, "\n"); len(lines) > 8 {
		s = strings.Join(lines[len(lines)-8:], "\n")
	}
	return s
}
