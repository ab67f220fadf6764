package dispatcher_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/queue"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/dispatcher"
)

// TestInvalidLayerOptions: a job request whose GPTQ/AWQ options the commands would refuse (written
// to KV past the client) fails at once with the same check's message (domain.LayerOptions.Validate).
func TestInvalidLayerOptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rt, _ := fleetIn(t, ctx, s3Config("options"))
	startDispatcher(t, ctx, rt("dispatcher"), dispatcher.Config{Queue: queue.Config{AckWait: 2 * time.Second}})
	c := newClient(t, ctx, rt)
	calib := &fleet.Location{Prefix: "data/0123"}
	for _, tc := range []struct {
		name   string
		format domain.OutputFormat
		opts   domain.LayerOptions
		calib  *fleet.Location
		want   string
	}{
		{"gptq damp out of range", domain.FormatGPTQ, domain.LayerOptions{SeqLen: 16, Damp: 1.5}, calib, "damp 1.5 must be in (0, 1)"},
		{"gptq seqlen zero", domain.FormatGPTQ, domain.LayerOptions{Damp: 0.01}, calib, "seqlen 0 must be positive"},
		{"negative offset", domain.FormatGPTQ, domain.LayerOptions{RTN: true, CalibrationOffset: -1}, nil, "calibration_offset -1 must not be negative"},
		{"awq act-order", domain.FormatAWQ, domain.LayerOptions{SeqLen: 16, ActOrder: true}, calib, "act_order applies to gptq only"},
		{"awq sym", domain.FormatAWQ, domain.LayerOptions{SeqLen: 16, Sym: true}, calib, "awq quantizes asymmetrically"},
		{"awq rtn", domain.FormatAWQ, domain.LayerOptions{RTN: true}, nil, "rtn applies to gptq only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := domain.DefaultConfig(tc.format, "4bit")
			if !tc.opts.RTN {
				cfg.CalibrationDataPath = "/calib.txt"
			}
			req := &fleet.JobRequest{JobID: uuid.Must(uuid.NewV7()).String(), Model: "/m", ModelType: domain.ModelLocalDir,
				Location: &fleet.Location{Prefix: "models/none"}, Name: "m", Config: cfg,
				Layered: &fleet.LayerOptions{LayerOptions: tc.opts, Calibration: tc.calib}, SubmittedAt: time.Now().UTC()}
			if err := c.RT.PutRequest(ctx, req); err != nil {
				t.Fatal(err)
			}
			job := domain.NewJob(req.JobID, time.Now().UTC())
			job.Config = &req.Config
			if _, err := c.RT.Jobs.Create(ctx, job); err != nil {
				t.Fatal(err)
			}
			j, err := c.Wait(ctx, req.JobID, nil)
			if err != nil {
				t.Fatal(err)
			}
			if j.Status != domain.StatusFailed || !strings.Contains(j.ErrorMessage, tc.want) {
				t.Fatalf("job %s: %q, want FAILED with %q", j.Status, j.ErrorMessage, tc.want)
			}
		})
	}
}
