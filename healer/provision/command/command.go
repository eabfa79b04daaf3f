package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer/provision"
)

// Actions passed to the program as its last argument, in HEALSTORE_ACTION
// and in the request's "action" field.
const (
	ActionProvision = "provision"
	ActionRelease   = "release"
)

// DefaultTimeout bounds one run of the program. Creating storage on a grid
// or a cloud can take minutes; a hung program must not stall the healer.
const DefaultTimeout = 10 * time.Minute

// maxStdout caps what the program may print: a spec is a few hundred
// bytes, so anything near this is a runaway program, not a spec.
const maxStdout = 1 << 20

var (
	// ErrFailed: the program exited non-zero, was killed, or could not
	// be started.
	ErrFailed = errors.New("provisioning command failed")
	// ErrBadOutput: the program exited 0 but did not print one usable
	// backend spec. The error says what was wrong, never what was printed.
	ErrBadOutput = errors.New("provisioning command printed no usable backend spec")
	// ErrConstraint: the printed backend breaks the request (a failure
	// domain the stripe set already uses, or too small). healstore asked
	// the program to release it again.
	ErrConstraint = errors.New("provisioned backend breaks the constraints")
)

// Config configures the command provisioner.
type Config struct {
	// Command is the program and its leading arguments; the action is
	// appended. Command[0] is looked up in PATH when it has no slash.
	Command []string `toml:"command" json:"command"`
	// Env holds extra NAME=value entries added to healstore's environment.
	Env []string `toml:"env,omitempty" json:"env,omitempty"`
	// Dir is the working directory; empty means healstore's.
	Dir string `toml:"dir,omitempty" json:"dir,omitempty"`
	// Timeout bounds one run; 0 means DefaultTimeout.
	Timeout time.Duration `toml:"-" json:"-"`
	// Verify, when set, checks a freshly printed backend before Provision
	// returns it (for example: open it and write a probe key). When it
	// fails the backend is released and Provision fails.
	Verify func(ctx context.Context, spec backends.Spec, secret string) error `toml:"-" json:"-"`
}

// Provisioner runs the configured program. It is safe for concurrent use;
// each call runs its own process.
type Provisioner struct {
	cfg Config
	log *slog.Logger
}

var _ provision.Provisioner = (*Provisioner)(nil)

// New checks cfg and returns a provisioner. log may be nil (discard).
func New(cfg Config, log *slog.Logger) (*Provisioner, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, errors.New("command provisioner: command is empty")
	}
	for _, e := range cfg.Env {
		if !strings.Contains(e, "=") {
			return nil, fmt.Errorf("command provisioner: env entry %q is not NAME=value", envName(e))
		}
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("command provisioner: timeout %v is negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Command = slices.Clone(cfg.Command)
	cfg.Env = slices.Clone(cfg.Env)
	return &Provisioner{cfg: cfg, log: log.With("provisioner", "command")}, nil
}

// envName returns the part before '=' so a value (maybe a secret) never
// reaches an error message.
func envName(e string) string {
	name, _, _ := strings.Cut(e, "=")
	if len(name) > 40 {
		name = name[:40] + "..."
	}
	return name
}

// Name implements provision.Provisioner.
func (p *Provisioner) Name() string { return "command" }

// constraintsJSON is the wire form of provision.Constraints; the wire
// names are fixed here so renaming a Go field never breaks user scripts.
type constraintsJSON struct {
	AvoidDomains []string `json:"avoid_domains"`
	Level        string   `json:"level"`
	MinSize      int64    `json:"min_size"`
	NameHint     string   `json:"name_hint"`
}

type request struct {
	Action      string           `json:"action"`
	Constraints *constraintsJSON `json:"constraints,omitempty"`
	Spec        *backends.Spec   `json:"spec,omitempty"`
}

// reply is what the program prints: a spec plus the optional secret.
type reply struct {
	backends.Spec
	Secret string `json:"secret"`
}

// Provision implements provision.Provisioner.
func (p *Provisioner) Provision(ctx context.Context, c provision.Constraints) (backends.Spec, string, error) {
	avoid := c.AvoidDomains
	if avoid == nil {
		avoid = []string{}
	}
	req := request{Action: ActionProvision, Constraints: &constraintsJSON{
		AvoidDomains: avoid, Level: c.Level, MinSize: c.MinSize, NameHint: c.NameHint,
	}}
	log := p.log.With("action", ActionProvision, "name_hint", c.NameHint)
	log.Info("running provisioning command", "avoid_domains", len(avoid), "min_size", c.MinSize)
	start := time.Now()
	out, err := p.run(ctx, req, "")
	if err != nil {
		log.Warn("provisioning command failed", "err", err, "elapsed", time.Since(start).Round(time.Millisecond))
		return backends.Spec{}, "", err
	}
	spec, secret, err := parseReply(out)
	if err != nil {
		log.Warn("provisioning command output rejected", "err", err)
		return backends.Spec{}, "", err
	}
	log = log.With("backend", spec.Name, "kind", spec.Kind)
	if err := checkConstraints(spec, c); err != nil {
		log.Warn("provisioned backend rejected, releasing it", "err", err)
		p.releaseAfterReject(ctx, spec, log)
		return backends.Spec{}, "", err
	}
	if p.cfg.Verify != nil {
		if err := p.cfg.Verify(ctx, spec, secret); err != nil {
			err = fmt.Errorf("command provisioner: backend %s failed verification: %w", spec.Name, err)
			log.Warn("provisioned backend failed verification, releasing it", "err", err)
			p.releaseAfterReject(ctx, spec, log)
			return backends.Spec{}, "", err
		}
	}
	log.Info("backend provisioned", "address", spec.Address, "domain", spec.Domain(levelOr(c.Level)),
		"elapsed", time.Since(start).Round(time.Millisecond))
	return spec, secret, nil
}

// releaseAfterReject gives back a backend the program created but healstore
// will not use, so nothing is left running (and billed) unnoticed. It
// outlives ctx: a cancelled Provision must still clean up.
func (p *Provisioner) releaseAfterReject(ctx context.Context, spec backends.Spec, log *slog.Logger) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Timeout)
	defer cancel()
	if err := p.Release(rctx, spec); err != nil {
		log.Error("releasing rejected backend failed; it may still exist", "err", err)
	}
}

