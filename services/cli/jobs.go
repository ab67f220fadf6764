package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"quantfleet.dev/libs/atomicfile"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hub"
	"quantfleet.dev/libs/quantize"

	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/client"
	"quantfleet.dev/services/fleet/modelstore"
)

// The fleet client commands: submit, status, watch, list, cancel, resume, get.

// jobFlags are the flags that describe a job (shared by submit, run and resume).
type jobFlags struct {
	model, format, level, outputName, tokenizerPre, pool, modelName string
	withModel                                                       bool
	layer                                                           layerFlags // gptq / awq, as `quantize`
	fs                                                              *flag.FlagSet
}

func (f *jobFlags) register(fs *flag.FlagSet, withModel bool) {
	if withModel {
		fs.StringVar(&f.model, "model", "", "local model directory, Hugging Face Hub id org/name[@revision], or s3://bucket/prefix (required)")
		fs.StringVar(&f.tokenizerPre, "tokenizer-pre", "", "override tokenizer.ggml.pre for BPE tokenizers llama.cpp does not recognise")
		fs.StringVar(&f.pool, "pool", "", "worker pool of the job's tasks (cpu, gpu or any pool your workers serve; default: the dispatcher's)")
		fs.StringVar(&f.modelName, "model-name", "", "model name in the file's metadata (default: the directory's base name, the Hub id, or the s3 prefix's last element)")
		f.layer.register(fs)
	}
	f.withModel, f.fs = withModel, fs
	fs.StringVar(&f.format, "format", "gguf", "output format: gguf, gptq or awq")
	fs.StringVar(&f.level, "level", "", "quantization level, e.g. Q4_K_M")
	fs.StringVar(&f.outputName, "output-name", "", "file name of the result (default: <model>-<level>.gguf)")
}

// config validates the flags into a QuantizationConfig.
func (f *jobFlags) config(v domain.Verbosity, jsonOut bool) (domain.QuantizationConfig, error) {
	format, err := domain.ParseOutputFormat(f.format)
	if err != nil {
		return domain.QuantizationConfig{}, usageError{err}
	}
	cfg := domain.DefaultConfig(format, f.level)
	cfg.OutputName, cfg.Verbosity = f.outputName, v
	if jsonOut {
		cfg.OutputFormat = domain.OutputJSON
	}
	if err := cfg.Normalize(); err != nil {
		return cfg, usageError{err}
	}
	if format != domain.FormatGGUF && !f.withModel {
		return cfg, usagef("format %s: resume checks gguf levels only; resume without --level", format)
	}
	if format != domain.FormatGGUF {
		cfg.CalibrationSamples, cfg.GroupSize = f.layer.calibSamples, f.layer.groupSize
		if f.layer.calibData != "" {
			abs, err := filepath.Abs(f.layer.calibData)
			if err != nil {
				return cfg, err
			}
			cfg.CalibrationDataPath = abs
		}
		if err := cfg.Normalize(); err != nil {
			return cfg, usageError{err}
		}
	}
	return cfg, nil
}

// request is the checked config and GPTQ/AWQ options (nil for gguf) of the job that submit and
// run make: --model is required.
// parseRequest parses the command line of a command that submits a job (submit, run) and builds
// the job's config and options.
func (f *jobFlags) parseRequest(fs *flag.FlagSet, args []string, c *common) (domain.Verbosity, domain.QuantizationConfig, *fleet.LayerOptions, error) {
	if err := parseFlags(fs, args); err != nil {
		return "", domain.QuantizationConfig{}, nil, err
	}
	verb, err := c.parse()
	if err != nil {
		return "", domain.QuantizationConfig{}, nil, err
	}
	cfg, layered, err := f.request(verb, c.json)
	return verb, cfg, layered, err
}

func (f *jobFlags) request(verb domain.Verbosity, jsonOut bool) (domain.QuantizationConfig, *fleet.LayerOptions, error) {
	if f.model == "" {
		return domain.QuantizationConfig{}, nil, usagef("--model is required")
	}
	cfg, err := f.config(verb, jsonOut)
	if err != nil {
		return cfg, nil, err
	}
	layered, err := f.layered(cfg)
	return cfg, layered, err
}

