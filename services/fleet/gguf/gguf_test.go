package gguf_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/blob/s3embed"
	"quantfleet.dev/libs/convert"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/services/fleet/gguf"
	"quantfleet.dev/services/fleet/modelstore"
	"quantfleet.dev/services/internal/testenv"
)

var s3srv *s3embed.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gguf-s3-")
	if err != nil {
		panic(err)
	}
	s3srv, err = s3embed.Start(context.Background(), dir)
	if err != nil {
		panic(err)
	}
	code := m.Run()
	s3srv.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

var bucketSeq atomic.Int32

func newS3(t *testing.T) *blob.S3 {
	t.Helper()
	s, err := blob.NewS3(blob.S3Options{Endpoint: s3srv.Endpoint, Insecure: true, Bucket: fmt.Sprintf("gguf-%d", bucketSeq.Add(1)),
		AccessKey: s3srv.AccessKey, SecretKey: s3srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// countingStore counts the bytes read through it.
type countingStore struct {
	blob.Store
	read atomic.Int64
}

type countingReader struct {
	blob.Reader
	n *atomic.Int64
}

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.Reader.Read(p)
	r.n.Add(int64(n))
	return n, err
}

func (r countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.Reader.ReadAt(p, off)
	r.n.Add(int64(n))
	return n, err
}

func (s *countingStore) Open(ctx context.Context, key string) (blob.Reader, error) {
	r, err := s.Store.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	return countingReader{r, &s.read}, nil
}

func (s *countingStore) Get(ctx context.Context, key string) (io.ReadCloser, blob.ObjectInfo, error) {
	panic("unexpected whole-object Get of " + key)
}

func TestFleetPathMatchesLocal(t *testing.T) {
	model := testenv.TinyLlama(t)
	ctx := context.Background()
	for _, level := range []string{"Q4_K_M", "Q8_0", "BF16"} {
		t.Run(level, func(t *testing.T) {
			want := testenv.QuantizeGGUF(t, model, level)
			s3 := newS3(t)
			prefix, uploaded, err := modelstore.UploadDir(ctx, s3, model, nil)
			if err != nil || !uploaded {
				t.Fatalf("upload: %v uploaded=%v", err, uploaded)
			}

			// Planning reads config, small files and the safetensors header only.
			cs := &countingStore{Store: s3}
			m, fsys, err := gguf.OpenModel(ctx, cs, prefix, filepath.Base(model))
			if err != nil {
				t.Fatal(err)
			}
			p, header, err := gguf.PlanJob(ctx, "job1", m, fsys, level, gguf.PlanOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var small int64
			for _, n := range fsys.Files() {
				if filepath.Ext(n) != ".safetensors" {
					st, _ := fsys.Stat(n)
					small += st.Size()
				}
			}
			if got := cs.read.Load(); got > small+1<<20 {
				t.Errorf("planning read %d bytes; small files are %d, weights %d", got, small, m.WeightBytes())
			}
			if !bytes.Equal(header, want[:len(header)]) {
				t.Fatal("header bytes differ from the local file's")
			}

			// Workers: each task reads its tensors' ranges and writes a shard.
			before := cs.read.Load()
			sums := map[string]string{}
			for _, task := range p.Tasks {
				shard, err := gguf.Produce(ctx, m, p, task, nil)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(shard, want[p.HeaderSize+int64(task.Offset):p.HeaderSize+int64(task.Offset+task.Size)]) {
					t.Fatalf("task %s (%s) differs from the local file", task.ID, task.Label)
				}
				if _, err := s3.Put(ctx, "shards/"+task.ID, bytes.NewReader(shard), int64(len(shard)), blob.PutOptions{}); err != nil {
					t.Fatal(err)
				}
				sums[task.ID] = sha(shard)
			}
			if got, weights := cs.read.Load()-before, m.WeightBytes(); got > weights+64<<10 {
				t.Errorf("producing read %d bytes, weights are %d", got, weights)
			}
			m.Close()
			if _, err := s3.Put(ctx, "header.bin", bytes.NewReader(header), int64(len(header)), blob.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			oi, err := gguf.Assemble(ctx, s3, p, "header.bin", func(id string) string { return "shards/" + id }, "out.gguf")
			if err != nil {
				t.Fatal(err)
			}
			if oi.Size != int64(len(want)) {
				t.Fatalf("assembled %d bytes, want %d", oi.Size, len(want))
			}
			got := readAll(t, s3, "out.gguf")
			if !bytes.Equal(got, want) {
				t.Fatal("assembled file differs from quantfleet quantize's")
			}
			sum, err := gguf.Validate(ctx, s3, p, "out.gguf", sums, nil)
			if err != nil {
				t.Fatal(err)
			}
			if sum != sha(want) {
				t.Errorf("validate sha %s, want %s", sum, sha(want))
			}
			// A second upload of the same directory is skipped.
			if _, again, err := modelstore.UploadDir(ctx, s3, model, nil); err != nil || again {
				t.Errorf("second upload: uploaded=%v err=%v", again, err)
			}
		})
	}
}

func TestSplitTasks(t *testing.T) {
	model := testenv.TinyLlama(t)
	m, err := hfmodel.OpenDir(model)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cp, err := convert.NewPlan(m, model, "Q4_K_M", convert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tasks := gguf.SplitTasks(cp.Tensors)
	// output.weight+output_norm.weight, token_embd.weight, then one task per block.
	if len(tasks) != 2+m.Config.NumLayers {
		for _, tk := range tasks {
			t.Logf("%+v", tk)
		}
		t.Fatalf("%d tasks, want %d", len(tasks), 2+m.Config.NumLayers)
	}
	seen := map[int]bool{}
	for _, tk := range tasks {
		if tk.Block >= 0 {
			if seen[tk.Block] {
				t.Errorf("block %d split over tasks", tk.Block)
			}
			seen[tk.Block] = true
			for _, tp := range cp.Tensors[tk.First : tk.First+tk.Count] {
				if tp.Block != tk.Block {
					t.Errorf("task %s holds %s", tk.Label, tp.Name)
				}
			}
		}
	}
	p := gguf.NewPlan("j", cp, make([]byte, 10), 1)
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
	p.Tasks[1].Size++
	if err := p.Check(); err == nil {
		t.Error("Check accepted a task of the wrong size")
	}
}

func TestValidateRejectsCorruption(t *testing.T) {
	model := testenv.TinyLlama(t)
	ctx := context.Background()
	s3 := newS3(t)
	prefix, _, err := modelstore.UploadDir(ctx, s3, model, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, fsys, err := gguf.OpenModel(ctx, s3, prefix, "tiny-llama")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p, header, err := gguf.PlanJob(ctx, "j", m, fsys, "Q8_0", gguf.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	file := append([]byte(nil), header...)
	sums := map[string]string{}
	for _, task := range p.Tasks {
		shard, err := gguf.Produce(ctx, m, p, task, nil)
		if err != nil {
			t.Fatal(err)
		}
		sums[task.ID] = sha(shard)
		file = append(file, shard...)
	}
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
	}{
		{"flipped byte in a block", func(b []byte) []byte { b[len(header)+int(p.Tasks[3].Offset)+100] ^= 1; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-32] }},
		{"NaN scale", func(b []byte) []byte {
			// Q8_0 blocks start with an f16 scale; 0x7e00 is a NaN.
			last := p.Tensors[len(p.Tensors)-1]
			off := len(header) + int(last.Offset)
			b[off], b[off+1] = 0x00, 0x7e
			return b
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mutate(append([]byte(nil), file...))
			if _, err := s3.Put(ctx, "bad.gguf", bytes.NewReader(b), int64(len(b)), blob.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := gguf.Validate(ctx, s3, p, "bad.gguf", sums, nil); err == nil {
				t.Fatal("corrupted file validated")
			}
		})
	}
	if _, err := s3.Put(ctx, "good.gguf", bytes.NewReader(file), int64(len(file)), blob.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := gguf.Validate(ctx, s3, p, "good.gguf", sums, nil); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, s blob.Store, key string) []byte {
	t.Helper()
	rc, _, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
