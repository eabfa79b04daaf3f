package encoder

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// ObjectID identifies one version of an object. It is random, so two
// versions of the same name never share an id, and so never share a key.
type ObjectID [16]byte

// StripeID identifies one stripe. It is random per stripe and written into
// every shard header, so a shard from another stripe is recognised.
type StripeID [16]byte

// NewObjectID returns a random ObjectID.
func NewObjectID() ObjectID {
	var id ObjectID
	rand.Read(id[:]) // crypto/rand.Read never fails (it aborts the program instead)
	return id
}

// NewStripeID returns a random StripeID.
func NewStripeID() StripeID {
	var id StripeID
	rand.Read(id[:])
	return id
}

// String is the id in lower-case hex (32 characters).
func (id ObjectID) String() string { return hex.EncodeToString(id[:]) }

// String is the id in lower-case hex (32 characters).
func (id StripeID) String() string { return hex.EncodeToString(id[:]) }

// MarshalText encodes the id as hex, so JSON and TOML carry it as a string.
func (id ObjectID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// MarshalText encodes the id as hex, so JSON and TOML carry it as a string.
func (id StripeID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText parses the hex form.
func (id *ObjectID) UnmarshalText(b []byte) error {
	v, err := ParseObjectID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// UnmarshalText parses the hex form.
func (id *StripeID) UnmarshalText(b []byte) error {
	v, err := ParseStripeID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseObjectID parses the 32-character hex form made by String.
func ParseObjectID(s string) (ObjectID, error) {
	var id ObjectID
	err := parseID(id[:], s, "object")
	return id, err
}

// ParseStripeID parses the 32-character hex form made by String.
func ParseStripeID(s string) (StripeID, error) {
	var id StripeID
	err := parseID(id[:], s, "stripe")
	return id, err
}

func parseID(dst []byte, s, kind string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("encoder: %s id %q: want %d hex characters, got %d", kind, s, 2*len(dst), len(s))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("encoder: %s id %q: %w", kind, s, err)
	}
	return nil
}