// layered returns a GPTQ/AWQ job's settings beyond cfg (nil for gguf), checked as `quantize`
// checks them.
func (f *jobFlags) layered(cfg domain.QuantizationConfig) (*fleet.LayerOptions, error) {
	o, err := f.layer.options(f.fs, cfg)
	if err != nil || cfg.TargetFormat == domain.FormatGGUF {
		return nil, err
	}
	return &fleet.LayerOptions{LayerOptions: o}, nil
}

// checkOutput fails before a job runs when its result could not be written to dir: the name it
// will get (as the client and the dispatcher derive it) holds something it may not replace.
func checkOutput(dir, model, modelName string, cfg domain.QuantizationConfig, overwrite bool) error {
	name := cfg.OutputName
	if name == "" {
		if modelName == "" {
			switch {
			case strings.HasPrefix(model, "s3://"):
				modelName = path.Base("/" + strings.Trim(strings.TrimPrefix(model, "s3://"), "/"))
			case hub.LooksLikeModelID(model) && !isDir(model):
				modelName, _, _ = hub.ParseModelID(model)
			default:
				modelName = client.BaseName(model)
			}
		}
		name = quantize.DefaultOutputName(modelName, cfg.QuantizationLevel, cfg.TargetFormat)
	}
	o := atomicfile.Options{Magic: gguf.Magic, Overwrite: overwrite}
	return atomicfile.Check(dir, name, cfg.TargetFormat != domain.FormatGGUF, o)
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func asUsage(err error) error {
	if err != nil && fault.BadInput(err) {
		return usageError{err}
	}
	return err
}

// fleetJobFlags are the flags of submit and resume: the fleet's connection, the job's flags
// (with --model and the gptq/awq options for submit), --wait and where the result goes.
type fleetJobFlags struct {
	fleetFlags
	output
	job  jobFlags
	wait bool
}

func (f *fleetJobFlags) register(fs *flag.FlagSet, env Env, withModel bool, waitUsage, outputUsage string) {
	f.fleetFlags.register(fs, env)
	f.job.register(fs, withModel)
	fs.BoolVar(&f.wait, "wait", false, waitUsage)
	f.output.register(fs, "", outputUsage)
}

func runSubmit(ctx context.Context, env Env, args []string) error {
	var f fleetJobFlags
	fs := newFlagSet("submit", env)
	f.register(fs, env, true, "follow the job until it ends (exit 1 unless it completes)", "with --wait: download the result into this directory")
	verb, cfg, layered, err := f.job.parseRequest(fs, args, &f.common)
	if err != nil {
		return err
	}
	if f.wait && f.outputDir != "" {
		if err := checkOutput(f.outputDir, f.job.model, f.job.modelName, cfg, f.overwrite); err != nil {
			return err
		}
	}
	log := logger(env, verb, f.json)
	defer log.Sync()
	c, closeFn, err := f.connect(ctx, log, true)
	if err != nil {
		return asUsage(err)
	}
	defer closeFn()
	c.Overwrite = f.overwrite
	sub, err := c.Submit(ctx, client.SubmitRequest{Model: f.job.model, Name: f.job.modelName, Config: cfg, TokenizerPre: f.job.tokenizerPre,
		Pool: f.job.pool, Upload: uploadProgress(env, verb, f.json), Layered: layered})
	if err != nil {
		return asUsage(err)
	}
	if !f.wait {
		return printResult(env, f.json, sub, func(w io.Writer) { fmt.Fprintln(w, sub.JobID) })
	}
	if !f.json && verb != domain.VerbosityQuiet {
		fmt.Fprintf(env.Stderr, "job %s submitted\n", sub.JobID)
	}
	return waitAndFetch(ctx, env, c, sub.JobID, verb, f.json, f.outputDir, nil)
}

// waitAndFetch follows a job to its end, downloads the result into outputDir when given, and
// prints the result (the job, or the local file's record).
// dev, when not nil, is the device this process's workers computed on (run), recorded in the
// result's metadata.
func waitAndFetch(ctx context.Context, env Env, c *client.Client, id string, verb domain.Verbosity, jsonOut bool, outputDir string, dev *deviceFlag) error {
	w := newJobWatcher(env, verb, jsonOut)
	j, err := c.Wait(ctx, id, w.update)
	w.done()
	if err != nil {
		return asUsage(err)
	}
	if j.Status != domain.StatusCompleted {
		msg := string(j.Status)
		if j.ErrorMessage != "" {
			msg += ": " + j.ErrorMessage
		}
		return fmt.Errorf("job %s %s", id, msg)
	}
	if outputDir == "" {
		return printResult(env, jsonOut, j, func(w io.Writer) { fmt.Fprintf(w, "%s  %s\n", j.JobID, j.Result.OutputPath) })
	}
	res, err := c.Download(ctx, id, outputDir, "", nil)
	if err != nil {
		return asUsage(err)
	}
	if dev != nil {
		res.QuantizationMetadata = dev.record(res.QuantizationMetadata)
	}
	return printResult(env, jsonOut, res, func(w io.Writer) { printModel(w, res, j.Config.QuantizationLevel) })
}

func printModel(w io.Writer, res *domain.QuantizedModel, level string) {
	fmt.Fprintf(w, "%s  %s %s  %.1f MiB (%.1f%% of the source)  %s\n", res.OutputPath, res.Format, level,
		float64(res.FileSize)/(1<<20), 100*res.CompressionRatio, res.ValidationStatus)
}

func runStatus(ctx context.Context, env Env, args []string) error {
	return jobAction(ctx, env, "status", args, (*client.Client).Job, jobSummary)
}

// jobAction runs a command that does one thing to a job and prints it (status, cancel).
func jobAction(ctx context.Context, env Env, name string, args []string,
	do func(*client.Client, context.Context, string) (*domain.QuantizationJob, error), human func(io.Writer, *domain.QuantizationJob)) error {
	f, _, id, c, closeFn, err := jobClient(ctx, env, name, args)
	if err != nil {
		return err
	}
	defer closeFn()
	j, err := do(c, ctx, id)
	if err != nil {
		return asUsage(err)
	}
	return printResult(env, f.json, j, func(w io.Writer) { human(w, j) })
}

func runWatch(ctx context.Context, env Env, args []string) error {
	f, verb, id, c, closeFn, err := jobClient(ctx, env, "watch", args)
	if err != nil {
		return err
	}
	defer closeFn()
	w := newJobWatcher(env, verb, f.json)
	j, err := c.Wait(ctx, id, w.update)
	w.done()
	if err != nil {
		return asUsage(err)
	}
	if err := printResult(env, f.json, j, func(w io.Writer) {
		if j.Result != nil {
			fmt.Fprintln(w, j.Result.OutputPath)
		}
	}); err != nil {
		return err
	}
	if j.Status != domain.StatusCompleted {
		return fmt.Errorf("job %s %s%s", id, j.Status, prefixed(": ", j.ErrorMessage))
	}
	return nil
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

func runList(ctx context.Context, env Env, args []string) error {
	var f fleetFlags
	fs := newFlagSet("list", env)
	f.register(fs, env)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	verb, err := f.parse()
	if err != nil {
		return err
	}
	log := logger(env, verb, f.json)
	c, closeFn, err := f.connect(ctx, log, false)
	if err != nil {
		return asUsage(err)
	}
	defer closeFn()
	jobs, err := c.List(ctx)
	if err != nil {
		return err
	}
	if jobs == nil {
		jobs = []*domain.QuantizationJob{}
	}
	return printResult(env, f.json, jobs, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "JOB\tSTATUS\tPROGRESS\tLEVEL\tMODEL\tCREATED")
		for _, j := range jobs {
			level, model := "", ""
			if j.Config != nil {
				level = j.Config.QuantizationLevel
			}
			if j.Source != nil {
				model = j.Source.ModelPath
			}
			fmt.Fprintf(tw, "%s\t%s\t%d/%d %.0f%%\t%s\t%s\t%s\n", j.JobID, j.Status, j.CurrentLayer, j.TotalLayers,
				j.ProgressPercentage, level, model, j.CreatedAt.Local().Format(time.DateTime))
		}
		tw.Flush()
	})
}

