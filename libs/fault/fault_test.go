package fault_test

import (
	"errors"
	"fmt"
	"testing"

	"quantfleet.dev/libs/fault"
)

func TestClasses(t *testing.T) {
	bad := fault.New(fault.ErrBadInput, "bad header")
	perm := fault.New(fault.ErrPermanent, "inconsistent plan")
	trans := fault.New(fault.ErrTransient, "server unreachable")
	tests := []struct {
		name                           string
		err                            error
		badInput, permanent, transient bool
	}{
		{"bad input sentinel", bad, true, true, false},
		{"wrapped bad input", fmt.Errorf("open model: %w", fmt.Errorf("%w: offset 12", bad)), true, true, false},
		{"class wrapped directly", fmt.Errorf("%w: vocab_size 0", fault.ErrBadInput), true, true, false},
		{"permanent", fmt.Errorf("x: %w", perm), false, true, false},
		{"transient", fmt.Errorf("x: %w", trans), false, false, true},
		{"joined", errors.Join(errors.New("other"), trans), false, false, true},
		{"unclassified", errors.New("boom"), false, false, false},
		{"nil", nil, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fault.BadInput(tt.err); got != tt.badInput {
				t.Errorf("BadInput = %v, want %v", got, tt.badInput)
			}
			if got := fault.Permanent(tt.err); got != tt.permanent {
				t.Errorf("Permanent = %v, want %v", got, tt.permanent)
			}
			if got := fault.Transient(tt.err); got != tt.transient {
				t.Errorf("Transient = %v, want %v", got, tt.transient)
			}
		})
	}
	if !errors.Is(fmt.Errorf("w: %w", bad), bad) || errors.Is(bad, perm) {
		t.Error("sentinels must match themselves only")
	}
	if bad.Error() != "bad header" {
		t.Errorf("Error() = %q", bad.Error())
	}
}
