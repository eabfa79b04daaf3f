package encoder

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// TestMakeLargeAdvisesHugePages checks that a large buffer's whole 2 MiB
// pages sit in a mapping marked for huge pages (VmFlags "hg" in
// /proc/self/smaps) and that it is all zeros.
func TestMakeLargeAdvisesHugePages(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage/enabled"); err != nil {
		t.Skip("this kernel has no transparent huge pages:", err)
	}
	b := MakeLarge(16<<20 + 12345)
	if len(b) != 16<<20+12345 {
		t.Fatalf("len %d", len(b))
	}
	start := uintptr(unsafe.Pointer(&b[0]))
	mid := (start + 4*hugePage) &^ (hugePage - 1) // inside an aligned page of b
	if !mappingFlag(t, mid, "hg") {
		t.Fatalf("the mapping holding %#x (inside a 16 MiB MakeLarge buffer) is not marked for huge pages", mid)
	}
	for i := range b {
		if b[i] != 0 {
			t.Fatalf("byte %d is %d, not zero", i, b[i])
		}
	}
}

// mappingFlag reports whether the mapping holding addr has flag in its
// VmFlags line.
func mappingFlag(t *testing.T, addr uintptr, flag string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip("no /proc/self/smaps:", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		if rng, _, ok := strings.Cut(line, " "); ok && strings.Contains(rng, "-") && !strings.HasSuffix(rng, ":") {
			lo, hi, _ := strings.Cut(rng, "-")
			l, err1 := strconv.ParseUint(lo, 16, 64)
			h, err2 := strconv.ParseUint(hi, 16, 64)
			in = err1 == nil && err2 == nil && uint64(addr) >= l && uint64(addr) < h
			continue
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.Contains(" "+strings.TrimPrefix(line, "VmFlags:")+" ", " "+flag+" ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("no mapping in /proc/self/smaps holds %#x", addr)
	return false
}
