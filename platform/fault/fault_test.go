package fault

import (
	"errors"
	"fmt"
	"testing"
)

func TestMatching(t *testing.T) {
	detailed := ErrNotFound.With(map[string]any{"id": "7"})
	wrapped := fmt.Errorf("order 7: %w", detailed)
	if !errors.Is(wrapped, ErrNotFound) {
		t.Error("a detailed, wrapped copy does not match its sentinel")
	}
	if errors.Is(wrapped, ErrConflict) {
		t.Error("not_found matches conflict")
	}
	if ErrNotFound.Details != nil {
		t.Error("With changed the shared sentinel")
	}
	got, ok := As(wrapped)
	if !ok || got.Code != "not_found" || got.Details["id"] != "7" || got.Kind != NotFound {
		t.Errorf("As: %+v %v", got, ok)
	}
	if _, ok := As(errors.New("plain")); ok {
		t.Error("a plain error has no *Error")
	}
	f := Field("email", "email is not valid")
	if f.Kind != Invalid || f.Code != "validation_failed" || f.Details["field"] != "email" {
		t.Errorf("Field: %+v", f)
	}
	// Same code, other kind: a different error.
	if errors.Is(New(Conflict, "not_found", "x"), ErrNotFound) {
		t.Error("kind is ignored by Is")
	}
}
