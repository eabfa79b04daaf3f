package healstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/healstore/healstore"
)

// newExampleStore creates a fresh store on six local backends in a
// temporary directory, as `healstore init` does.
func newExampleStore() (*healstore.Store, func()) {
	dir, err := os.MkdirTemp("", "healstore-example-")
	if err != nil {
		log.Fatal(err)
	}
	path, err := healstore.Init(dir, healstore.InitOptions{})
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := healstore.LoadConfig(path)
	if err != nil {
		log.Fatal(err)
	}
	s, err := healstore.Open(context.Background(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	return s, func() { s.Close(); os.RemoveAll(dir) }
}

// Store an object and read it back.
func Example_putGet() {
	s, done := newExampleStore()
	defer done()
	ctx := context.Background()

	info, err := s.Put(ctx, "greeting", strings.NewReader("hello, healstore"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored", info.Name, info.Size, "bytes as", info.Policy.K, "+", info.Policy.M)

	r, err := s.Open(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(b))
	// Output:
	// stored greeting 16 bytes as 4 + 2
	// hello, healstore
}

// Stream an object in with Create: it appears only when Close succeeds.
func Example_create() {
	s, done := newExampleStore()
	defer done()
	ctx := context.Background()

	w, err := s.Create(ctx, "log/today")
	if err != nil {
		log.Fatal(err)
	}
	for i := range 3 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if _, err := s.Stat(ctx, "log/today"); errors.Is(err, healstore.ErrNotFound) {
		fmt.Println("not visible before Close")
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}
	info, err := s.Stat(ctx, "log/today")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("visible after Close:", info.Size, "bytes")
	// Output:
	// not visible before Close
	// visible after Close: 21 bytes
}

// Read a range of an object without fetching the rest.
func ExampleReader_ReadAt() {
	s, done := newExampleStore()
	defer done()
	ctx := context.Background()
	if _, err := s.Put(ctx, "alphabet", strings.NewReader("abcdefghijklmnopqrstuvwxyz")); err != nil {
		log.Fatal(err)
	}
	r, err := s.Open(ctx, "alphabet")
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 5)
	if _, err := r.ReadAt(buf, 10); err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(buf))
	// Output: klmno
}

// List objects by prefix, a page at a time, and handle a missing name.
func ExampleStore_List() {
	s, done := newExampleStore()
	defer done()
	ctx := context.Background()
	for _, name := range []string{"photos/1.jpg", "photos/2.jpg", "photos/3.jpg", "notes.txt"} {
		if _, err := s.Put(ctx, name, strings.NewReader(name)); err != nil {
			log.Fatal(err)
		}
	}
	after := ""
	for {
		page, next, err := s.List(ctx, "photos/", after, 2)
		if err != nil {
			log.Fatal(err)
		}
		for _, o := range page {
			fmt.Println(o.Name)
		}
		if next == "" {
			break
		}
		after = next
	}
	if _, err := s.Open(ctx, "photos/4.jpg"); errors.Is(err, healstore.ErrNotFound) {
		fmt.Println("photos/4.jpg: not found")
	}
	// Output:
	// photos/1.jpg
	// photos/2.jpg
	// photos/3.jpg
	// photos/4.jpg: not found
}

// Serve the store's data path metrics from an application's own
// Prometheus registry (the daemon serves them on healer.metrics_addr).
func ExampleStore_Metrics() {
	s, done := newExampleStore()
	defer done()
	ctx := context.Background()

	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Metrics())
	// http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	for _, name := range []string{"a", "b"} {
		if _, err := s.Put(ctx, name, strings.NewReader("some bytes")); err != nil {
			log.Fatal(err)
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "healstore_object_written_bytes_total" {
			fmt.Println(f.GetName(), f.GetMetric()[0].GetCounter().GetValue())
		}
	}
	// Output:
	// healstore_object_written_bytes_total 20
}

// Tidy a store's names from a tool that must not wait on its backends:
// OpenCatalog opens the metadata alone (an embedded metastore admits one
// process, so the store is closed first).
func ExampleOpenCatalog() {
	s, done := newExampleStore()
	defer done()
	ctx := context.Background()
	for _, name := range []string{"draft/a", "draft/b"} {
		if _, err := s.Put(ctx, name, strings.NewReader("text of "+name)); err != nil {
			log.Fatal(err)
		}
	}
	cfg := s.Config()
	s.Close()

	c, err := healstore.OpenCatalog(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Rename(ctx, "draft/a", "final/a"); err != nil {
		log.Fatal(err)
	}
	if err := c.Delete(ctx, "draft/b"); err != nil {
		log.Fatal(err)
	}
	objs, _, err := c.List(ctx, "", "", 10)
	if err != nil {
		log.Fatal(err)
	}
	for _, o := range objs {
		fmt.Println(o.Name, o.Size)
	}
	// Output: final/a 15
}
