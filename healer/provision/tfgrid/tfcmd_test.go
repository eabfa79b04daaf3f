package tfgrid

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fakeTfcmd(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("testdata/tfcmd")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeOutput runs the fake tfcmd to get output shaped like the real one.
func fakeGetOutput(t *testing.T, env ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	run := func(args ...string) []byte {
		cmd := exec.Command(fakeTfcmd(t), args...)
		cmd.Env = append(os.Environ(), append([]string{"FAKE_TFCMD_DIR=" + dir}, env...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fake tfcmd %v: %v\n%s", args, err, out)
		}
		return out
	}
	run("deploy", "zdb", "--project_name", "hsabc", "--size", "10", "--node", "11", "--password", "pw-123", "--mode", "user")
	return run("get", "zdb", "hsabc")
}

func TestParseGetZDB(t *testing.T) {
	out := fakeGetOutput(t, "FAKE_TFCMD_IPS=2a10:b600:1:0:c4be:94ff:feb1:8b3f,302:9e63:7d43:b742:469d:3ec2:ab15:f75e")
	d, err := parseGetZDB(out)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "hsabc" || d.NodeID != 11 || d.ContractID == 0 || len(d.Zdbs) != 1 {
		t.Fatalf("deployment = %+v", d)
	}
	z := d.Zdbs[0]
	if z.Name != "hsabc0" || z.Password != "pw-123" || z.Port != 9900 || z.Size != 10 || z.Mode != "user" ||
		!strings.HasSuffix(z.Namespace, "-hsabc0") || len(z.IPs) != 2 {
		t.Errorf("zdb = %+v", z)
	}
}

func TestParseGetZDBDocumentedExample(t *testing.T) {
	// The example of tfgrid-sdk-go grid-cli/docs/zdb.md, two namespaces
	// in one deployment, with the log prefix tfcmd prints.
	out := `3:20PM INF zdb:
{
        "Name": "examplezdb",
        "NodeID": 11,
        "SolutionType": "examplezdb",
        "SolutionProvider": null,
        "NetworkName": "",
        "Disks": [],
        "Zdbs": [
                {
                        "name": "examplezdb1",
                        "password": "password",
                        "public": false,
                        "size": 10,
                        "description": "",
                        "mode": "user",
                        "ips": [
                                "2a10:b600:1:0:c4be:94ff:feb1:8b3f",
                                "302:9e63:7d43:b742:469d:3ec2:ab15:f75e"
                        ],
                        "port": 9900,
                        "namespace": "81-36155-examplezdb1"
                }
        ],
        "Vms": [],
        "QSFS": [],
        "NodeDeploymentID": {
                "11": 36155
        },
        "ContractID": 36155,
        "IPrange": ""
}
`
	d, err := parseGetZDB([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if d.ContractID != 36155 || d.Zdbs[0].Namespace != "81-36155-examplezdb1" {
		t.Errorf("deployment = %+v", d)
	}
}

func TestParseGetZDBErrorsDoNotQuote(t *testing.T) {
	cases := map[string]string{
		"no json":   "3:20PM INF zdb:\nnothing here password s3cr3t\n",
		"truncated": "3:20PM INF zdb:\n{\"Name\": \"x\", \"Zdbs\": [ {\"password\": \"s3cr3t\", ",
		"syntax":    "3:20PM INF zdb:\n{\"Name\": s3cr3t}",
		"no zdbs":   "3:20PM INF zdb:\n{\"Name\": \"x\", \"Zdbs\": []}",
		"type":      "3:20PM INF zdb:\n{\"NodeID\": \"s3cr3t\", \"Zdbs\": []}",
	}
	for name, out := range cases {
		_, err := parseGetZDB([]byte(out))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: error quotes the output: %v", name, err)
		}
	}
}

func TestChooseAddress(t *testing.T) {
	ips := []string{"302:9e63:7d43:b742:469d:3ec2:ab15:f75e", "2a10:b600:1:0:c4be:94ff:feb1:8b3f", "4ab:1234::5", "fd00::1", "10.0.0.1", "bogus"}
	cases := []struct {
		prefer, want, fam string
		fellBack          bool
	}{
		{"", "[2a10:b600:1:0:c4be:94ff:feb1:8b3f]:9900", FamilyIPv6, false},
		{FamilyIPv6, "[2a10:b600:1:0:c4be:94ff:feb1:8b3f]:9900", FamilyIPv6, false},
		{FamilyYgg, "[302:9e63:7d43:b742:469d:3ec2:ab15:f75e]:9900", FamilyYgg, false},
		{FamilyMycelium, "[4ab:1234::5]:9900", FamilyMycelium, false},
	}
	for _, tc := range cases {
		addr, fam, fb, err := chooseAddress(ips, 9900, tc.prefer)
		if err != nil || addr != tc.want || fam != tc.fam || fb != tc.fellBack {
			t.Errorf("prefer %q: %s %s %v %v; want %s %s %v", tc.prefer, addr, fam, fb, err, tc.want, tc.fam, tc.fellBack)
		}
	}
	// Mycelium asked for but only ygg offered: falls back, and says so.
	addr, fam, fb, err := chooseAddress([]string{"302:9e63::1"}, 9900, FamilyMycelium)
	if err != nil || fam != FamilyYgg || !fb || addr != "[302:9e63::1]:9900" {
		t.Errorf("fallback: %s %s %v %v", addr, fam, fb, err)
	}
	if _, _, _, err := chooseAddress([]string{"fd00::1", "10.1.2.3"}, 9900, ""); err == nil {
		t.Error("private addresses only: accepted")
	}
	if _, _, _, err := chooseAddress([]string{"2a10::1"}, 0, ""); err == nil {
		t.Error("port 0 accepted")
	}
	if addr, fam, _, _ := chooseAddress([]string{"127.0.0.1"}, 5, ""); addr != "127.0.0.1:5" || fam != FamilyLoopback {
		t.Errorf("loopback: %s %s", addr, fam)
	}
}

func TestRedactOutput(t *testing.T) {
	out := []byte("line1\nline2\n3:20PM INF zdb:\n{\"password\": \"other-pw\", \"x\": 1}\nerror: pw-xyz rejected\nlast line\n")
	got := redactOutput(out, "pw-xyz")
	if strings.Contains(got, "pw-xyz") || strings.Contains(got, "other-pw") {
		t.Errorf("redactOutput leaked: %q", got)
	}
	if strings.Contains(got, "line1") || !strings.Contains(got, "last line") {
		t.Errorf("redactOutput should keep the last lines: %q", got)
	}
}

func TestTfcmdRunErrors(t *testing.T) {
	dir := t.TempDir()
	tf := tfcmd{path: fakeTfcmd(t), env: []string{"FAKE_TFCMD_DIR=" + dir}, timeout: 10 * time.Second}
	_, err := tf.run(context.Background(), "get zdb nope", []string{"get", "zdb", "nope"}, "")
	var ce *CommandError
	if !errors.As(err, &ce) || !strings.Contains(ce.Output, "found 0 contracts") || !strings.Contains(ce.Status, "exit status 1") {
		t.Fatalf("err = %#v", err)
	}

	tf.env = append(tf.env, "FAKE_TFCMD_SLEEP=30")
	tf.timeout = 300 * time.Millisecond
	_, err = tf.run(context.Background(), "deploy zdb x", deployArgs("x", 1, 11, "pw-secret"), "pw-secret")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ce) || !strings.Contains(ce.Status, "stopped after") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "pw-secret") {
		t.Errorf("error leaks the password: %v", err)
	}

	tf.path = filepath.Join(dir, "no-such-tfcmd")
	if _, err = tf.run(context.Background(), "cancel x", []string{"cancel", "x"}, ""); !errors.As(err, &ce) || !strings.Contains(ce.Status, "could not run") {
		t.Fatalf("err = %v", err)
	}
}