// Release implements provision.Provisioner.
func (p *Provisioner) Release(ctx context.Context, spec backends.Spec) error {
	log := p.log.With("action", ActionRelease, "backend", spec.Name, "kind", spec.Kind)
	log.Info("running release command")
	start := time.Now()
	if _, err := p.run(ctx, request{Action: ActionRelease, Spec: &spec}, ""); err != nil {
		log.Warn("release command failed", "err", err)
		return err
	}
	log.Info("backend released", "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

func levelOr(level string) string {
	if level == "" {
		return "node"
	}
	return level
}

// checkConstraints refuses a backend that would break invariant 4 (a
// domain the stripe set already uses) or that is known to be too small.
func checkConstraints(spec backends.Spec, c provision.Constraints) error {
	level := levelOr(c.Level)
	dom := spec.Domain(level)
	if slices.Contains(c.AvoidDomains, dom) {
		return fmt.Errorf("%w: backend %s is in failure domain %s, which is already used", ErrConstraint, spec.Name, dom)
	}
	if c.MinSize > 0 && spec.Quota > 0 && spec.Quota < c.MinSize {
		return fmt.Errorf("%w: backend %s has quota %d bytes, at least %d were asked for", ErrConstraint, spec.Name, spec.Quota, c.MinSize)
	}
	return nil
}

// parseReply decodes the program's stdout. Errors describe the problem
// (position, field name, expected type) and never quote the output, which
// may hold the secret.
func parseReply(out []byte) (backends.Spec, string, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadOutput, fmt.Sprintf(format, args...))
	}
	trimmed := bytes.TrimSpace(out)
	if len(trimmed) == 0 {
		return backends.Spec{}, "", bad("stdout is empty; expected one JSON object")
	}
	if trimmed[0] != '{' {
		return backends.Spec{}, "", bad("stdout does not start with a JSON object (first byte at offset %d is not '{'); print only the spec on stdout, diagnostics on stderr", len(out)-len(bytes.TrimLeft(out, " \t\r\n")))
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var r reply
	if err := dec.Decode(&r); err != nil {
		return backends.Spec{}, "", bad("%s", describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return backends.Spec{}, "", bad("stdout holds more than one JSON value; print exactly one spec object")
	}
	spec := r.Spec
	if err := spec.Validate(); err != nil {
		// Validate names fields and values of the spec, which holds no
		// secret (the secret travels in its own field).
		return backends.Spec{}, "", bad("%v", err)
	}
	if r.Secret != "" && spec.SecretRef == "" {
		// The caller stores the secret under SecretRef; one entry per
		// backend, named after it, is the obvious default.
		spec.SecretRef = spec.Name
	}
	return spec, r.Secret, nil
}

// jsonKind names a Go kind as the JSON type a script author would write.
func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "boolean"
	case reflect.String:
		return "string"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	}
	return "number"
}

// describeJSONError turns a decoding error into text that names the field
// or position but never echoes input bytes (json.SyntaxError's message
// quotes the offending character, which may belong to a secret).
func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("stdout is not valid JSON (syntax error near byte %d)", syn.Offset)
	case errors.As(err, &typ):
		field := strings.TrimPrefix(typ.Field, "Spec.")
		if field == "" {
			return "stdout must be a JSON object, not " + typ.Value
		}
		return fmt.Sprintf("field %q must be a JSON %s, not %s", field, jsonKind(typ.Type.Kind()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "stdout ends in the middle of the JSON object"
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		hint := ""
		if name := strings.Trim(rest, `"`); slices.Contains([]string{"password", "secret_key", "secretkey", "secret_access_key"}, strings.ToLower(name)) {
			hint = ` (put the password or secret key in "secret")`
		}
		return "unknown field " + rest + hint + "; allowed: the fields of a backend spec plus \"secret\""
	}
	return "stdout is not a usable JSON object"
}
