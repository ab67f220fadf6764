package sharedtest

import (
	"encoding/json"
	"os"
	"runtime"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// SetJSON sets keys of the JSON object in file to raw JSON texts (which keep numbers beyond
// int64 or float64 exact): tests derive hostile config.json and tokenizer files this way.
func SetJSON(tb testing.TB, file string, kv map[string]string) {
	tb.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		tb.Fatal(err)
	}
	for k, v := range kv {
		obj[k] = json.RawMessage(v)
	}
	if b, err = json.Marshal(obj); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// TruncatePieces returns the prefix of a tokenizer.model that holds its first n pieces: a file
// cut at a field boundary, which still parses.
func TruncatePieces(tb testing.TB, model []byte, n int) []byte {
	tb.Helper()
	off := 0
	for range n {
		_, _, tl := protowire.ConsumeTag(model[off:])
		if tl < 0 {
			tb.Fatal("not a tokenizer.model")
		}
		_, vl := protowire.ConsumeBytes(model[off+tl:])
		if vl < 0 {
			tb.Fatal("not a tokenizer.model")
		}
		off += tl + vl
	}
	return model[:off]
}

// Allocated returns the bytes of heap f allocated (runtime.MemStats.TotalAlloc): tests bound what
// hostile input may make a parser allocate.
func Allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
