package zdb

import (
	"strconv"
	"strings"

	"github.com/healstore/healstore/backends"
)

// parseInfo reads NSINFO's (or INFO's) "key: value" lines.
func parseInfo(text string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out
}

func infoInt(m map[string]string, k string) (int64, bool) {
	v, ok := m[k]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// capacityOf turns NSINFO into figures: with a maxsize, the limit and what
// is used of it (bounded by the disk's free space); without one, the disk.
// QSFS reports the limit as free space; the point here is limit - used.
func capacityOf(text string) backends.Capacity {
	m := parseInfo(text)
	used, okUsed := infoInt(m, "data_size_bytes")
	limit, _ := infoInt(m, "data_limits_bytes")
	disk, okDisk := infoInt(m, "data_disk_freespace_bytes")
	if !okUsed {
		return backends.Capacity{}
	}
	if limit > 0 {
		free := limit - used
		if free < 0 {
			free = 0
		}
		if okDisk && disk < free {
			free = disk
		}
		if used > limit {
			used = limit
		}
		return backends.Capacity{Known: true, Used: used, Limit: limit, Free: free}
	}
	if !okDisk || used+disk == 0 || used > (1<<62)-disk {
		return backends.Capacity{}
	}
	return backends.Capacity{Known: true, Used: used, Limit: used + disk, Free: disk}
}
