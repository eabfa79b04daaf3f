package metastore

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// MaxInlineSize bounds an inline object's sealed block. Records travel
// whole in one KV batch; etcd refuses requests above 1.5 MiB by default,
// and an object record must stay far below that together with the rest of
// its batch (the replaced version's garbage entries). The store's
// inline_max_size setting is capped lower still (it bounds the plaintext).
const MaxInlineSize = 128 << 10

// IsInline reports whether the object's content lives in its record.
func (o *Object) IsInline() bool { return len(o.Inline) > 0 }

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
	r.Inline = base64.StdEncoding.EncodeToString(o.Inline)
	r.InlineSum = hex.EncodeToString(o.InlineSum)
	return nil
}

func decodeInline(key []byte, r *objectRec, o *Object) error {
	if r.Inline == "" && r.InlineSum == "" {
		return nil
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
	}
	return nil
}