func runCancel(ctx context.Context, env Env, args []string) error {
	return jobAction(ctx, env, "cancel", args, (*client.Client).Cancel,
		func(w io.Writer, j *domain.QuantizationJob) { fmt.Fprintf(w, "%s  %s\n", j.JobID, j.Status) })
}

type resumeFlags struct {
	fleetJobFlags
	dataDir string
	workers int
}

func runResume(ctx context.Context, env Env, args []string) error {
	var f resumeFlags
	fs := newFlagSet("resume", env)
	f.fleetJobFlags.register(fs, env, false, "follow the job until it ends", "download the result into this directory (implies --wait)")
	fs.StringVar(&f.dataDir, "data-dir", "", "resume a job of `quantfleet run --data-dir DIR` in an embedded fleet on DIR")
	fs.IntVar(&f.workers, "workers", 2, "with --data-dir: worker slots of the embedded fleet")
	id, err := parseWithJob(fs, args)
	if err != nil {
		return err
	}
	verb, err := f.parse()
	if err != nil {
		return err
	}
	// Only the flags given are compared with the checkpoint's snapshot.
	var cfg *domain.QuantizationConfig
	if f.job.level != "" {
		c, err := f.job.config(verb, f.json)
		if err != nil {
			return err
		}
		cfg = &c
	} else if f.job.outputName != "" || isFlagSet(fs, "format") {
		return usagef("--format and --output-name need --level to compare with the job's configuration")
	}
	log := logger(env, verb, f.json)
	defer log.Sync()
	if f.dataDir != "" && f.outputDir == "" {
		f.outputDir = "."
	}
	if f.outputDir != "" {
		// Before an embedded fleet starts: its S3 gateway changes the working directory.
		if f.outputDir, err = filepath.Abs(f.outputDir); err != nil {
			return err
		}
	}
	var c *client.Client
	if f.dataDir != "" {
		lf, err := startLocal(ctx, env, f.dataDir, f.workers, 0, log)
		if err != nil {
			return err
		}
		defer lf.Close()
		c = &client.Client{RT: lf.RT}
	} else {
		var closeFn func()
		if c, closeFn, err = f.connect(ctx, log, f.outputDir != ""); err != nil {
			return asUsage(err)
		}
		defer closeFn()
	}
	c.Overwrite = f.overwrite
	j, err := c.Resume(ctx, id, cfg, 30*time.Second)
	if err != nil {
		return asUsage(err)
	}
	if !f.json && verb != domain.VerbosityQuiet {
		fmt.Fprintf(env.Stderr, "job %s resumed: %d of %d layers (%d of %d tasks) done, the rest queued again\n", id,
			j.CurrentLayer, j.TotalLayers, j.TasksDone, j.TotalTasks)
	}
	if f.wait || f.outputDir != "" {
		return waitAndFetch(ctx, env, c, id, verb, f.json, f.outputDir, nil)
	}
	return printResult(env, f.json, j, func(w io.Writer) { fmt.Fprintf(w, "%s  %s\n", j.JobID, j.Status) })
}

