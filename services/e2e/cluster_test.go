package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/sharedtest"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/client"
)

// Planted secrets: no log, KV value or message may contain them.
const (
	s3AccessKey = "e2e-access-key"
	s3SecretKey = "S3SECRET-planted-7f3a9c"
	hfToken     = "hf_PLANTEDTOKEN8d2b41"
)

// bin holds the built binaries; ref is `quantfleet quantize`'s tiny-llama Q4_K_M.
var (
	bin      string
	tiny     string
	ref      []byte
	refName  = "tiny-llama-Q4_K_M.gguf"
	setupErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: the multi-process scenarios are skipped under -short")
		os.Exit(0)
	}
	shared := sharedtest.Find()
	if shared == "" {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "e2e: ../shared is missing")
			os.Exit(1)
		}
		fmt.Println("e2e: ../shared is missing; skipping")
		os.Exit(0)
	}
	tiny = filepath.Join(shared, "models", "tiny-llama")
	tmp, err := os.MkdirTemp("", "quantfleet-e2e-")
	if err != nil {
		panic(err)
	}
	code := func() int {
		defer os.RemoveAll(tmp)
		bin = filepath.Join(tmp, "bin")
		mod, err := moduleDir()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		build := exec.Command("go", "build", "-o", bin+"/", "./quantfleet", "./dispatcher", "./worker", "./assembler")
		build.Dir = mod
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: building the binaries: %v\n%s", err, out)
			return 1
		}
		out := filepath.Join(tmp, "ref")
		q := exec.Command(filepath.Join(bin, "quantfleet"), "quantize", "--model", tiny, "--level", "Q4_K_M", "--output-dir", out, "--verbosity", "quiet")
		if b, err := q.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: quantfleet quantize: %v\n%s", err, b)
			return 1
		}
		if ref, err = os.ReadFile(filepath.Join(out, refName)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func moduleDir() (string, error) {
	dir, _ := filepath.Abs(".")
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no go.mod above %s", dir)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a started service process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// cluster is one fleet of separate processes.
type cluster struct {
	t       *testing.T
	dir     string
	env     []string
	natsURL string
	s3      string
	mu      sync.Mutex
	procs   map[string]*proc
	rt      *fleet.Runtime
	c       *client.Client
	servers []*proc // the NATS server and the S3 server, one process each
}

// newCluster starts a NATS server and an S3 server, each in a process of its own
// (`quantfleet dev-servers --serve nats|s3`).
func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), procs: map[string]*proc{}}
	natsPort, s3Port := freePort(t), freePort(t)
	c.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	c.s3 = fmt.Sprintf("127.0.0.1:%d", s3Port)
	c.env = append(os.Environ(), "NATS_URL="+c.natsURL, "S3_ENDPOINT="+c.s3, "S3_INSECURE=true", "S3_BUCKET=quantfleet",
		"AWS_ACCESS_KEY_ID="+s3AccessKey, "AWS_SECRET_ACCESS_KEY="+s3SecretKey, "LOG_LEVEL=debug")
	natsProc := c.startNATS()
	s3Proc := c.start("s3", "quantfleet", []string{"dev-servers", "--serve", "s3", "--dir", filepath.Join(c.dir, "data"),
		"--s3-addr", c.s3})
	c.servers = []*proc{natsProc, s3Proc}
	c.waitLog(natsProc, `"nats_url"`, 30*time.Second)
	c.waitLog(s3Proc, `"s3_endpoint"`, 30*time.Second)
	t.Cleanup(c.stopAll)
	cfg := fleet.Config{NATSURL: c.natsURL, S3Endpoint: c.s3, S3Insecure: true, S3Bucket: "quantfleet", S3Region: "us-east-1",
		S3AccessKey: s3AccessKey, S3SecretKey: s3SecretKey}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rt, err := fleet.Connect(ctx, cfg, "e2e", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.rt, c.c = rt, &client.Client{RT: rt}
	t.Cleanup(rt.Close)
	return c
}

