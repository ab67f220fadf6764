// Package domain holds quantfleet's data model: the entities and enumerations of the seed data model
// (SourceModel, QuantizationConfig, QuantizedModel, QuantizationJob, Checkpoint, ModelMetadata) as Go
// types whose JSON field names are the seed's attribute names, plus their validation rules and the job
// state machine.
//
// Every validation error wraps ErrInvalidConfig and reads as one line naming the offending field.
package domain

import (
	"errors"
	"fmt"
	"quantfleet.dev/libs/fault"
)

var (
	// ErrInvalidConfig is wrapped by every validation and parse error of this package.
	ErrInvalidConfig = fault.New(fault.ErrBadInput, "invalid configuration")
	// ErrIllegalTransition is returned for a job status change the state machine does not allow.
	ErrIllegalTransition = errors.New("illegal job status transition")
	// ErrConfigMismatch is returned when a checkpoint's config snapshot differs from the config of a
	// resume request.
	ErrConfigMismatch = fault.New(fault.ErrBadInput, "config snapshot does not match")
)

// FieldError is a validation error about one field. Its message is one line that starts with the
// field's name (seed spelling); it matches ErrInvalidConfig with errors.Is.
type FieldError struct {
	Field string // seed attribute name, e.g. "quantization_level"
	Msg   string // full one-line message
}

func (e *FieldError) Error() string { return e.Msg }

// Unwrap returns ErrInvalidConfig.
func (e *FieldError) Unwrap() error { return ErrInvalidConfig }

func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}