func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

type getFlags struct {
	fleetFlags
	output
	outputName string
	url        bool
	expiry     time.Duration
}

func runGet(ctx context.Context, env Env, args []string) error {
	var f getFlags
	fs := newFlagSet("get", env)
	f.fleetFlags.register(fs, env)
	f.output.register(fs, "", "download the result into this directory")
	fs.StringVar(&f.outputName, "output-name", "", "file name of the download (default: the result's name)")
	fs.BoolVar(&f.url, "url", false, "print a presigned download URL instead of downloading")
	fs.DurationVar(&f.expiry, "expiry", time.Hour, "validity of the --url link, 1s to 168h")
	id, err := parseWithJob(fs, args)
	if err != nil {
		return err
	}
	verb, err := f.parse()
	if err != nil {
		return err
	}
	if f.url == (f.outputDir != "") {
		return usagef("give exactly one of --output-dir DIR and --url")
	}
	if f.outputName != "" {
		if err := atomicfile.CheckName(f.outputName); err != nil {
			return fmt.Errorf("--output-name: %w", err)
		}
	}
	log := logger(env, verb, f.json)
	c, closeFn, err := f.connect(ctx, log, true)
	if err != nil {
		return asUsage(err)
	}
	defer closeFn()
	c.Overwrite = f.overwrite
	if f.url {
		u, exp, err := c.URL(ctx, id, f.expiry)
		if err != nil {
			return asUsage(err)
		}
		out := struct {
			JobID     string    `json:"job_id"`
			URL       string    `json:"url"`
			ExpiresAt time.Time `json:"expires_at"`
		}{id, u, exp}
		return printResult(env, f.json, out, func(w io.Writer) {
			fmt.Fprintln(w, u)
			if verb != domain.VerbosityQuiet {
				fmt.Fprintf(env.Stderr, "valid until %s (%s)\n", exp.Local().Format(time.DateTime), f.expiry)
			}
		})
	}
	j, err := c.Job(ctx, id)
	if err != nil {
		return asUsage(err)
	}
	res, err := c.Download(ctx, id, f.outputDir, f.outputName, nil)
	if err != nil {
		return asUsage(err)
	}
	level := ""
	if j.Config != nil {
		level = j.Config.QuantizationLevel
	}
	return printResult(env, f.json, res, func(w io.Writer) { printModel(w, res, level) })
}

