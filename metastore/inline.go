package metastore

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// MaxInlineSize bounds an inline object's sealed block, and its size (the
// plaintext). Records travel whole in one KV batch; etcd refuses requests
// above 1.5 MiB by default, and an object record must stay far below that
// together with the rest of its batch (the replaced version's garbage
// entries). The store's inline_max_size setting is capped lower still (it
// bounds the plaintext). A record beyond either bound is refused on encode
// (ErrInvalid) and on decode (ErrCorrupt).
const MaxInlineSize = 128 << 10

// sealHeaderSize is the fixed part of a sealed block's header (docs/format.md,
// "Sealed block"): without compression, a sealed block holds at most its
// length less this many bytes of plaintext.
const sealHeaderSize = 12

// IsInline reports whether the object's content lives in its record.
func (o *Object) IsInline() bool { return len(o.Inline) > 0 }

// checkInlineSize reports why an inline object's size cannot be the
// plaintext of its sealed block, or "" when it can.
func checkInlineSize(o *Object) string {
	switch {
	case o.Size < 0:
		return fmt.Sprintf("negative size %d", o.Size)
	case o.Size > MaxInlineSize:
		return fmt.Sprintf("size %d above the inline limit %d", o.Size, MaxInlineSize)
	case o.Policy.BlockSize > 0 && o.Size > int64(o.Policy.BlockSize):
		return fmt.Sprintf("size %d above the policy's block_size %d", o.Size, o.Policy.BlockSize)
	case o.Policy.Compression == "none" && o.Size > int64(len(o.Inline))-sealHeaderSize:
		return fmt.Sprintf("size %d does not fit an uncompressed sealed block of %d bytes", o.Size, len(o.Inline))
	}
	return ""
}

func encodeInline(o *Object, r *objectRec) error {
	if !o.IsInline() {
		if len(o.InlineSum) > 0 {
			return fmt.Errorf("%w: object %q: inline checksum without inline data", ErrInvalid, o.Name)
		}
		return nil
	}
	switch {
	case len(o.Stripes) > 0:
		return fmt.Errorf("%w: object %q: inline data and %d stripes", ErrInvalid, o.Name, len(o.Stripes))
	case len(o.InlineSum) == 0:
		return fmt.Errorf("%w: object %q: inline data without a checksum", ErrInvalid, o.Name)
	case len(o.Inline) > MaxInlineSize:
		return fmt.Errorf("%w: object %q: inline data of %d bytes, above %d", ErrInvalid, o.Name, len(o.Inline), MaxInlineSize)
	}
	if why := checkInlineSize(o); why != "" {
		return fmt.Errorf("%w: object %q: inline object of %s", ErrInvalid, o.Name, why)
	}
	r.V = inlineRecordVersion
	r.Inline = base64.StdEncoding.EncodeToString(o.Inline)
	r.InlineSum = hex.EncodeToString(o.InlineSum)
	return nil
}

// decodeInline accepts inline data in a version-2 record and, for the
// records written between the introduction of inline objects and version
// 2, in a version-1 record (they are rewritten as version 2 by the next
// update). A version-2 record must carry inline data.
func decodeInline(key []byte, r *objectRec, o *Object) error {
	if r.Inline == "" && r.InlineSum == "" {
		if r.V == inlineRecordVersion {
			return fmt.Errorf("%w: object record %q has version %d but no inline data; only inline objects use version %d",
				ErrCorrupt, key, r.V, inlineRecordVersion)
		}
		return nil
	}
	// Bound the base64 text before decoding it.
	if len(r.Inline) > base64.StdEncoding.EncodedLen(MaxInlineSize) {
		return fmt.Errorf("%w: %q: inline data of %d base64 characters, above the %d-byte limit", ErrCorrupt, key, len(r.Inline), MaxInlineSize)
	}
	var err error
	if o.Inline, err = base64.StdEncoding.DecodeString(r.Inline); err != nil {
		return fmt.Errorf("%w: %q: inline data: %v", ErrCorrupt, key, err)
	}
	if o.InlineSum, err = hex.DecodeString(r.InlineSum); err != nil {
		return fmt.Errorf("%w: %q: inline checksum: %v", ErrCorrupt, key, err)
	}
	switch {
	case len(o.Inline) == 0 || len(o.InlineSum) == 0:
		return fmt.Errorf("%w: %q: inline data (%d bytes) without its checksum or the reverse", ErrCorrupt, key, len(o.Inline))
	case len(o.Stripes) > 0:
		return fmt.Errorf("%w: %q: inline data and %d stripes", ErrCorrupt, key, len(o.Stripes))
	case len(o.Inline) > MaxInlineSize:
		return fmt.Errorf("%w: %q: inline data of %d bytes, above %d", ErrCorrupt, key, len(o.Inline), MaxInlineSize)
	}
	if why := checkInlineSize(o); why != "" {
		return fmt.Errorf("%w: %q: inline object of %s", ErrCorrupt, key, why)
	}
	return nil
}
