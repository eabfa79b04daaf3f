package metastore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/healstore/healstore/metastore"
	"github.com/healstore/healstore/metastore/memkv"
)

// ExistingStoreID finds a store without making one; StoreID makes it once.
func TestExistingStoreIDMakesNone(t *testing.T) {
	ctx := context.Background()
	s := metastore.New(memkv.New())
	if id, err := s.ExistingStoreID(ctx); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("fresh metastore: id %q, %v; want ErrNotFound", id, err)
	}
	if _, err := s.ExistingStoreID(ctx); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("asked twice, the first made one: %v", err)
	}
	made, err := s.StoreID(ctx)
	if err != nil || made == "" {
		t.Fatalf("StoreID: %q, %v", made, err)
	}
	if got, err := s.ExistingStoreID(ctx); err != nil || got != made {
		t.Fatalf("ExistingStoreID after StoreID: %q, %v; want %q", got, err, made)
	}
	if again, err := s.StoreID(ctx); err != nil || again != made {
		t.Fatalf("StoreID again: %q, %v; want %q", again, err, made)
	}
}
