package metastore_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/healstore/healstore/metastore"
	"github.com/healstore/healstore/metastore/memkv"
)

func TestDump(t *testing.T) {
	kv := memkv.New()
	ctx := context.Background()
	var b metastore.Batch
	b.Put([]byte("bidx/a/01"), nil)
	b.Put([]byte("obj/with space"), []byte(`{"v":1}`))
	b.Put([]byte("raw\x00key"), []byte{0xff, 0x00})
	b.Put([]byte("sys/store-id"), []byte("abc"))
	if err := kv.Commit(ctx, &b); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := metastore.Dump(ctx, kv, &out); err != nil {
		t.Fatal(err)
	}
	want := "bidx/a/01\n" +
		"\"obj/with space\" {\"v\":1}\n" +
		"\"raw\\x00key\" hex:ff00\n" +
		"sys/store-id abc\n"
	if out.String() != want {
		t.Fatalf("dump:\n%s\nwant:\n%s", out.String(), want)
	}
}
