package domain

import (
	"regexp"
	"time"
)

// SourceModel is the input model. It is immutable once loaded.
type SourceModel struct {
	ModelPath      string    `json:"model_path"` // Hub id ("org/name") or local directory
	ModelType      ModelType `json:"model_type"`
	Architecture   string    `json:"architecture"` // e.g. "LlamaForCausalLM"
	ParameterCount int64     `json:"parameter_count"`
	Dtype          string    `json:"dtype"` // e.g. "bfloat16"
	TokenizerPath  string    `json:"tokenizer_path,omitempty"`
	// HFToken authenticates Hub downloads. It is never serialized: secrets must not reach job records,
	// checkpoints, messages or logs.
	HFToken string `json:"-"`
}

// hubID matches "name" or "org/name" with an optional "@revision", as the Hub allows them.
var hubID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?(@[A-Za-z0-9._/-]+)?$`)

// Validate checks the seed's rules that need no I/O: model_path is set (and a well-formed Hub id for
// hf_hub), model_type is known, architecture is set and parameter_count > 0. Whether a local directory
// exists and whether the architecture is supported are for the loader to check.
func (s SourceModel) Validate() error {
	if s.ModelPath == "" {
		return invalid("model_path", "model_path is required")
	}
	if !s.ModelType.Valid() {
		return invalid("model_type", "model_type %q is not valid (valid: %s)", s.ModelType, joinEnum(modelTypes))
	}
	if s.ModelType == ModelHFHub && !hubID.MatchString(s.ModelPath) {
		return invalid("model_path", "model_path %q is not a Hugging Face Hub id (org/name[@revision])", s.ModelPath)
	}
	if s.Architecture == "" {
		return invalid("architecture", "architecture is required")
	}
	if s.ParameterCount <= 0 {
		return invalid("parameter_count", "parameter_count %d must be > 0", s.ParameterCount)
	}
	return nil
}

// ModelMetadata is what is read from a source model's config.
type ModelMetadata struct {
	ModelName             string `json:"model_name"`
	Architecture          string `json:"architecture"`
	HiddenSize            int    `json:"hidden_size"`
	NumLayers             int    `json:"num_layers"`
	NumHeads              int    `json:"num_heads"`
	VocabSize             int    `json:"vocab_size"`
	MaxPositionEmbeddings int    `json:"max_position_embeddings"`
	TorchDtype            string `json:"torch_dtype"`
}

// Validate checks that every required field is set and every size is positive.
func (m ModelMetadata) Validate() error {
	switch {
	case m.ModelName == "":
		return invalid("model_name", "model_name is required")
	case m.Architecture == "":
		return invalid("architecture", "architecture is required")
	case m.HiddenSize <= 0:
		return invalid("hidden_size", "hidden_size %d must be > 0", m.HiddenSize)
	case m.NumLayers <= 0:
		return invalid("num_layers", "num_layers %d must be > 0", m.NumLayers)
	case m.NumHeads <= 0:
		return invalid("num_heads", "num_heads %d must be > 0", m.NumHeads)
	case m.VocabSize <= 0:
		return invalid("vocab_size", "vocab_size %d must be > 0", m.VocabSize)
	case m.MaxPositionEmbeddings <= 0:
		return invalid("max_position_embeddings", "max_position_embeddings %d must be > 0", m.MaxPositionEmbeddings)
	case m.TorchDtype == "":
		return invalid("torch_dtype", "torch_dtype is required")
	}
	return nil
}

// QuantizedModel is a finished artifact.
type QuantizedModel struct {
	OutputPath           string           `json:"output_path"` // file path or s3://bucket/key
	Format               OutputFormat     `json:"format"`
	FileSize             int64            `json:"file_size"`
	CompressionRatio     float64          `json:"compression_ratio"` // output size / source size
	QuantizationMetadata map[string]any   `json:"quantization_metadata"`
	CreatedAt            time.Time        `json:"created_at"`
	SourceModelPath      string           `json:"source_model_path"`
	ValidationStatus     ValidationStatus `json:"validation_status"`
}

// Validate checks the seed's rules that need no I/O: output_path set, format and validation_status
// known, file_size > 0, 0 < compression_ratio < 1. (Whether output_path is readable is for the
// writer to check.) Note that float levels can break the seed's "< 1" rule legitimately (F32 out of a
// bf16 model has ratio 2): callers that write such levels decide whether to call Validate.
func (q QuantizedModel) Validate() error {
	switch {
	case q.OutputPath == "":
		return invalid("output_path", "output_path is required")
	case !q.Format.Valid():
		return invalid("format", "format %q is not valid (valid: %s)", q.Format, joinEnum(outputFormats))
	case q.FileSize <= 0:
		return invalid("file_size", "file_size %d must be > 0", q.FileSize)
	case !(q.CompressionRatio > 0 && q.CompressionRatio < 1):
		return invalid("compression_ratio", "compression_ratio %g must be > 0 and < 1", q.CompressionRatio)
	case q.SourceModelPath == "":
		return invalid("source_model_path", "source_model_path is required")
	case !q.ValidationStatus.Valid():
		return invalid("validation_status", "validation_status %q is not valid (valid: %s)", q.ValidationStatus, joinEnum(validationStatuses))
	}
	return nil
}
