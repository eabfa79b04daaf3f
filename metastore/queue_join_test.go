package metastore_test

import (
	"context"
	"testing"

	"github.com/healstore/healstore/metastore"
	"github.com/healstore/healstore/metastore/memkv"
)

// EnqueueJoin adds a finding to an entry queued for another cause,
// whatever the margins, once; Enqueue keeps the old cause at a higher or
// equal margin.
func TestEnqueueJoin(t *testing.T) {
	ctx := context.Background()
	s := metastore.New(memkv.New())
	id := [16]byte{1}
	get := func() *metastore.RepairItem {
		t.Helper()
		it, err := s.GetRepair(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return it
	}
	if err := s.Enqueue(ctx, metastore.RepairItem{Stripe: id, Margin: 1, Reason: "backend b0 wiped"}); err != nil {
		t.Fatal(err)
	}
	read := "read found shards missing [3], corrupt []"
	for range 2 {
		if err := s.EnqueueJoin(ctx, metastore.RepairItem{Stripe: id, Margin: 1, Reason: read}); err != nil {
			t.Fatal(err)
		}
	}
	if it := get(); it.Reason != "backend b0 wiped; "+read || it.Margin != 1 {
		t.Fatalf("entry %+v", it)
	}
	// A lower margin lowers the entry's and keeps both causes.
	if err := s.EnqueueJoin(ctx, metastore.RepairItem{Stripe: id, Margin: 0, Reason: read}); err != nil {
		t.Fatal(err)
	}
	if it := get(); it.Reason != "backend b0 wiped; "+read || it.Margin != 0 {
		t.Fatalf("entry %+v", it)
	}
	// A new stripe takes the reason as it is.
	other := [16]byte{2}
	if err := s.EnqueueJoin(ctx, metastore.RepairItem{Stripe: other, Margin: 2, Reason: read}); err != nil {
		t.Fatal(err)
	}
	if it, err := s.GetRepair(ctx, other); err != nil || it.Reason != read {
		t.Fatalf("entry %+v %v", it, err)
	}
}

// A reason that is itself several causes ("backend b1 down; backend b2
// draining", as the healer's sweeps build for a stripe with shards on two
// such backends, or a recovery survey's "...; missing 1 (...)") is joined
// once: queued again with the same causes, the entry's reason does not
// grow.
func TestEnqueueJoinSeveralCausesOnce(t *testing.T) {
	ctx := context.Background()
	s := metastore.New(memkv.New())
	id := [16]byte{1}
	if err := s.Enqueue(ctx, metastore.RepairItem{Stripe: id, Margin: 1, Reason: "backend b0 wiped"}); err != nil {
		t.Fatal(err)
	}
	both := "backend b1 down; backend b2 draining"
	for range 3 {
		if err := s.EnqueueJoin(ctx, metastore.RepairItem{Stripe: id, Margin: 1, Reason: both}); err != nil {
			t.Fatal(err)
		}
	}
	// One of them again, and one new beside an old one.
	if err := s.EnqueueJoin(ctx, metastore.RepairItem{Stripe: id, Margin: 1, Reason: "backend b2 draining; backend b3 down"}); err != nil {
		t.Fatal(err)
	}
	want := "backend b0 wiped; backend b1 down; backend b2 draining; backend b3 down"
	if it, err := s.GetRepair(ctx, id); err != nil || it.Reason != want {
		t.Fatalf("entry %+v %v, want reason %q", it, err, want)
	}
}
