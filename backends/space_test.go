package backends

import "testing"

// TestSpaceSum: backends on one file system count it once; quotas on one
// file system count their own free space, but together no more than the
// file system has; a backend without a quota there means all of it.
func TestSpaceSum(t *testing.T) {
	const disk, diskFree = 1000, 100
	whole := Capacity{Known: true, Limit: disk, Used: 900, Free: diskFree, Device: "d"}
	quota := func(limit, used int64) Capacity {
		return Capacity{Known: true, Limit: limit, Used: used, Free: min(limit-used, diskFree), Device: "d",
			DeviceFree: diskFree, DeviceTotal: disk}
	}
	own := Capacity{Known: true, Limit: 50, Used: 20, Free: 30} // a bucket's quota
	for _, c := range []struct {
		name        string
		caps        []Capacity
		total, free int64
		spaces      int
	}{
		{"one file system, three backends", []Capacity{whole, whole, whole}, disk, diskFree, 1},
		{"two quotas, each larger than the disk's free space", []Capacity{quota(800, 0), quota(800, 0)}, disk, diskFree, 1},
		{"two small quotas", []Capacity{quota(40, 10), quota(40, 20)}, 80, 50, 1},
		{"a quota beside a backend without one", []Capacity{quota(40, 10), whole}, disk, diskFree, 1},
		{"the same, the other way round", []Capacity{whole, quota(40, 10)}, disk, diskFree, 1},
		{"space of its own beside a file system", []Capacity{whole, own, quota(40, 10)}, disk + 50, diskFree + 30, 2},
	} {
		var s SpaceSum
		for _, cp := range c.caps {
			s.Add(cp)
		}
		if s.Total != c.total || s.Free != c.free || s.Spaces != c.spaces {
			t.Errorf("%s: total %d, free %d, %d spaces; want %d, %d, %d", c.name, s.Total, s.Free, s.Spaces, c.total, c.free, c.spaces)
		}
	}
}
