package domain

import "strings"

// OutputFormat is the target artifact format.
type OutputFormat string

// Output formats.
const (
	FormatGGUF OutputFormat = "gguf"
	FormatAWQ  OutputFormat = "awq"
	FormatGPTQ OutputFormat = "gptq"
)

// ModelType says where a source model comes from.
type ModelType string

// Model types.
const (
	ModelHFHub    ModelType = "hf_hub"
	ModelLocalDir ModelType = "local_dir"
)

// JobStatus is a QuantizationJob's state; see QuantizationJob.Transition for the allowed moves.
type JobStatus string

// Job states.
const (
	StatusPending   JobStatus = "pending"
	StatusRunning   JobStatus = "running"
	StatusCompleted JobStatus = "completed"
	StatusFailed    JobStatus = "failed"
	StatusCancelled JobStatus = "cancelled"
)

// Verbosity is the amount of human output.
type Verbosity string

// Verbosity levels.
const (
	VerbosityQuiet   Verbosity = "quiet"
	VerbosityNormal  Verbosity = "normal"
	VerbosityVerbose Verbosity = "verbose"
	VerbosityDebug   Verbosity = "debug"
)

// OutputMode selects human or machine-readable output.
type OutputMode string

// Output modes.
const (
	OutputHuman OutputMode = "human"
	OutputJSON  OutputMode = "json"
)

// ValidationStatus is the outcome of re-reading a written artifact.
type ValidationStatus string

// Validation states.
const (
	ValidationValid     ValidationStatus = "valid"
	ValidationInvalid   ValidationStatus = "invalid"
	ValidationUnchecked ValidationStatus = "unchecked"
)

var (
	outputFormats      = []OutputFormat{FormatGGUF, FormatAWQ, FormatGPTQ}
	modelTypes         = []ModelType{ModelHFHub, ModelLocalDir}
	jobStatuses        = []JobStatus{StatusPending, StatusRunning, StatusCompleted, StatusFailed, StatusCancelled}
	verbosities        = []Verbosity{VerbosityQuiet, VerbosityNormal, VerbosityVerbose, VerbosityDebug}
	outputModes        = []OutputMode{OutputHuman, OutputJSON}
	validationStatuses = []ValidationStatus{ValidationValid, ValidationInvalid, ValidationUnchecked}
)

// parseEnum matches s case-insensitively against the values (which are the seed's lower-case enum
// values; the seed's upper-case member names, e.g. "HF_HUB", match too).
func parseEnum[T ~string](field, s string, values []T) (T, error) {
	for _, v := range values {
		if strings.EqualFold(string(v), strings.TrimSpace(s)) {
			return v, nil
		}
	}
	return "", invalid(field, "%s %q is not valid (valid: %s)", field, s, joinEnum(values))
}

func joinEnum[T ~string](values []T) string {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

func validEnum[T ~string](v T, values []T) bool {
	for _, x := range values {
		if x == v {
			return true
		}
	}
	return false
}

// ParseOutputFormat parses "gguf", "awq" or "gptq", case-insensitively.
func ParseOutputFormat(s string) (OutputFormat, error) {
	return parseEnum("target_format", s, outputFormats)
}

// ParseModelType parses "hf_hub" or "local_dir", case-insensitively.
func ParseModelType(s string) (ModelType, error) { return parseEnum("model_type", s, modelTypes) }

// ParseJobStatus parses a job status, case-insensitively.
func ParseJobStatus(s string) (JobStatus, error) { return parseEnum("status", s, jobStatuses) }

// ParseVerbosity parses "quiet", "normal", "verbose" or "debug", case-insensitively.
func ParseVerbosity(s string) (Verbosity, error) { return parseEnum("verbosity", s, verbosities) }

// ParseOutputMode parses "human" or "json", case-insensitively.
func ParseOutputMode(s string) (OutputMode, error) { return parseEnum("output_format", s, outputModes) }

// ParseValidationStatus parses "valid", "invalid" or "unchecked", case-insensitively.
func ParseValidationStatus(s string) (ValidationStatus, error) {
	return parseEnum("validation_status", s, validationStatuses)
}

// Valid reports whether f is one of the defined formats.
func (f OutputFormat) Valid() bool { return validEnum(f, outputFormats) }

// Valid reports whether t is one of the defined model types.
func (t ModelType) Valid() bool { return validEnum(t, modelTypes) }

// Valid reports whether s is one of the defined job states.
func (s JobStatus) Valid() bool { return validEnum(s, jobStatuses) }

// Valid reports whether v is one of the defined verbosity levels.
func (v Verbosity) Valid() bool { return validEnum(v, verbosities) }

// Valid reports whether m is one of the defined output modes.
func (m OutputMode) Valid() bool { return validEnum(m, outputModes) }

// Valid reports whether s is one of the defined validation states.
func (s ValidationStatus) Valid() bool { return validEnum(s, validationStatuses) }

// The UnmarshalText methods make JSON decoding reject unknown enum values and accept any case.
// An empty string decodes to the zero value ("unset"); Validate methods decide whether that is allowed.

func unmarshalEnum[T ~string](dst *T, b []byte, parse func(string) (T, error)) error {
	if len(b) == 0 {
		*dst = ""
		return nil
	}
	v, err := parse(string(b))
	if err != nil {
		return err
	}
	*dst = v
	return nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (f *OutputFormat) UnmarshalText(b []byte) error { return unmarshalEnum(f, b, ParseOutputFormat) }

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *ModelType) UnmarshalText(b []byte) error { return unmarshalEnum(t, b, ParseModelType) }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *JobStatus) UnmarshalText(b []byte) error { return unmarshalEnum(s, b, ParseJobStatus) }

// UnmarshalText implements encoding.TextUnmarshaler.
func (v *Verbosity) UnmarshalText(b []byte) error { return unmarshalEnum(v, b, ParseVerbosity) }

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *OutputMode) UnmarshalText(b []byte) error { return unmarshalEnum(m, b, ParseOutputMode) }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *ValidationStatus) UnmarshalText(b []byte) error {
	return unmarshalEnum(s, b, ParseValidationStatus)
}
