package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"quantfleet.dev/libs/blob/s3embed"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/hub"
	"quantfleet.dev/libs/natsembed"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/client"
	"quantfleet.dev/services/fleet/local"
)

type runFlags struct {
	common
	output
	job     jobFlags
	hfToken string
	workers int
	dataDir string
	device  deviceFlag
}

// runRun is `quantfleet run`: the whole fleet in this process (embedded NATS and S3, a dispatcher,
// an assembler and worker goroutines), writing the result like `quantfleet quantize` does.
func runRun(ctx context.Context, env Env, args []string) error {
	var f runFlags
	fs := newFlagSet("run", env)
	f.common.register(fs)
	f.job.register(fs, true)
	f.output.register(fs, domain.DefaultOutputDir, "directory for the result")
	fs.StringVar(&f.hfToken, "hf-token", "", "Hugging Face token for gated or private models (default $HF_TOKEN)")
	fs.IntVar(&f.workers, "workers", 2, "worker goroutines (concurrent layer tasks)")
	f.device.register(fs)
	fs.StringVar(&f.dataDir, "data-dir", "", "keep the embedded fleet's NATS store and objects here, so that an interrupted job can be resumed with `quantfleet resume JOB --data-dir DIR` (default: a temporary directory)")
	verb, cfg, layered, err := f.job.parseRequest(fs, args, &f.common)
	if err != nil {
		return err
	}
	if strings.HasPrefix(f.job.model, "s3://") {
		return usagef("run reads local directories and Hub ids; submit s3:// models to a fleet")
	}
	if f.workers < 1 {
		return usagef("--workers must be at least 1")
	}
	// The embedded S3 gateway changes the working directory while it runs: resolve every path now,
	// keeping the name the user gave (it names the model in the file, as quantize does).
	name := f.job.modelName
	if st, err := os.Stat(f.job.model); err == nil {
		if !st.IsDir() {
			return usagef("model path %s is not a directory", f.job.model)
		}
		if name == "" {
			name = client.BaseName(f.job.model)
		}
		if f.job.model, err = filepath.Abs(f.job.model); err != nil {
			return err
		}
	} else if !hub.LooksLikeModelID(f.job.model) {
		return usagef("model %s: no such directory, and not a Hugging Face Hub id (org/name[@revision])", f.job.model)
	}
	outDir, err := filepath.Abs(f.outputDir)
	if err != nil {
		return err
	}
	if err := checkOutput(outDir, f.job.model, name, cfg, f.overwrite); err != nil {
		return err
	}
	dataDir := f.dataDir
	if dataDir != "" {
		if dataDir, err = filepath.Abs(dataDir); err != nil {
			return err
		}
	}
	log := logger(env, verb, f.json)
	defer log.Sync()
	// The workers of this process compute on the device: chosen (or refused) before the fleet starts.
	dev, err := f.device.open(ctx, env, log)
	if err != nil {
		return err
	}
	defer dev.Close()
	var opts domain.LayerOptions
	if layered != nil {
		opts = layered.LayerOptions
	}
	ctx = f.device.withLayers(ctx, cfg.TargetFormat, opts, log)
	hc := &hub.Client{Token: firstNonEmpty(f.hfToken, env.Getenv("HF_TOKEN")), Logger: log}
	if ep := env.Getenv("HF_ENDPOINT"); ep != "" {
		hc.Endpoint = ep
	}
	lf, err := local.Start(ctx, local.Options{DataDir: dataDir, Workers: f.workers, Slots: 1, Hub: hc, Log: log})
	if err != nil {
		return fmt.Errorf("starting the embedded fleet: %w", err)
	}
	defer lf.Close()
	c := &client.Client{RT: lf.RT, Overwrite: f.overwrite}
	sub, err := c.Submit(ctx, client.SubmitRequest{Model: f.job.model, Name: name, Config: cfg, TokenizerPre: f.job.tokenizerPre, Layered: layered})
	if err != nil {
		return asUsage(err)
	}
	log.Info("job submitted", zap.String("job", sub.JobID))
	err = waitAndFetch(ctx, env, c, sub.JobID, verb, f.json, outDir, &f.device)
	if err != nil && ctx.Err() != nil && dataDir != "" {
		fmt.Fprintf(env.Stderr, "quantfleet: interrupted; continue with: quantfleet resume %s --data-dir %s --output-dir %s\n", sub.JobID, dataDir, outDir)
	}
	return err
}

