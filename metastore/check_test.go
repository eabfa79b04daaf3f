package metastore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/healstore/healstore/metastore"
	"github.com/healstore/healstore/metastore/memkv"
)

// TestCheckFindsDamage breaks each cross-record invariant by writing raw
// keys and expects Check to name it.
func TestCheckFindsDamage(t *testing.T) {
	ctx := context.Background()
	const obj = "11111111111111111111111111111111"
	const sid = "22222222222222222222222222222222"
	good := map[string]string{
		"obj/a":                              `{"v":1,"name":"a","id":"` + obj + `","size":1,"policy":{"k":1,"m":1},"stripes":["` + sid + `"]}`,
		"stripe/" + sid:                      `{"v":1,"id":"` + sid + `","object":"` + obj + `","block":0,"k":1,"m":1,"data_len":1,"version":1,"shards":[{"backend":"b1","key":"k0"},{"backend":"b2","key":"k1"}]}`,
		"bidx/b1/" + sid:                     "",
		"bidx/b2/" + sid:                     "",
		"qidx/" + sid:                        "queue/8000/0000000000000001/" + sid,
		"queue/8000/0000000000000001/" + sid: `{"v":1,"stripe":"` + sid + `","margin":0,"queued":"1970-01-01T00:00:00.000000001Z"}`,
	}
	for _, tc := range []struct {
		name   string
		edit   func(m map[string]string)
		expect string
	}{
		{"consistent", func(map[string]string) {}, ""},
		{"missing index entry", func(m map[string]string) { delete(m, "bidx/b2/"+sid) }, "missing index entry"},
		{"stale index entry", func(m map[string]string) { m["bidx/b9/"+sid] = "" }, "has no matching shard"},
		{"orphan stripe", func(m map[string]string) { delete(m, "obj/a") }, "belongs to no object"},
		{"missing stripe", func(m map[string]string) {
			delete(m, "stripe/"+sid)
			delete(m, "bidx/b1/"+sid)
			delete(m, "bidx/b2/"+sid)
		}, "lists missing stripe"},
		{"foreign stripe", func(m map[string]string) {
			m["stripe/"+sid] = strings.Replace(m["stripe/"+sid], `"object":"`+obj, `"object":"33333333333333333333333333333333`, 1)
		}, "names object id"},
		{"queue without qidx", func(m map[string]string) { delete(m, "qidx/"+sid) }, "has no qidx entry"},
		{"qidx without queue", func(m map[string]string) { delete(m, "queue/8000/0000000000000001/"+sid) }, "points at missing queue entry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]string{}
			for k, v := range good {
				m[k] = v
			}
			tc.edit(m)
			kv := memkv.New()
			var b metastore.Batch
			for k, v := range m {
				b.Put([]byte(k), []byte(v))
			}
			if err := kv.Commit(ctx, &b); err != nil {
				t.Fatal(err)
			}
			problems, err := metastore.New(kv).Check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.expect == "" {
				if len(problems) != 0 {
					t.Fatalf("consistent store reported %q", problems)
				}
				return
			}
			if len(problems) == 0 || !strings.Contains(strings.Join(problems, "\n"), tc.expect) {
				t.Fatalf("problems %q, want one containing %q", problems, tc.expect)
			}
		})
	}
}