// startNATS starts the NATS server (JetStream) on the cluster's address and data directory.
func (c *cluster) startNATS() *proc {
	return c.start("nats", "quantfleet", []string{"dev-servers", "--serve", "nats", "--dir", filepath.Join(c.dir, "data"),
		"--nats-addr", strings.TrimPrefix(c.natsURL, "nats://")})
}

// start runs binary name with args; its stdout and stderr go to <dir>/<name>.log (appended).
func (c *cluster) start(name, binary string, args []string, extraEnv ...string) *proc {
	c.t.Helper()
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, binary), args...)
	cmd.Env = append(append([]string{}, c.env...), extraEnv...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = c.dir
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	return p
}

func (c *cluster) proc(name string) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[name]
}

// startFleet starts a dispatcher, an assembler (keeping shards) and n workers.
func (c *cluster) startFleet(n int, workerEnv ...string) {
	c.startDispatcher()
	c.start("assembler", "assembler", []string{"--http-addr", "", "--keep-shards"})
	for i := 1; i <= n; i++ {
		c.startWorker(i, workerEnv...)
	}
}

func (c *cluster) startDispatcher(extraArgs ...string) *proc {
	args := append([]string{"--http-addr", "", "--ack-wait", "4s", "--retries", "2", "--retry-backoff", "200ms"}, extraArgs...)
	p := c.start("dispatcher", "dispatcher", args, "HF_TOKEN="+hfToken)
	if c.rt.Jobs == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.rt.WaitBound(ctx); err != nil {
			c.t.Fatal(err)
		}
	}
	return p
}

func (c *cluster) startWorker(i int, env ...string) *proc {
	name := fmt.Sprintf("worker%d", i)
	return c.start(name, "worker", []string{"--http-addr", "", "--name", name, "--concurrency", "1"}, env...)
}

