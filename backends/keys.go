package backends

import (
	"errors"
	"fmt"
)

// MaxKeyLen is the longest key the Backend contract allows. 0-db takes 255
// bytes and file systems 255 per path element; 200 leaves room for the
// escaping a backend may apply.
const MaxKeyLen = 200

// ErrInvalidKey: the key breaks the Backend key contract (empty, too long,
// or a byte outside [A-Za-z0-9._-/]). It is a caller bug, never transient.
var ErrInvalidKey = errors.New("invalid key")

// CheckKey reports whether key keeps the Backend key contract. The error
// says what is wrong; backends wrap it with ErrInvalidKey.
func CheckKey(key string) error {
	if key == "" {
		return errors.New("empty key")
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("key is %d bytes, the limit is %d", len(key), MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if !keyByte(key[i]) {
			return fmt.Errorf("key byte %d is %q, allowed are [A-Za-z0-9._-/]", i, key[i])
		}
	}
	return nil
}

func keyByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c == '.' || c == '_' || c == '-' || c == '/':
		return true
	}
	return false
}

// InvalidKey wraps CheckKey's complaint as an *Error of kind ErrInvalidKey.
// The key itself is not repeated in Key when it is too long to be useful.
func InvalidKey(backend, op, key string, cause error) error {
	if len(key) > MaxKeyLen {
		key = key[:32] + "..."
	}
	return &Error{Backend: backend, Op: op, Key: key, Kind: ErrInvalidKey, Err: cause}
}
