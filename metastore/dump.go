package metastore

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Dump writes every key and value of kv to w, one "key value" line each
// ("key" alone for an empty value), in key order, for debugging. Printable
// keys and values are written as is; keys that are not printable or hold a
// space are Go-quoted, values that are not printable written as "hex:...".
func Dump(ctx context.Context, kv KV, w io.Writer) error {
	bw := bufio.NewWriter(w)
	err := kv.Scan(ctx, nil, nil, func(k, v []byte) error {
		key := string(k)
		if !printable(k) || strings.ContainsRune(key, ' ') {
			key = strconv.Quote(key)
		}
		if len(v) == 0 {
			_, err := fmt.Fprintf(bw, "%s\n", key)
			return err
		}
		val := string(v)
		if !printable(v) {
			val = "hex:" + hex.EncodeToString(v)
		}
		_, err := fmt.Fprintf(bw, "%s %s\n", key, val)
		return err
	})
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	return bw.Flush()
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
