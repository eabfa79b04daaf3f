package encoder

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

const hugePage = 2 << 20

// adviseHuge marks the whole 2 MiB pages inside b for transparent huge
// pages (MADV_HUGEPAGE). It is advice: pages already touched stay as they
// are, and a kernel without transparent huge pages refuses it, which costs
// nothing but the call.
func adviseHuge(b []byte) {
	if len(b) < 2*hugePage {
		return // small buffers may hold no whole huge page
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	lo := int((start+hugePage-1)&^(hugePage-1) - start)
	hi := int((start+uintptr(len(b)))&^(hugePage-1) - start)
	_ = unix.Madvise(b[lo:hi], unix.MADV_HUGEPAGE)
}
