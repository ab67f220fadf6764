# quantfleet — build, test and benchmark the Go workspace (go.work: libs, proto, services).
GO        ?= go
MODULES   := libs proto services
BIN       := bin
LDFLAGS   := -s -w
# Built without cgo. quantfleet and worker load CUDA at run time (libs/cuda, purego), which makes
# them dynamically linked against glibc: they run on any glibc Linux, the GPU machines included.
# GO_TAGS=nocuda builds them static, without GPU support (the Dockerfile's default, for scratch and
# distroless static images); the other binaries are static either way.
export CGO_ENABLED ?= 0
GO_TAGS   ?=

.PHONY: all build test test-short test-gpu bench fuzz proto vet fmt clean demo

all: build

build:
	@mkdir -p $(BIN)
	cd services && $(GO) build -trimpath -tags '$(GO_TAGS)' -ldflags '$(LDFLAGS)' -o ../$(BIN)/ ./quantfleet/ ./dispatcher/ ./worker/ ./assembler/ ./internal/genmodel/

# Every module's packages in one `go test`: packages of all modules run in parallel (-p, one per
# core), not module after module. Tests locate ../shared themselves.
PKGS      := $(MODULES:%=quantfleet.dev/%/...)

# The README's test command: every test, the multi-process e2e scenarios included.
test: build
	$(GO) test -count=1 -timeout 30m $(PKGS)

# The inner loop: unit tests only; the e2e scenarios and slow whole-model tests skip under -short.
test-short:
	$(GO) test -count=1 -short -timeout 15m $(PKGS)

# GPU test binaries (CGO_ENABLED=0; CUDA is loaded at run time, see libs/cuda/doc.go): carry
# bin/gpu-tests/ to a machine with an NVIDIA GPU and run each with -test.v there (see
# libs/cuda/doc.go, "Tests on a GPU machine", for the command lines). TestLlama8B and
# TestLlama8BLayer are the timing runs (-test.short skips them); BenchmarkAWQLayer times AWQ's
# steps on layer 0 of bench-gpu.sh's synthetic model (QUANTFLEET_AWQ_BENCH_MODEL=DIR
# llamacuda.test -test.run '^$$' -test.bench AWQLayer -test.benchtime 1x); the tests take
# QUANTFLEET_TINY_LLAMA, QUANTFLEET_CALIB (and QUANTFLEET_EVAL, default eval.txt beside the
# calibration text) where ../shared is absent. Without a GPU every GPU test skips.
GPU_TESTS := $(BIN)/gpu-tests
GPU_LIBS  := cuda cuda/gptqcuda cuda/llamacuda device
test-gpu:
	@mkdir -p $(GPU_TESTS)
	cd libs && for p in $(GPU_LIBS); do $(GO) test -c -trimpath -ldflags '$(LDFLAGS)' -o ../$(GPU_TESTS)/$$(basename $$p).test ./$$p/ || exit 1; done
	cd services && $(GO) test -c -trimpath -ldflags '$(LDFLAGS)' -o ../$(GPU_TESTS)/cli.test ./cli/
	for p in $(GPU_LIBS); do $(GPU_TESTS)/$$(basename $$p).test -test.short || exit 1; done

vet:
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) vet ./...); done

fmt:
	@gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$') | tee /dev/stderr | (! read)

# Throughput of every block type (MB of f32 input per second, one core and all cores), whole-model
# GGUF conversion, the forward pass (tokens/s, GFLOP/s) and whole GPTQ/AWQ jobs on tiny-llama.
bench:
	cd libs && $(GO) test -run '^$$' -bench 'Quantize$$' -benchtime 3x ./ggml/
	cd libs && $(GO) test -run '^$$' -bench 'GGUFTinyLlama|ForwardTinyLlama' -benchtime 3x ./quantize/
	cd libs && $(GO) test -run '^$$' -bench 'MatMul|Forward' -benchtime 3x ./transformer/
	cd libs && $(GO) test -run '^$$' -bench 'CalibratedTinyLlama' -benchtime 1x -timeout 60m ./quantize/

# FUZZTIME per target. The model-file parsers are seeded with the real files of ../shared, which
# are large: new inputs are minimized for a few seconds only, or minimizing would take the run.
FUZZTIME ?= 30s
FUZZFLAGS  := -fuzztime $(FUZZTIME) -fuzzminimizetime 5s

fuzz:
	cd libs && $(GO) test -run '^$$' -fuzz FuzzParseHeader -fuzztime 30s ./safetensors/
	cd libs && $(GO) test -run '^$$' -fuzz FuzzRead -fuzztime 30s ./gguf/
	cd libs && $(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' $(FUZZFLAGS) ./hfmodel/
	cd libs && $(GO) test -run '^$$' -fuzz '^FuzzTokenizerJSON$$' $(FUZZFLAGS) ./tokenizer/
	cd libs && $(GO) test -run '^$$' -fuzz '^FuzzParse$$' $(FUZZFLAGS) ./sentencepiece/

proto:
	cd proto && protoc --go_out=. --go_opt=module=quantfleet.dev/proto quantfleet/v1/*.proto

# The README's main job: quantize the tiny model on this machine.
demo: build
	$(BIN)/quantfleet run --model ../shared/models/tiny-llama --format gguf --level Q4_K_M --output-dir out

clean:
	rm -rf $(BIN) out
