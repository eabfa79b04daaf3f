package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/healer"
)

func TestStatusShowsLossWindow(t *testing.T) {
	now := time.Now()
	var b bytes.Buffer
	writeLossWindow(&b, &healstore.LossWindow{}, nil, now)
	if !strings.Contains(b.String(), "none yet") {
		t.Fatalf("no snapshot: %q", b.String())
	}
	b.Reset()
	writeLossWindow(&b, &healstore.LossWindow{Covered: now.Add(-42 * time.Second), Changes: 7, LastError: "backend b3 full", LastErrorAt: now}, nil, now)
	if s := b.String(); !strings.Contains(s, "42s ago") || !strings.Contains(s, "7 change(s)") || !strings.Contains(s, "backend b3 full") {
		t.Fatalf("loss window text: %q", s)
	}
	b.Reset()
	writeLossWindow(&b, nil, errors.New("daemon gone"), now)
	if !strings.Contains(b.String(), "unknown (daemon gone)") {
		t.Fatalf("error text: %q", b.String())
	}

	out, err := json.Marshal(statusJSON{Status: &healer.Status{DegradedStripes: 3}, LossWindow: &healstore.LossWindow{Changes: 5}})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if m["degraded_stripes"] != float64(3) {
		t.Fatalf("healer fields not flattened: %s", out)
	}
	if lw, ok := m["loss_window"].(map[string]any); !ok || lw["changes"] != float64(5) {
		t.Fatalf("loss_window missing: %s", out)
	}
}
