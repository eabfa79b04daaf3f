package healstore

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healstore/healstore/healer"
)

// TestSecretInUseIsTheHealersConflict: the secret store's refusal of a
// ref holding another secret reaches the daemon's API through the
// healer's Register dependency; it must be the healer's ErrSecretInUse
// for the API to answer 409 with the message, not 500.
func TestSecretInUseIsTheHealersConflict(t *testing.T) {
	s, err := OpenSecrets(filepath.Join(t.TempDir(), "secrets.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add("zdb/z1", "first"); err != nil {
		t.Fatal(err)
	}
	err = s.Add("zdb/z1", "second")
	if !errors.Is(err, healer.ErrSecretInUse) || !strings.Contains(err.Error(), `"zdb/z1" already holds another secret`) {
		t.Fatalf("Add over another secret: %v; want healer.ErrSecretInUse naming the ref", err)
	}
	if strings.Contains(err.Error(), "first") || strings.Contains(err.Error(), "second") {
		t.Fatalf("the error shows a secret: %v", err)
	}
}
