package progress

import (
	"encoding/json"
	"fmt"
	"io"
)

// NewJSON returns a Reporter writing one Event per line (NDJSON) to w,
// flushing w after each line when it has a Flush method. Progress events are
// limited to about 10 a second; the one reaching the total is always written.
// Write errors are ignored: progress output must not stop the work.
func NewJSON(w io.Writer, opts ...Option) Reporter {
	c := newConfig(opts)
	return &jsonReporter{t: tracker{now: c.now}, enc: json.NewEncoder(w), w: w}
}

type jsonReporter struct {
	t   tracker
	enc *json.Encoder
	w   io.Writer
}

func (r *jsonReporter) emit(ev Event) {
	if err := r.enc.Encode(ev); err != nil {
		// Data that cannot be encoded still yields a well-formed line.
		ev.Data = nil
		ev.Message = fmt.Sprintf("unencodable %s data: %v", ev.Kind, err)
		r.enc.Encode(ev)
	}
	switch f := r.w.(type) {
	case interface{ Flush() error }:
		f.Flush()
	case interface{ Flush() }:
		f.Flush()
	}
}

func (r *jsonReporter) Start(stage string, total int64, opts ...StageOption) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.t.start(stage, total, opts)
	r.emit(r.t.event(KindStart, r.t.now()))
}

func (r *jsonReporter) Update(item string, done int64) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.update(item, done)
}

func (r *jsonReporter) Add(item string, n int64) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.update(item, r.t.done+n)
}

func (r *jsonReporter) update(item string, done int64) {
	now := r.t.set(item, done)
	if r.t.due(now) {
		r.emit(r.t.event(KindProgress, now))
	}
}

func (r *jsonReporter) Finish(msg string) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	ev := r.t.event(KindDone, r.t.now())
	ev.Message = msg
	r.emit(ev)
}

func (r *jsonReporter) Error(err error) {
	if err == nil {
		return
	}
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	ev := r.t.event(KindError, r.t.now())
	ev.Message = err.Error()
	r.emit(ev)
}

func (r *jsonReporter) Result(data any) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.emit(Event{Time: r.t.now().UTC(), Kind: KindResult, Stage: r.t.stage, Data: data})
}
