package zdb

import (
	"testing"

	"github.com/healstore/healstore/backends"
)

// recorded is NSINFO as the reference shows it, for a 100-byte namespace
// filled to the brim.
const recorded = `# namespace
name: ns1
entries: 3
public: no
worm: no
locked: no
password: yes
data_size_bytes: 100
data_size_mb: 0.00
data_limits_bytes: 100
index_size_bytes: 195
index_size_kb: 0.19
next_internal_id: 0x300000000000000
mode: userkey
stats_index_io_errors: 0
stats_index_io_error_last: 0
stats_index_faults: 0
stats_data_io_errors: 0
stats_data_io_error_last: 0
stats_data_faults: 0
space_available: 0
index_disk_freespace_bytes: 5000000
index_disk_freespace_mb: 4.77
data_disk_freespace_bytes: 5000000
data_disk_freespace_mb: 4.77

`

func TestCapacityOf(t *testing.T) {
	for _, c := range []struct {
		name, text string
		want       backends.Capacity
	}{
		{"full", recorded, backends.Capacity{Known: true, Used: 100, Limit: 100, Free: 0}},
		{"limit", "data_size_bytes: 30\ndata_limits_bytes: 100\ndata_disk_freespace_bytes: 1000\n", backends.Capacity{Known: true, Used: 30, Limit: 100, Free: 70}},
		{"disk smaller than limit", "data_size_bytes: 30\ndata_limits_bytes: 100\ndata_disk_freespace_bytes: 20\n", backends.Capacity{Known: true, Used: 30, Limit: 100, Free: 20}},
		{"no limit", "data_size_bytes: 30\ndata_limits_bytes: 0\ndata_disk_freespace_bytes: 1000\n", backends.Capacity{Known: true, Used: 30, Limit: 1030, Free: 1000}},
		{"no limit, no disk", "data_size_bytes: 30\ndata_limits_bytes: 0\n", backends.Capacity{}},
		{"crlf", "data_size_bytes: 1\r\ndata_limits_bytes: 2\r\n", backends.Capacity{Known: true, Used: 1, Limit: 2, Free: 1}},
		{"garbage", "data_size_bytes: lots\n", backends.Capacity{}},
		{"over the limit", "data_size_bytes: 150\ndata_limits_bytes: 100\n", backends.Capacity{Known: true, Used: 100, Limit: 100, Free: 0}},
	} {
		if got := capacityOf(c.text); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

func FuzzCapacityOf(f *testing.F) {
	f.Add(recorded)
	f.Add("data_size_bytes: 9223372036854775807\ndata_disk_freespace_bytes: 9223372036854775807\n")
	f.Add("data_size_bytes: -5\ndata_limits_bytes: -1\n")
	f.Fuzz(func(t *testing.T, text string) {
		c := capacityOf(text)
		if !c.Known {
			if c != (backends.Capacity{}) {
				t.Fatalf("unknown capacity with figures: %+v", c)
			}
			return
		}
		if c.Limit <= 0 || c.Used < 0 || c.Free < 0 || c.Used > c.Limit || c.Free > c.Limit {
			t.Fatalf("inconsistent capacity %+v from %q", c, text)
		}
	})
}

func TestParseScan(t *testing.T) {
	cur := []byte("0123456789abcdefg")
	good := []any{cur, []any{[]any{[]byte("k1"), int64(3), int64(1700000000)}, []any{[]byte("k2"), int64(0), int64(1)}}}
	c, es, err := parseScan(good)
	if err != nil || string(c) != string(cur) || len(es) != 2 || string(es[1].key) != "k2" || es[0].size != 3 {
		t.Fatalf("parseScan: %q %v %v", c, es, err)
	}
	for _, bad := range []any{
		nil, int64(1), []any{cur}, []any{int64(1), []any{}}, []any{cur, []any{int64(1)}},
		[]any{cur, []any{[]any{int64(1), int64(2), int64(3)}}}, []any{cur, []any{[]any{[]byte("k"), []byte("3")}}},
	} {
		if _, _, err := parseScan(bad); err == nil {
			t.Errorf("parseScan(%v) accepted a malformed reply", bad)
		}
	}
}
