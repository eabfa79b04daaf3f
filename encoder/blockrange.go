package encoder

import (
	"context"
	"fmt"
	"io"
)

// BlockRange returns the first and last block numbers holding bytes
// [off, off+n) of an object cut into blocks of blockSize bytes. n below 1
// counts as 1 (the block holding off).
func BlockRange(blockSize int, off, n int64) (first, last uint64) {
	bs := int64(blockSize)
	n = max(n, 1)
	return uint64(off / bs), uint64((off + n - 1) / bs)
}

// BlockFunc returns the plaintext of one block of an object, typically by
// fetching its shards and calling Codec.DecodeBlock.
type BlockFunc func(ctx context.Context, block uint64) ([]byte, error)

// ReadAt reads len(p) bytes of an object of size bytes, cut into blocks of
// blockSize, starting at off. It asks fetch only for the blocks the range
// covers, in order, and checks each has the length its position implies.
// Like io.ReaderAt it returns io.EOF when the range runs past the end.
func ReadAt(ctx context.Context, p []byte, off, size int64, blockSize int, fetch BlockFunc) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("encoder: read at negative offset %d", off)
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := min(int64(len(p)), size-off)
	if want == 0 {
		return 0, nil
	}
	bs := int64(blockSize)
	first, last := BlockRange(blockSize, off, want)
	done := 0
	for b := first; b <= last; b++ {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		data, err := fetch(ctx, b)
		if err != nil {
			return done, fmt.Errorf("encoder: read block %d: %w", b, err)
		}
		start := int64(b) * bs
		if wantLen := min(bs, size-start); int64(len(data)) != wantLen {
			return done, fmt.Errorf("%w: block %d has %d bytes, an object of %d bytes needs %d there", ErrCorrupt, b, len(data), size, wantLen)
		}
		from := max(off-start, 0)
		done += copy(p[done:want], data[from:])
	}
	if int64(len(p)) > want {
		return done, io.EOF
	}
	return done, nil
}
