package healstore

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/healer"
)

// The daemon serves metrics and the JSON status, runs the healer loops
// (a lost backend gets rebuilt with no call from outside), and stops
// cleanly when its context ends.
func TestDaemon(t *testing.T) {
	hs := newHealStore(t, 7, 4, 2, func(c *Config) {
		c.Healer.GracePeriod = Duration(100 * time.Millisecond)
		c.Healer.ProbeInterval = Duration(50 * time.Millisecond)
	})
	objs := map[string][]byte{"x": bytes.Repeat([]byte("x"), 300<<10), "y": []byte("small")}
	for n, d := range objs {
		hs.put(n, d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- hs.s.RunDaemon(ctx, DaemonOptions{Addr: "127.0.0.1:0", Ready: func(a string) { addrc <- a },
			Healer: HealerOptions{Tune: func(c *healer.Config) { c.SuspectAfter = 1; c.CensusInterval = healer.Duration(50 * time.Millisecond) }}})
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatal(err)
	}
	get := func(path string) []byte {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		return b
	}
	var st healer.Status
	if err := json.Unmarshal(get("/status"), &st); err != nil || len(st.Backends) != 7 || st.StoreID != hs.s.StoreID() {
		t.Fatalf("status %+v %v", st, err)
	}
	if !bytes.Contains(get("/metrics"), []byte("healstore_repair_queue_depth")) {
		t.Fatal("metrics lack the queue depth")
	}
	hs.kill("b2")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st healer.Status
		if err := json.Unmarshal(get("/status"), &st); err != nil {
			t.Fatal(err)
		}
		state := ""
		for _, b := range st.Backends {
			if b.Name == "b2" {
				state = b.State
			}
		}
		if state == "replaced" && st.DegradedStripes == 0 && st.Queue.Depth == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healed in time: b2 %s, degraded %d, queue %d", state, st.DegradedStripes, st.Queue.Depth)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := string(get("/metrics"))
	if !strings.Contains(m, `healstore_backend_state{backend="b2",state="replaced"} 1`) || !strings.Contains(m, "healstore_degraded_stripes 0") {
		t.Fatalf("metrics do not show the healed state:\n%s", m)
	}
	// The data path's metrics are served beside the healer's: the two
	// puts, and the rebuild's shard puts on the replacement.
	if !strings.Contains(m, `healstore_object_writes_total{result="ok"} 2`) ||
		!regexp.MustCompile(`healstore_backend_requests_total\{backend="[^"]+",op="put",result="ok"\} [1-9]`).MatchString(m) {
		t.Fatalf("metrics lack the data path's:\n%s", m)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("daemon stopped with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop")
	}
	if _, err := http.Get("http://" + addr + "/status"); err == nil {
		t.Fatal("daemon still serving after shutdown")
	}
	hs.check(objs)
	if err := hs.fullAndPlaced(); err != nil {
		t.Fatal(err)
	}
}

// A daemon whose address is taken fails at once with a clear error.
func TestDaemonAddressInUse(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	go func() {
		_ = hs.s.RunDaemon(ctx, DaemonOptions{Addr: "127.0.0.1:0", Ready: func(a string) { addrc <- a }})
	}()
	addr := <-addrc
	err := hs.s.RunDaemon(ctx, DaemonOptions{Addr: addr})
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("second daemon on %s: %v", addr, err)
	}
}
