package dispatcher_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/queue"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/assembler"
	"quantfleet.dev/services/fleet/client"
	"quantfleet.dev/services/fleet/dispatcher"
	"quantfleet.dev/services/fleet/worker"
	"quantfleet.dev/services/internal/testenv"
)

// proxy forwards TCP connections to the real S3 server until it is cut: then every connection
// drops and new ones are refused, as when the server is down, until it is restored.
type proxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	l      net.Listener
	conns  map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, target: target, conns: map[net.Conn]bool{}}
	p.listen("127.0.0.1:0")
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) listen(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.l, p.addr = l, l.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[s] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) restore() { p.listen(p.addr) }

// copyModel copies a checkpoint directory and lets edit spoil the copy.
func copyModel(t *testing.T, src string, edit func(dir string)) string {
	dir := filepath.Join(t.TempDir(), filepath.Base(src)+"-copy")
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(dir, func(p string, _ os.DirEntry, _ error) error { return os.Chmod(p, 0o755) })
	edit(dir)
	return dir
}

// poisonTensor writes a bf16 NaN as the first value of tensor name.
func poisonTensor(t *testing.T, file, name string) {
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n uint64
	if err := binary.Read(f, binary.LittleEndian, &n); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(f, hdr); err != nil {
		t.Fatal(err)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &h); err != nil {
		t.Fatal(err)
	}
	var e struct {
		Offsets [2]int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(h[name], &e); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xc0, 0x7f}, 8+int64(n)+e.Offsets[0]); err != nil {
		t.Fatal(err)
	}
}

func setConfig(t *testing.T, dir, key string, value any) {
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg[key] = value
	b, _ = json.Marshal(cfg)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFaultClasses runs one job per class of failure on a fleet whose object storage sits behind a
// cuttable proxy: storage down for a while (transient: the job waits, showing why, and completes
// with quantize's bytes), storage down past the budget (fails, saying so), NaN weights and an
// unsupported architecture (permanent: fail at once, on the first attempt, naming the user's path).
func TestFaultClasses(t *testing.T) {
	tiny := testenv.TinyLlama(t)
	nan := copyModel(t, tiny, func(dir string) {
		poisonTensor(t, filepath.Join(dir, "model.safetensors"), "model.layers.3.mlp.down_proj.weight")
	})
	alien := copyModel(t, tiny, func(dir string) { setConfig(t, dir, "architectures", []string{"AlienForCausalLM"}) })
	badTok := copyModel(t, tiny, func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{"model": {"type": "BPE", "vocab": 7`), 0o644); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(filepath.Join(dir, "tokenizer.model"))
	})

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	want := testenv.QuantizeGGUF(t, tiny, "Q4_K_M")

	for i, tc := range []struct {
		name   string
		model  string
		budget time.Duration
		outage time.Duration // storage cut once the first layer is done (-1: never restored)
		status domain.JobStatus
		msg    []string // in the error message
	}{
		{"storage down for a while", tiny, time.Minute, 4 * time.Second, domain.StatusCompleted, nil},
		{"storage down past the budget", tiny, 2 * time.Second, -1, domain.StatusFailed,
			[]string{"gave up waiting after 2s", "object storage unavailable", "after 1 attempt"}},
		{"NaN weights", nan, time.Minute, 0, domain.StatusFailed, []string{"NaN", "after 1 attempt", "model.layers.3.mlp.down_proj.weight"}},
		{"unsupported architecture", alien, time.Minute, 0, domain.StatusFailed, []string{"AlienForCausalLM", alien}},
		{"broken tokenizer.json", badTok, time.Minute, 0, domain.StatusFailed, []string{badTok + "/tokenizer.json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s3Config("faults" + string(rune('a'+i)))
			p := startProxy(t, s3srv.Endpoint)
			cfg.S3Endpoint, cfg.S3MaxRetries = p.addr, 1
			backoff := fleet.Backoff{Budget: tc.budget, Min: 100 * time.Millisecond, Max: 500 * time.Millisecond}
			rt, store := fleetIn(t, ctx, cfg)
			startDispatcher(t, ctx, rt("dispatcher"), dispatcher.Config{Queue: queue.Config{AckWait: 5 * time.Second, MaxDeliver: 5},
				Backoff: backoff, TempDir: t.TempDir()})
			run(t, ctx, worker.New(rt("worker"), worker.Config{Slots: 2, Backoff: backoff, TaskDelay: 300 * time.Millisecond,
				RetryDelay: func(uint64) time.Duration { return 100 * time.Millisecond }}, nil, zaptest.NewLogger(t)).Run)
			run(t, ctx, assembler.New(rt("assembler"), assembler.Config{Backoff: backoff}, nil, zaptest.NewLogger(t)).Run)
			c := newClient(t, ctx, rt)
			sub, err := c.Submit(ctx, client.SubmitRequest{Model: tc.model, Config: domain.DefaultConfig(domain.FormatGGUF, "Q4_K_M")})
			if err != nil {
				t.Fatal(err)
			}
			if tc.outage != 0 {
				waitFor(t, ctx, func() bool { j, _ := c.Job(ctx, sub.JobID); return j != nil && j.CurrentLayer >= 1 })
				p.cut()
				waitFor(t, ctx, func() bool {
					j, _ := c.Job(ctx, sub.JobID)
					return j != nil && j.Waiting == "waiting for object storage"
				})
				if tc.outage > 0 {
					time.Sleep(tc.outage)
					if j, _ := c.Job(ctx, sub.JobID); j.Status != domain.StatusRunning {
						t.Fatalf("job %s during a short outage: %s", j.Status, j.ErrorMessage)
					}
					p.restore()
				}
			}
			j, err := c.Wait(ctx, sub.JobID, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("job %s: %q", j.Status, j.ErrorMessage)
			if j.Status != tc.status {
				t.Fatalf("job %s (%s), want %s", j.Status, j.ErrorMessage, tc.status)
			}
			for _, s := range tc.msg {
				if !strings.Contains(j.ErrorMessage, s) {
					t.Errorf("error message %q lacks %q", j.ErrorMessage, s)
				}
			}
			if strings.Contains(j.ErrorMessage, "quantfleet-plan-") || j.Waiting != "" {
				t.Errorf("error message %q names a dispatcher temp path, or waiting %q left", j.ErrorMessage, j.Waiting)
			}
			// A failed job leaves no objects and records; a completed one only its output.
			if tc.outage < 0 {
				p.restore() // what could not be removed while storage was down goes once it is back
			}
			waitFor(t, ctx, func() bool {
				left, err := blob.ListAll(ctx, store, fleet.JobPrefix(sub.JobID))
				out, err2 := blob.ListAll(ctx, store, fleet.OutputPrefix(sub.JobID))
				recs, err3 := c.RT.Done.ListJob(ctx, sub.JobID)
				return err == nil && err2 == nil && err3 == nil && len(left) == 0 && len(recs) == 0 &&
					(len(out) == 1) == (tc.status == domain.StatusCompleted)
			})
			if tc.status == domain.StatusCompleted {
				got, err := c.Download(ctx, sub.JobID, t.TempDir(), "", nil)
				if err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(got.OutputPath); !bytes.Equal(b, want) {
					t.Fatal("output differs from quantize's")
				}
			}
		})
	}
}