// runUpload is `quantfleet upload`: put a local model into the fleet's object storage
// (content-addressed, skipped when already there) and print its s3:// URL for --model.
func runUpload(ctx context.Context, env Env, args []string) error {
	var f fleetFlags
	var model string
	fs := newFlagSet("upload", env)
	f.register(fs, env)
	fs.StringVar(&model, "model", "", "local model directory (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	verb, err := f.parse()
	if err != nil {
		return err
	}
	if model == "" {
		return usagef("--model is required")
	}
	log := logger(env, verb, f.json)
	store, err := f.conn.OpenStore("")
	if err != nil {
		return asUsage(err)
	}
	prefix, uploaded, err := modelstore.UploadDir(ctx, store, model, uploadProgress(env, verb, f.json))
	if err != nil {
		if errors.Is(err, modelstore.ErrNotModelDir) || errors.Is(err, os.ErrNotExist) {
			return usageError{err}
		}
		return err
	}
	log.Debug("model stored", zap.String("prefix", prefix), zap.Bool("uploaded", uploaded))
	u := fleet.S3URL(f.conn.S3Bucket, strings.TrimSuffix(prefix, "/"))
	out := struct {
		URL      string `json:"url"`
		Uploaded bool   `json:"uploaded"`
	}{u, uploaded}
	return printResult(env, f.json, out, func(w io.Writer) { fmt.Fprintln(w, u) })
}

// jobClient parses the flags of a command that takes one job id and needs only NATS, and connects.
func jobClient(ctx context.Context, env Env, name string, args []string) (f *fleetFlags, verb domain.Verbosity, id string, c *client.Client, closeFn func(), err error) {
	f = &fleetFlags{}
	fs := newFlagSet(name, env)
	f.register(fs, env)
	if id, err = parseWithJob(fs, args); err != nil {
		return
	}
	if verb, err = f.parse(); err != nil {
		return
	}
	c, closeFn, err = f.connect(ctx, logger(env, verb, f.json), false)
	if err != nil {
		err = asUsage(err)
	}
	return
}
