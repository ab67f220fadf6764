// Package progress reports the progress of long work: a terminal bar with an
// ETA for people (NewBar) and a newline-delimited JSON event stream for
// programs (NewJSON). Reporters are safe for concurrent use.
package progress

import (
	"math"
	"sync"
	"time"
)

// Event kinds.
const (
	KindStart    = "start"
	KindProgress = "progress"
	KindDone     = "done"
	KindError    = "error"
	KindResult   = "result"
)

// Event is one line of the JSON stream.
type Event struct {
	Time       time.Time `json:"time"`
	Kind       string    `json:"event"` // KindStart, KindProgress, KindDone, KindError or KindResult
	Stage      string    `json:"stage,omitempty"`
	Item       string    `json:"item,omitempty"`
	Done       int64     `json:"done"`
	Total      int64     `json:"total"` // 0 when unknown
	Percent    float64   `json:"percent"`
	ETASeconds float64   `json:"eta_seconds,omitempty"`
	Bytes      int64     `json:"bytes,omitempty"` // done, for stages that count bytes
	Message    string    `json:"message,omitempty"`
	Data       any       `json:"data,omitempty"`
}

// Reporter receives the progress of one stage of work at a time.
type Reporter interface {
	// Start begins a stage of total units (0 or less: unknown).
	Start(stage string, total int64, opts ...StageOption)
	// Update sets how many units are done; item names the one in hand.
	Update(item string, done int64)
	// Add counts n more units done, for workers that only know their share.
	Add(item string, n int64)
	// Finish ends the stage successfully; msg may be empty.
	Finish(msg string)
	// Error ends the stage with err.
	Error(err error)
	// Result reports the outcome of the work (JSON only; a bar prints
	// nothing, the caller prints results for people).
	Result(data any)
}

// StageOption configures a stage.
type StageOption func(*stageConfig)

type stageConfig struct {
	unit  string
	bytes bool
}

// Unit names what a stage counts ("tensors"); the default is the stage name.
func Unit(name string) StageOption { return func(c *stageConfig) { c.unit = name } }

// Bytes says a stage counts bytes: bars show sizes like "1.2 GiB" and JSON
// events carry "bytes".
func Bytes() StageOption { return func(c *stageConfig) { c.bytes = true } }

// Option configures a Reporter.
type Option func(*config)

type config struct {
	now      func() time.Time
	terminal *bool
	width    int
}

// WithClock replaces time.Now, for tests and reproducible output.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithTerminal forces a bar to draw in place (true) or to print plain lines
// (false) instead of asking the writer whether it is a terminal.
func WithTerminal(on bool) Option { return func(c *config) { c.terminal = &on } }

// WithWidth sets the terminal width in columns a bar fits its line into.
func WithWidth(cols int) Option { return func(c *config) { c.width = cols } }

func newConfig(opts []Option) config {
	c := config{now: time.Now}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// Nop returns a Reporter that does nothing.
func Nop() Reporter { return nop{} }

type nop struct{}

func (nop) Start(string, int64, ...StageOption) {}
func (nop) Update(string, int64)                {}
func (nop) Add(string, int64)                   {}
func (nop) Finish(string)                       {}
func (nop) Error(error)                         {}
func (nop) Result(any)                          {}

// Rate estimation: the rate is sampled at most every minSample and smoothed
// exponentially with time constant tau, so bursts of tiny items and single
// slow items both move the ETA gradually.
const (
	minSample = 200 * time.Millisecond
	tau       = 5 * time.Second
	// redrawEvery limits bar redraws and JSON progress events to ~10/s.
	redrawEvery = 100 * time.Millisecond
)

// tracker holds the state of the current stage; reporters lock mu around
// every call so output lines never interleave.
type tracker struct {
	mu  sync.Mutex
	now func() time.Time

	stage   string
	cfg     stageConfig
	total   int64
	done    int64
	item    string
	started time.Time

	rate       float64 // smoothed units per second
	haveRate   bool
	sampleT    time.Time
	sampleDone int64
	lastEmit   time.Time
	emittedAt  bool
}

func (t *tracker) start(stage string, total int64, opts []StageOption) {
	now := t.now()
	t.stage, t.total, t.done, t.item = stage, max(total, 0), 0, ""
	t.cfg = stageConfig{}
	for _, o := range opts {
		o(&t.cfg)
	}
	t.started, t.sampleT, t.sampleDone = now, now, 0
	t.rate, t.haveRate = 0, false
	t.emittedAt = false
}

// set records progress and returns the time it was observed.
func (t *tracker) set(item string, done int64) time.Time {
	now := t.now()
	if item != "" {
		t.item = item
	}
	t.done = done
	if dt := now.Sub(t.sampleT); dt >= minSample {
		inst := float64(t.done-t.sampleDone) / dt.Seconds()
		if t.haveRate {
			a := 1 - math.Exp(-dt.Seconds()/tau.Seconds())
			t.rate = a*inst + (1-a)*t.rate
		} else {
			t.rate, t.haveRate = inst, true
		}
		t.sampleT, t.sampleDone = now, t.done
	}
	return now
}

// due reports whether output should be produced now (throttled), and
// notes it was.
func (t *tracker) due(now time.Time) bool {
	if t.emittedAt && now.Sub(t.lastEmit) < redrawEvery && !(t.total > 0 && t.done >= t.total) {
		return false
	}
	t.lastEmit, t.emittedAt = now, true
	return true
}

// eta estimates the seconds left; ok is false while unknown.
func (t *tracker) eta(now time.Time) (secs float64, ok bool) {
	if t.total <= 0 {
		return 0, false
	}
	left := t.total - t.done
	if left <= 0 {
		return 0, true
	}
	rate := t.rate
	if !t.haveRate {
		// Before the first sample, use the average so far.
		el := now.Sub(t.started)
		if el < minSample/4 || t.done <= 0 {
			return 0, false
		}
		rate = float64(t.done) / el.Seconds()
	}
	if rate <= 0 {
		return 0, false
	}
	return float64(left) / rate, true
}

func (t *tracker) percent() float64 {
	if t.total <= 0 {
		return 0
	}
	return math.Round(float64(t.done)/float64(t.total)*10000) / 100
}

func (t *tracker) event(kind string, now time.Time) Event {
	ev := Event{Time: now.UTC(), Kind: kind, Stage: t.stage, Item: t.item, Done: t.done, Total: t.total, Percent: t.percent()}
	if eta, ok := t.eta(now); ok && kind == KindProgress {
		ev.ETASeconds = math.Round(eta*10) / 10
	}
	if t.cfg.bytes {
		ev.Bytes = t.done
	}
	return ev
}
