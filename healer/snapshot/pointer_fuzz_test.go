package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
)

// fuzzKeys derives the keys of a fixed master key (and of a second one,
// for pointers sealed under another key).
func fuzzKeys(t testing.TB, fill byte) *Keys {
	t.Helper()
	k, err := DeriveKeys(bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sealRaw seals plain as a pointer body without going through JSON, so
// the fuzzer reaches the decoding behind the authentication.
func sealRaw(k *Keys, plain []byte) []byte {
	out := make([]byte, pointerHeader, pointerHeader+len(plain)+k.pointer.Overhead())
	copy(out, pointerMagic)
	copy(out[len(pointerMagic):], k.check[:])
	return k.pointer.Seal(out, out[len(pointerMagic)+8:pointerHeader], plain, out[:pointerHeader])
}

// FuzzOpenPointer feeds Keys.Open what a backend could hold under
// PointerKey, both as raw bytes and as a body sealed under the right key
// (what a writer of another format or a buggy one would leave). Every
// failure is ErrCorrupt or ErrWrongKey, never a panic; a pointer that
// opens is of this format, and sealing it again opens to the same pointer.
func FuzzOpenPointer(f *testing.F) {
	keys := fuzzKeys(f, 1)
	other := fuzzKeys(f, 2)
	p := &Pointer{Format: pointerFormat, StoreID: "s1", Written: time.Unix(1700000000, 0).UTC(),
		Backends:  []backends.Spec{{Name: "b1", Kind: backends.KindLocal, Path: "/x"}},
		Snapshots: []Manifest{{Seq: 3, Records: 2, Stripes: []StripeRef{{DataLen: 9, Shards: []ShardRef{{Backend: "b1", Key: "k"}}}}}}}
	good, err := keys.Seal(p)
	if err != nil {
		f.Fatal(err)
	}
	wrong, err := other.Seal(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, []byte(`{"format":1,"store_id":"s1"}`))
	f.Add(wrong, []byte(`{"format":2,"store_id":"s1"}`))
	f.Add(good[:len(good)-1], []byte(`{"format":1,"snapshots":[{"seq":-1}]}`))
	f.Add([]byte("HEALSPTR\x02"), []byte(`null`))
	f.Add([]byte("x"), []byte(`{"format":1,"snapshots":[{"settings": { "a" : [1, 2] }}]}`))
	f.Add([]byte{}, []byte(`{"format":1,"snapshots":[{"stripes":[{"shards":[{"sum":"!"}]}]}]}`))
	f.Fuzz(func(t *testing.T, raw, body []byte) {
		check := func(what string, b []byte) {
			got, err := keys.Open(b)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWrongKey) {
					t.Fatalf("%s: error %v is neither ErrCorrupt nor ErrWrongKey", what, err)
				}
				if got != nil {
					t.Fatalf("%s: a pointer and an error", what)
				}
				return
			}
			if got.Format != pointerFormat {
				t.Fatalf("%s: opened a pointer of format %d", what, got.Format)
			}
			again, err := keys.Seal(got)
			if err != nil {
				t.Fatalf("%s: sealing an opened pointer: %v", what, err)
			}
			back, err := keys.Open(again)
			if err != nil {
				t.Fatalf("%s: a resealed pointer does not open: %v", what, err)
			}
			// Compared as JSON: raw settings come back compacted.
			j1, err1 := json.Marshal(got)
			j2, err2 := json.Marshal(back)
			if err1 != nil || err2 != nil || !bytes.Equal(j1, j2) {
				t.Fatalf("%s: resealed pointer opens to %s, was %s", what, j2, j1)
			}
		}
		check("raw", raw)
		check("sealed body", sealRaw(keys, body))
		if _, err := other.Open(sealRaw(keys, body)); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("a pointer sealed under another key: %v, want ErrWrongKey", err)
		}
	})
}
