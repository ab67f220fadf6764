package blob_test

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/blob/blobtest"
)

// BenchmarkS3 measures loopback throughput against the embedded gateway: a 64 MiB put (known size),
// a full get, and a compose of 8 × 8 MiB shards behind a small header (server-side copies).
func BenchmarkS3(b *testing.B) {
	s := newS3Bench(b)
	data := blobtest.Data(1, 64<<20)
	ctx := b.Context()
	b.Run("Put64MiB", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			if _, err := s.Put(ctx, "bench/put", bytes.NewReader(data), int64(len(data)), blob.PutOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Get64MiB", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			rc, _, err := s.Get(ctx, "bench/put")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, rc)
			rc.Close()
		}
	})
	parts := []blob.Part{blob.DataPart(make([]byte, 4096))}
	for k := 0; k < 8; k++ {
		key := fmt.Sprintf("bench/shard-%d", k)
		if _, err := s.Put(ctx, key, bytes.NewReader(data[k<<23:(k+1)<<23]), 8<<20, blob.PutOptions{}); err != nil {
			b.Fatal(err)
		}
		parts = append(parts, blob.ObjectPart(key))
	}
	b.Run("Compose8x8MiB", func(b *testing.B) {
		b.SetBytes(64 << 20)
		for i := 0; i < b.N; i++ {
			if _, err := s.Compose(ctx, "bench/composed", parts); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func newS3Bench(b *testing.B) *blob.S3 {
	s, err := blob.NewS3(blob.S3Options{Endpoint: gw.Endpoint, Insecure: true, Bucket: "bench",
		AccessKey: gw.AccessKey, SecretKey: gw.SecretKey})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.EnsureBucket(b.Context()); err != nil {
		b.Fatal(err)
	}
	return s
}
