package encoder

// MakeLarge returns a new zeroed buffer of n bytes, for the buffers of
// megabytes that blocks and stripes live in.
//
// Where the kernel offers transparent huge pages on request (Linux with
// transparent_hugepage set to "madvise", the default of many
// distributions), it asks for them: the first touch of fresh memory then
// costs one fault per 2 MiB instead of one per 4 KiB. On a virtual
// machine a 4 KiB fault can cost 10-15 µs, so filling a new 16 MiB buffer
// took about 60 ms of CPU that way, and the buffers of a sequential
// gigabyte through the mount cost a second or more of CPU in faults alone.
// Go's heap does not ask for huge pages by itself.
func MakeLarge(n int) []byte {
	b := make([]byte, n)
	adviseHuge(b)
	return b
}
