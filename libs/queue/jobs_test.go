package queue_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/queue"
)

func TestJobStore(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	s, err := queue.NewJobStore(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	cfg := domain.DefaultConfig(domain.FormatGGUF, "Q4_K_M")
	job := domain.NewJob("0190a0b0-0000-7000-8000-000000000001", now)
	job.Config = &cfg
	job.Source = &domain.SourceModel{ModelPath: "org/private", ModelType: domain.ModelHFHub, Architecture: "LlamaForCausalLM",
		ParameterCount: 27e6, Dtype: "bfloat16", HFToken: "hf_TOPSECRET"}
	if _, err := s.Create(ctx, job); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, job); !errors.Is(err, queue.ErrJobExists) {
		t.Fatalf("second Create: %v, want ErrJobExists", err)
	}
	got, rev, err := s.Get(ctx, job.JobID)
	if err != nil || rev == 0 || got.Status != domain.StatusPending || got.Config.QuantizationLevel != "Q4_K_M" {
		t.Fatalf("Get = %+v rev %d err %v", got, rev, err)
	}
	// The HF token never reaches the KV bucket.
	kv, _ := e.js.KeyValue(ctx, queue.JobsBucket)
	raw, _ := kv.Get(ctx, job.JobID)
	if strings.Contains(string(raw.Value()), "TOPSECRET") {
		t.Fatalf("secret stored in KV: %s", raw.Value())
	}
	if _, _, err := s.Get(ctx, "nope"); !errors.Is(err, queue.ErrJobNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
	if _, err := s.Update(ctx, "nope", func(*domain.QuantizationJob) error { return nil }); !errors.Is(err, queue.ErrJobNotFound) {
		t.Fatalf("Update missing: %v", err)
	}

	// Illegal transitions are refused and nothing is written.
	_, err = s.Update(ctx, job.JobID, func(j *domain.QuantizationJob) error { return j.Transition(domain.StatusCompleted, now) })
	if !errors.Is(err, domain.ErrIllegalTransition) {
		t.Fatalf("PENDING → COMPLETED: %v", err)
	}
	if _, rev2, _ := s.Get(ctx, job.JobID); rev2 != rev {
		t.Fatal("refused update was written")
	}
	if _, err := s.Update(ctx, job.JobID, func(j *domain.QuantizationJob) error {
		j.TotalLayers = 200
		return j.Transition(domain.StatusRunning, now)
	}); err != nil {
		t.Fatal(err)
	}

	// Watch sees the current state, then the changes.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates, err := s.Watch(wctx, job.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if u := <-updates; u.Job.Status != domain.StatusRunning {
		t.Fatalf("first watched value %+v", u.Job)
	}

	// Concurrent read-modify-write: 4 writers × 25 increments; CAS must not lose any.
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				if _, err := s.Update(ctx, job.JobID, func(j *domain.QuantizationJob) error {
					j.SetProgress(domain.Progress{LayersDone: j.CurrentLayer + 1, Layers: j.TotalLayers}, time.Now())
					return nil
				}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	final, _, err := s.Get(ctx, job.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if final.CurrentLayer != 100 || final.ProgressPercentage != 50 {
		t.Fatalf("after 100 concurrent increments: layer %d, %.1f%%", final.CurrentLayer, final.ProgressPercentage)
	}
	deadline := time.After(10 * time.Second)
	for seen := 0; seen < 100; {
		select {
		case u := <-updates:
			seen = u.Job.CurrentLayer
		case <-deadline:
			t.Fatal("watch did not deliver the updates")
		}
	}

	job2 := domain.NewJob("0190a0b0-0000-7000-8000-000000000002", now.Add(time.Second))
	if _, err := s.Create(ctx, job2); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0].JobID != job.JobID || list[1].JobID != job2.JobID {
		t.Fatalf("List = %v, %v", list, err)
	}
	if err := s.Delete(ctx, job2.JobID); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.List(ctx); len(list) != 1 {
		t.Fatalf("List after Delete: %d jobs", len(list))
	}
	if _, err := s.Create(ctx, &domain.QuantizationJob{JobID: "a.b", Status: domain.StatusPending}); !errors.Is(err, queue.ErrInvalidName) {
		t.Fatalf("dotted id: %v", err)
	}
	if _, err := s.Create(ctx, &domain.QuantizationJob{JobID: "x", Status: "weird"}); !errors.Is(err, domain.ErrInvalidConfig) {
		t.Fatalf("invalid job: %v", err)
	}
}

// TestJobStoreSurvivesRestart: job state is durable across a server restart.
func TestJobStoreSurvivesRestart(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	s, _ := queue.NewJobStore(ctx, e.js)
	if _, err := s.Create(ctx, domain.NewJob("j1", time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reconnect", 10*time.Second, func() bool { return e.nc.IsConnected() })
	got, _, err := s.Get(ctx, "j1")
	if err != nil || got.Status != domain.StatusPending {
		t.Fatalf("after restart: %+v %v", got, err)
	}
}
