package memkv_test

import (
	"testing"

	"github.com/healstore/healstore/metastore"
	"github.com/healstore/healstore/metastore/memkv"
	"github.com/healstore/healstore/metastore/metastoretest"
)

func factory(t *testing.T) metastore.KV {
	kv := memkv.New()
	t.Cleanup(func() { kv.Close() })
	return kv
}

func TestKV(t *testing.T) { metastoretest.RunKV(t, factory) }

func TestStore(t *testing.T) { metastoretest.RunStore(t, factory) }