// startLocal starts an embedded fleet on dataDir (made absolute first).
func startLocal(ctx context.Context, env Env, dataDir string, workers int, natsPort int, log *zap.Logger) (*local.Fleet, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(abs, "nats")); err != nil {
		return nil, usagef("%s holds no embedded fleet (no nats directory): give the --data-dir of quantfleet run", abs)
	}
	hc := &hub.Client{Token: env.Getenv("HF_TOKEN"), Logger: log}
	if ep := env.Getenv("HF_ENDPOINT"); ep != "" {
		hc.Endpoint = ep
	}
	return local.Start(ctx, local.Options{DataDir: abs, Workers: max(workers, 1), Slots: 1, Hub: hc, NATSPort: natsPort, Log: log})
}

type devServerFlags struct {
	dir, natsAddr, natsHTTP, s3Addr, bucket, serve string
}

// runDevServers is `quantfleet dev-servers`: a NATS server with JetStream and an S3 server (the
// Versity gateway), for a fleet on one machine and for tests; --serve picks one of them, so that
// each can run in a process of its own.
func runDevServers(ctx context.Context, env Env, args []string) error {
	var f devServerFlags
	fs := newFlagSet("dev-servers", env)
	fs.StringVar(&f.dir, "dir", "", "data directory (NATS store and objects) (required)")
	fs.StringVar(&f.serve, "serve", "nats,s3", "which servers to run: nats, s3 or nats,s3")
	fs.StringVar(&f.natsAddr, "nats-addr", "127.0.0.1:4222", "NATS client address")
	fs.StringVar(&f.natsHTTP, "nats-http-addr", "", "NATS monitoring address (/healthz, /jsz), e.g. 127.0.0.1:8222")
	fs.StringVar(&f.s3Addr, "s3-addr", "127.0.0.1:7070", "S3 address")
	fs.StringVar(&f.bucket, "s3-bucket", fleet.DefaultBucket, "bucket to create")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.dir == "" {
		return usagef("--dir is required")
	}
	serveNATS, serveS3 := false, false
	for _, s := range strings.Split(f.serve, ",") {
		switch strings.TrimSpace(s) {
		case "nats":
			serveNATS = true
		case "s3":
			serveS3 = true
		default:
			return usagef("--serve %q: want nats, s3 or nats,s3", f.serve)
		}
	}
	dir, err := filepath.Abs(f.dir)
	if err != nil {
		return err
	}
	ready := map[string]string{}
	if serveNATS {
		host, port, err := splitPort(f.natsAddr)
		if err != nil {
			return usagef("--nats-addr: %v", err)
		}
		nopts := natsembed.Options{Dir: filepath.Join(dir, "nats"), Host: host, Port: port}
		if f.natsHTTP != "" {
			h, p, err := splitPort(f.natsHTTP)
			if err != nil || h != host {
				return usagef("--nats-http-addr must be on the host of --nats-addr (%s)", host)
			}
			nopts.HTTPPort = p
		}
		ns, err := natsembed.Start(nopts)
		if err != nil {
			return err
		}
		defer ns.Shutdown()
		ready["nats_url"], ready["nats_monitor"] = ns.ClientURL(), ns.MonitorURL()
	}
	if serveS3 {
		ak, sk := env.Getenv("AWS_ACCESS_KEY_ID"), env.Getenv("AWS_SECRET_ACCESS_KEY")
		if ak == "" || sk == "" {
			return usagef("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: they become the S3 server's root credentials")
		}
		s3, err := s3embed.StartWithOptions(ctx, filepath.Join(dir, "s3"), s3embed.Options{Addr: f.s3Addr, AccessKey: ak, SecretKey: sk})
		if err != nil {
			return err
		}
		defer s3.Close()
		cfg := fleet.Config{S3Endpoint: s3.Endpoint, S3Insecure: true, S3Bucket: f.bucket, S3Region: s3.Region, S3AccessKey: ak, S3SecretKey: sk}
		store, err := cfg.OpenStore("")
		if err != nil {
			return err
		}
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = store.EnsureBucket(bctx)
		cancel()
		if err != nil {
			return err
		}
		ready["s3_endpoint"], ready["s3_bucket"] = s3.Endpoint, f.bucket
	}
	_ = json.NewEncoder(env.Stdout).Encode(ready)
	<-ctx.Done()
	return nil
}

func splitPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, errors.New("bad port " + p)
	}
	if n == 0 {
		n = -1 // natsembed: a free port
	}
	return h, n, nil
}