// kill sends sig to a process and waits for it to exit.
func (c *cluster) kill(name string, sig syscall.Signal) {
	c.t.Helper()
	p := c.proc(name)
	if p == nil || !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (c *cluster) stopAll() {
	c.mu.Lock()
	ps := make([]*proc, 0, len(c.procs))
	for _, p := range c.procs {
		if !slices.Contains(c.servers, p) {
			ps = append(ps, p)
		}
	}
	c.mu.Unlock()
	for _, p := range ps {
		if p.alive() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range ps {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	for _, srv := range c.servers {
		if srv.alive() {
			_ = srv.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-srv.done:
			case <-time.After(10 * time.Second):
				_ = srv.cmd.Process.Kill()
			}
		}
	}
	if c.t.Failed() {
		for _, p := range append(ps, c.servers...) {
			b, _ := os.ReadFile(p.log)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			c.t.Logf("--- %s log (tail) ---\n%s", p.name, b)
		}
	}
}

// waitLog waits until p's log contains s.
func (c *cluster) waitLog(p *proc, s string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(p.log)
		if bytes.Contains(b, []byte(s)) {
			return
		}
		if !p.alive() {
			c.t.Fatalf("%s exited (%v) before logging %q:\n%s", p.name, p.err, s, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(p.log)
	c.t.Fatalf("%s did not log %q within %v:\n%s", p.name, s, timeout, b)
}

// cli runs the quantfleet CLI with the cluster's environment.
func (c *cluster) cli(args ...string) (code int, stdout, stderr string) {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(bin, "quantfleet"), args...)
	cmd.Env = c.env
	cmd.Dir = c.dir
	code, stdout, stderr = runExit(c.t, cmd)
	c.appendCLILog(args, stdout, stderr)
	return code, stdout, stderr
}

// runExit runs cmd to its end and returns its exit status and output; a command that cannot
// be run at all fails the test.
func runExit(t *testing.T, cmd *exec.Cmd) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func (c *cluster) appendCLILog(args []string, out, errs string) {
	f, err := os.OpenFile(filepath.Join(c.dir, "cli.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "$ quantfleet %s\n%s%s", strings.Join(args, " "), out, errs)
}

// submit submits tiny-llama at level and returns the job id.
func (c *cluster) submit(level string, extra ...string) string {
	c.t.Helper()
	return c.submitModel(tiny, level, extra...)
}

// submitModel submits a job of the model directory and returns its id.
func (c *cluster) submitModel(model, level string, extra ...string) string {
	c.t.Helper()
	code, out, errs := c.cli(append([]string{"submit", "--model", model, "--level", level}, extra...)...)
	if code != 0 {
		c.t.Fatalf("submit: exit %d: %s", code, errs)
	}
	id := strings.TrimSpace(out)
	if !fleet.ValidToken(id) {
		c.t.Fatalf("submit printed %q, not a job id", out)
	}
	return id
}

func (c *cluster) job(id string) *domain.QuantizationJob {
	c.t.Helper()
	j, err := c.c.Job(context.Background(), id)
	if err != nil {
		c.t.Fatal(err)
	}
	return j
}

// waitJob polls until cond holds for the job.
func (c *cluster) waitJob(id string, timeout time.Duration, what string, cond func(*domain.QuantizationJob) bool) *domain.QuantizationJob {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var j *domain.QuantizationJob
	for time.Now().Before(deadline) {
		j = c.job(id)
		if cond(j) {
			return j
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("job %s: %s not reached within %v: %+v", id, what, timeout, j)
	return nil
}

func (c *cluster) waitDone(id string, timeout time.Duration) *domain.QuantizationJob {
	c.t.Helper()
	j := c.waitJob(id, timeout, "an end state", func(j *domain.QuantizationJob) bool { return j.Status.Terminal() })
	if j.Status != domain.StatusCompleted {
		c.t.Fatalf("job %s ended %s: %s", id, j.Status, j.ErrorMessage)
	}
	return j
}

// getAndCompare downloads the result with `quantfleet get` and compares it with quantize's.
func (c *cluster) getAndCompare(id string) {
	c.t.Helper()
	out := filepath.Join(c.t.TempDir(), "out")
	code, stdout, errs := c.cli("get", id, "--output-dir", out)
	if code != 0 {
		c.t.Fatalf("get: exit %d: %s", code, errs)
	}
	got, err := os.ReadFile(filepath.Join(out, refName))
	if err != nil {
		c.t.Fatalf("get wrote no %s (%s): %v", refName, stdout, err)
	}
	if !bytes.Equal(got, ref) {
		c.t.Fatalf("job %s: the fleet's file (%d bytes) differs from quantize's (%d bytes)", id, len(got), len(ref))
	}
}

// shards lists a job's shard objects.
func (c *cluster) shards(id string) []string {
	c.t.Helper()
	var keys []string
	for oi, err := range c.rt.Store.List(context.Background(), fleet.ShardPrefix(id)) {
		if err != nil {
			c.t.Fatal(err)
		}
		keys = append(keys, oi.Key)
	}
	return keys
}

// objects counts every object a job left (intermediates and output).
func (c *cluster) objects(id string) int {
	c.t.Helper()
	n := 0
	for _, p := range []string{fleet.JobPrefix(id), fleet.OutputPrefix(id)} {
		for _, err := range c.rt.Store.List(context.Background(), p) {
			if err != nil {
				c.t.Fatal(err)
			}
			n++
		}
	}
	return n
}

// logLines returns the lines of p's log that contain all of subs.
func logLines(p *proc, subs ...string) []string {
	f, err := os.Open(p.log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// jsonField extracts a string field of a JSON log line.
func jsonField(line, key string) string {
	var m map[string]any
	if json.Unmarshal([]byte(line), &m) != nil {
		return ""
	}
	s, _ := m[key].(string)
	return s
}
