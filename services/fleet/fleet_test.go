package fleet_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	protobuf "google.golang.org/protobuf/proto"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/gguf"
)

func task() *pb.Task {
	return &pb.Task{JobId: "j1", TaskId: "t0001", Kind: pb.TaskKind_TASK_KIND_GGUF_TENSORS, Pool: "cpu",
		Plan: &pb.PlanRef{Key: fleet.PlanKey("j1")}, Output: &pb.OutputSpec{Prefix: fleet.ShardPrefix("j1")},
		Args: &pb.Task_GgufTensors{GgufTensors: &pb.GGUFTensorsArgs{Alignment: 32}}}
}

func TestTaskRoundTripAndChecks(t *testing.T) {
	b, err := fleet.EncodeTask(task())
	if err != nil {
		t.Fatal(err)
	}
	got, err := fleet.DecodeTask(b)
	if err != nil {
		t.Fatal(err)
	}
	if fleet.TaskOutputKey(got) != "jobs/j1/shards/t0001.bin" || fleet.TaskMsgID(got) != "j1/t0001/0" {
		t.Errorf("output %s msg id %s", fleet.TaskOutputKey(got), fleet.TaskMsgID(got))
	}
	bad := []struct {
		name string
		edit func(*pb.Task)
	}{
		{"shard outside its job", func(t *pb.Task) { t.Output.Prefix = "models/" }},
		{"shard of another job", func(t *pb.Task) { t.Output.Prefix = fleet.ShardPrefix("j2") }},
		{"no plan", func(t *pb.Task) { t.Plan = nil }},
		{"assembly to a path", func(t *pb.Task) {
			t.Kind = pb.TaskKind_TASK_KIND_ASSEMBLE
			t.Output.Prefix = fleet.OutputPrefix("j1")
			t.Args = &pb.Task_Assemble{Assemble: &pb.AssembleArgs{OutputName: "../../x.gguf"}}
		}},
		{"junk", nil},
	}
	for _, tt := range bad {
		var b []byte
		if tt.edit == nil {
			b = []byte("definitely not protobuf \xff\xff")
		} else {
			tk := task()
			tt.edit(tk)
			b, _ = protobuf.Marshal(tk) // without CheckTask, as a forger would

		}
		if _, err := fleet.DecodeTask(b); err == nil {
			t.Errorf("%s: decoded", tt.name)
		}
	}
}

func TestConfigFromEnvironmentAndRedaction(t *testing.T) {
	env := map[string]string{"NATS_URL": "nats://user:hunter2@10.0.0.1:4222", "S3_ENDPOINT": "s3.local:9000", "S3_INSECURE": "true",
		"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "topsecret", "NATS_PASSWORD": "pw", "S3_BUCKET": "bk"}
	var c fleet.Config
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.Register(fs, func(k string) string { return env[k] })
	if err := fs.Parse([]string{"--s3-region", "eu-west-1"}); err != nil {
		t.Fatal(err)
	}
	if c.S3Endpoint != "s3.local:9000" || !c.S3Insecure || c.S3Bucket != "bk" || c.S3Region != "eu-west-1" ||
		c.S3SecretKey != "topsecret" || c.NATSPassword != "pw" {
		t.Errorf("config %+v", c)
	}
	desc := c.String() + fmt.Sprint(c.LogFields())
	for _, secret := range []string{"topsecret", "hunter2", "pw@", "AKIA"} {
		if strings.Contains(desc, secret) {
			t.Errorf("description leaks %q: %s", secret, desc)
		}
	}
	var none fleet.Config
	fs = flag.NewFlagSet("y", flag.ContinueOnError)
	none.Register(fs, func(string) string { return "" })
	_ = fs.Parse(nil)
	if _, err := none.OpenStore(""); !errors.Is(err, fleet.ErrConfig) {
		t.Errorf("no S3 endpoint: %v", err)
	}
}

func TestPermanent(t *testing.T) {
	for _, err := range []error{blob.ErrNotFound, gguf.ErrBadPlan, fmt.Errorf("x: %w", domain.ErrInvalidConfig)} {
		if !fault.Permanent(err) {
			t.Errorf("%v should be permanent", err)
		}
	}
	if fault.Permanent(errors.New("connection refused")) {
		t.Error("a plain error is transient")
	}
}

// TestRedactNATSURLs: credentials in NATS URLs never reach descriptions, whether the URL parses or not.
func TestRedactNATSURLs(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"nats://user:hunter2@10.0.0.1:4222", "nats://REDACTED@10.0.0.1:4222"},
		{"user:hunter2@10.0.0.1:4222", "REDACTED@10.0.0.1:4222"},
		{"hunter2@nats:4222", "REDACTED@nats:4222"},
		{"nats://u:p@ss:hunter2@h:4222", "nats://REDACTED@h:4222"},
		{"tls://a:hunter2@h1:4222, nats://h2:4222,b:hunter2@h3", "tls://REDACTED@h1:4222, nats://h2:4222,REDACTED@h3"},
		{"nats://%zz:hunter2@h:4222", "nats://REDACTED@h:4222"},
		{"nats://h:4222", "nats://h:4222"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := fleet.Config{NATSURL: tc.url, NATSConnectTimeout: 100 * time.Millisecond}.ConnectNATS(ctx, "test", nil)
		cancel()
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: connect error %v", tc.url, err)
		}
		got := fleet.Config{NATSURL: tc.url}.String()
		if !strings.Contains(got, "nats="+tc.want+" ") || strings.Contains(got, "hunter2") {
			t.Errorf("%q: %s, want nats=%s", tc.url, got, tc.want)
		}
	}
}
