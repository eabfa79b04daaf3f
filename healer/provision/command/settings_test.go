package command

import (
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

func settingsFrom(t *testing.T, doc string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := toml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestConfigFromSettings(t *testing.T) {
	cfg, err := ConfigFromSettings(settingsFrom(t, `
command = ["/etc/healstore/provision.sh", "--region", "eu-1"]
env = ["AWS_PROFILE=healstore"]
dir = "/var/lib/healstore"
timeout = "15m"
`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Command, " ") != "/etc/healstore/provision.sh --region eu-1" || cfg.Env[0] != "AWS_PROFILE=healstore" ||
		cfg.Dir != "/var/lib/healstore" || cfg.Timeout != 15*time.Minute {
		t.Errorf("cfg = %+v", cfg)
	}
	for doc, want := range map[string]string{
		`comand = ["x"]`:   `unknown field "comand"`,
		`command = "x.sh"`: "command: want []string, got string",
		`timeout = "soon"`: `timeout "soon"`,
		// Keys of the embedded Config and of the wrapper alike.
		`Command = ["x"]`: `unknown key "Command": keys are case-sensitive; did you mean "command"?`,
		`TimeOut = "1m"`:  `did you mean "timeout"`,
	} {
		_, err := ConfigFromSettings(settingsFrom(t, doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want it to mention %s", doc, err, want)
		}
	}
}
