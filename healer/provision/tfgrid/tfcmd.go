package tfgrid

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// tfcmd runs the grid's command-line client. Its output (stdout and
// stderr, where tfcmd logs) is never logged: `tfcmd get zdb` prints the
// namespace password.
type tfcmd struct {
	path    string
	env     []string
	timeout time.Duration
}

// maxOutput caps what one tfcmd run may print; a zdb deployment is ~1 KB.
const maxOutput = 4 << 20

// CommandError is a tfcmd run that failed. Output is the last lines of
// what tfcmd printed, with the namespace password masked.
type CommandError struct {
	Args   string // subcommand and project, e.g. "deploy zdb hs0a1b2c3d"
	Status string // exit status, or why it did not finish
	Output string
	Err    error // underlying cause (exec or context error)
}

func (e *CommandError) Error() string {
	s := "tfcmd " + e.Args + ": " + e.Status
	if e.Output != "" {
		s += ": " + e.Output
	}
	return s
}

func (e *CommandError) Unwrap() error { return e.Err }

// run executes tfcmd with args. what names the call in errors (never the
// args, which may hold the password); secret is masked in error output.
func (t tfcmd) run(ctx context.Context, what string, args []string, secret string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, t.path, args...)
	cmd.Env = append(os.Environ(), t.env...)
	out := &capBuf{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// tfcmd is one process today, but a wrapper script may start more; a
	// timeout kills the whole group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err == nil {
		return out.buf.Bytes(), nil
	}
	ce := &CommandError{Args: what, Err: err, Output: redactOutput(out.buf.Bytes(), secret)}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		ce.Status = fmt.Sprintf("stopped after %v", t.timeout)
		ce.Err = errors.Join(ctx.Err(), err)
	case errors.As(err, &exit):
		ce.Status = exit.ProcessState.String()
	default:
		ce.Status = "could not run " + t.path
	}
	return nil, ce
}

// capBuf keeps the first max bytes written.
type capBuf struct {
	buf bytes.Buffer
	max int
}

func (c *capBuf) Write(b []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}

var jsonPasswordRE = regexp.MustCompile(`(?i)("password"\s*:\s*)"(?:[^"\\]|\\.)*"`)

// redactOutput masks the password and keeps the last few lines, which
// carry tfcmd's error message.
func redactOutput(out []byte, secret string) string {
	s := strings.ToValidUTF8(string(out), "?")
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	s = jsonPasswordRE.ReplaceAllString(s, `${1}"[redacted]"`)
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 4 {
		lines = lines[len(lines)-4:]
	}
	s = strings.Join(lines, " | ")
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return s
}

// zdbDeployment is the JSON `tfcmd get zdb NAME` prints (grid-cli's
// workloads.Deployment); only the fields healstore uses.
type zdbDeployment struct {
	Name       string        `json:"Name"`
	NodeID     uint64        `json:"NodeID"`
	ContractID uint64        `json:"ContractID"`
	Zdbs       []zdbWorkload `json:"Zdbs"`
}

type zdbWorkload struct {
	Name      string   `json:"name"`
	Password  string   `json:"password"`
	Size      int      `json:"size"`
	Mode      string   `json:"mode"`
	IPs       []string `json:"ips"`
	Port      uint32   `json:"port"`
	Namespace string   `json:"namespace"`
}

// parseGetZDB finds the deployment JSON in tfcmd's output. tfcmd logs it
// as a multi-line message after a timestamp and "zdb:", so the JSON starts
// at the first '{' after that marker. Errors never quote the output.
func parseGetZDB(out []byte) (zdbDeployment, error) {
	start := 0
	if i := bytes.Index(out, []byte("zdb:")); i >= 0 {
		start = i + len("zdb:")
	}
	j := bytes.IndexByte(out[start:], '{')
	if j < 0 {
		return zdbDeployment{}, errors.New("no JSON object in tfcmd get zdb output")
	}
	var d zdbDeployment
	dec := json.NewDecoder(bytes.NewReader(out[start+j:]))
	if err := dec.Decode(&d); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return zdbDeployment{}, fmt.Errorf("tfcmd get zdb output: JSON syntax error near byte %d", syn.Offset)
		}
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			return zdbDeployment{}, fmt.Errorf("tfcmd get zdb output: field %s has an unexpected type", typ.Field)
		}
		return zdbDeployment{}, errors.New("tfcmd get zdb output: JSON object is incomplete")
	}
	if len(d.Zdbs) == 0 {
		return zdbDeployment{}, errors.New("tfcmd get zdb output lists no zdb")
	}
	return d, nil
}

// Address families a namespace can be reached by.
const (
	FamilyIPv6     = "ipv6"     // public IPv6
	FamilyYgg      = "ygg"      // Yggdrasil, 200::/7
	FamilyMycelium = "mycelium" // Mycelium, 400::/7
	FamilyIPv4     = "ipv4"
	// FamilyLoopback is never offered by a grid node; a local stand-in of
	// the grid (tests, demos) offers only it, so it is tried last.
	FamilyLoopback = "loopback"
)

var (
	yggPrefix      = netip.MustParsePrefix("200::/7")
	myceliumPrefix = netip.MustParsePrefix("400::/7")
	globalPrefix   = netip.MustParsePrefix("2000::/3")
)

// family classifies an address; "" for ones no client can use (private,
// link-local, unparsable).
func family(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return FamilyLoopback
	case ip.Is4():
		if ip.IsGlobalUnicast() && !ip.IsPrivate() {
			return FamilyIPv4
		}
	case yggPrefix.Contains(ip):
		return FamilyYgg
	case myceliumPrefix.Contains(ip):
		return FamilyMycelium
	case globalPrefix.Contains(ip):
		return FamilyIPv6
	}
	return ""
}

// chooseAddress returns host:port for the namespace, trying the preferred
// family first and then public IPv6, Mycelium, Yggdrasil, IPv4. fellBack
// reports that the preferred family was not offered. Loopback comes last.
func chooseAddress(ips []string, port uint32, prefer string) (addr, fam string, fellBack bool, err error) {
	if port == 0 || port > 65535 {
		return "", "", false, fmt.Errorf("zdb port %d is invalid", port)
	}
	byFam := map[string]netip.Addr{}
	for _, s := range ips {
		ip, perr := netip.ParseAddr(strings.TrimSpace(s))
		if perr != nil {
			continue
		}
		if f := family(ip); f != "" {
			if _, dup := byFam[f]; !dup {
				byFam[f] = ip.Unmap()
			}
		}
	}
	order := []string{FamilyIPv6, FamilyMycelium, FamilyYgg, FamilyIPv4, FamilyLoopback}
	if prefer != "" {
		order = append([]string{prefer}, order...)
	}
	for i, f := range order {
		if ip, ok := byFam[f]; ok {
			return netip.AddrPortFrom(ip, uint16(port)).String(), f, prefer != "" && i > 0, nil
		}
	}
	return "", "", false, fmt.Errorf("zdb offers no usable address (%d listed)", len(ips))
}

// deployArgs builds `tfcmd deploy zdb`. The password has to be on the
// command line (tfcmd reads it nowhere else); it is never logged.
func deployArgs(project string, sizeGB int, node uint64, password string) []string {
	return []string{"deploy", "zdb",
		"--project_name", project,
		"--size", strconv.Itoa(sizeGB),
		"--node", strconv.FormatUint(node, 10),
		"--password", password,
		"--mode", "user",
	}
}
