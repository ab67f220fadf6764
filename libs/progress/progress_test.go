package progress

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a manually advanced clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// flushCounter is a writer with a Flush method, like bufio.Writer.
type flushCounter struct {
	bytes.Buffer
	flushes int
}

func (f *flushCounter) Flush() error { f.flushes++; return nil }

func parseEvents(t *testing.T, out string) []Event {
	t.Helper()
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("output does not end in a newline: %q", out)
	}
	var evs []Event
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var ev Event
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("line %d %q: %v", i+1, line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func TestJSON(t *testing.T) {
	clk := newFakeClock()
	var w flushCounter
	r := NewJSON(&w, WithClock(clk.Now))
	const total = 27
	r.Start("tensors", total)
	for i := 1; i <= total; i++ {
		clk.Advance(200 * time.Millisecond) // 5 tensors/s
		r.Update(fmt.Sprintf("blk.%d.ffn_up.weight", i), int64(i))
	}
	r.Finish("wrote model.gguf")
	r.Result(map[string]any{"path": "model.gguf", "tensors": total})

	evs := parseEvents(t, w.String())
	if w.flushes != len(evs) {
		t.Errorf("flushes = %d, want one per line (%d)", w.flushes, len(evs))
	}
	if len(evs) != total+3 {
		t.Fatalf("got %d events, want %d", len(evs), total+3)
	}
	if ev := evs[0]; ev.Kind != KindStart || ev.Stage != "tensors" || ev.Total != total || ev.Done != 0 {
		t.Errorf("first event = %+v", ev)
	}
	prev := int64(0)
	for i, ev := range evs[1 : total+1] {
		if ev.Kind != KindProgress || ev.Done <= prev || ev.Total != total {
			t.Errorf("event %d = %+v, want progress with done > %d", i+1, ev, prev)
		}
		prev = ev.Done
		if want := math.Round(float64(ev.Done)/total*10000) / 100; ev.Percent != want {
			t.Errorf("event %d percent = %v, want %v", i+1, ev.Percent, want)
		}
		// Constant 5/s: the ETA is exact.
		if want := float64(total-ev.Done) / 5; ev.Done < total && math.Abs(ev.ETASeconds-want) > 0.051 {
			t.Errorf("event %d (done %d) ETA = %v, want %v", i+1, ev.Done, ev.ETASeconds, want)
		}
		if !ev.Time.After(evs[i].Time) {
			t.Errorf("event %d time %v not after %v", i+1, ev.Time, evs[i].Time)
		}
	}
	if ev := evs[total]; ev.Item != "blk.27.ffn_up.weight" || ev.Percent != 100 || ev.ETASeconds != 0 {
		t.Errorf("last progress = %+v", ev)
	}
	if ev := evs[total+1]; ev.Kind != KindDone || ev.Message != "wrote model.gguf" || ev.Done != total {
		t.Errorf("done event = %+v", ev)
	}
	ev := evs[total+2]
	if data, _ := ev.Data.(map[string]any); ev.Kind != KindResult || data["path"] != "model.gguf" || data["tensors"] != float64(total) {
		t.Errorf("result event = %+v", ev)
	}
}

// Updates faster than ~10/s are thinned out, but the final one is kept and
// done still only grows.
func TestJSONThrottle(t *testing.T) {
	clk := newFakeClock()
	var buf bytes.Buffer
	r := NewJSON(&buf, WithClock(clk.Now))
	r.Start("download", 1000, Bytes())
	for i := 1; i <= 1000; i++ {
		clk.Advance(time.Millisecond)
		r.Update("model.safetensors", int64(i))
	}
	r.Error(errors.New("disk full"))
	evs := parseEvents(t, buf.String())
	var progress []Event
	for _, ev := range evs {
		if ev.Kind == KindProgress {
			progress = append(progress, ev)
		}
	}
	if n := len(progress); n < 9 || n > 12 {
		t.Errorf("%d progress events over 1s, want about 10", n)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i].Done <= progress[i-1].Done {
			t.Errorf("done went from %d to %d", progress[i-1].Done, progress[i].Done)
		}
	}
	if last := progress[len(progress)-1]; last.Done != 1000 || last.Bytes != 1000 {
		t.Errorf("last progress = %+v, want done = bytes = 1000", last)
	}
	if last := evs[len(evs)-1]; last.Kind != KindError || last.Message != "disk full" {
		t.Errorf("last event = %+v", last)
	}
}

func TestJSONUnencodableResult(t *testing.T) {
	var buf bytes.Buffer
	r := NewJSON(&buf)
	r.Result(make(chan int))
	evs := parseEvents(t, buf.String())
	if len(evs) != 1 || evs[0].Kind != KindResult || !strings.Contains(evs[0].Message, "unencodable") {
		t.Errorf("events = %+v", evs)
	}
}

// The ETA follows a change of speed smoothly: not at once, but within a
// few time constants.
func TestETAFollowsRateChange(t *testing.T) {
	clk := newFakeClock()
	tr := tracker{now: clk.Now}
	tr.start("x", 10000, nil)
	done := int64(0)
	step := func(rate float64, secs float64) {
		for range int(secs * 10) {
			clk.Advance(100 * time.Millisecond)
			done += int64(rate / 10)
			tr.set("", done)
		}
	}
	eta := func() float64 {
		e, ok := tr.eta(clk.Now())
		if !ok {
			t.Fatal("no ETA")
		}
		return e
	}
	step(100, 10) // 100/s for 10 s
	if got, want := eta(), float64(10000-done)/100; math.Abs(got-want) > want*0.01 {
		t.Fatalf("steady ETA = %.1f, want %.1f", got, want)
	}
	step(400, 1) // 4x faster for 1 s: the estimate moves, but not all the way
	got, slow, fast := eta(), float64(10000-done)/100, float64(10000-done)/400
	if !(got < slow*0.95 && got > fast*1.2) {
		t.Errorf("ETA 1s after speed-up = %.1f, want between %.1f and %.1f", got, fast, slow)
	}
	step(400, 15) // three time constants later it has caught up
	if got, want := eta(), float64(10000-done)/400; math.Abs(got-want) > want*0.1 {
		t.Errorf("ETA after 15s at the new rate = %.1f, want %.1f", got, want)
	}
}

func TestETAUnknown(t *testing.T) {
	clk := newFakeClock()
	tr := tracker{now: clk.Now}
	tr.start("x", 0, nil)
	clk.Advance(time.Second)
	tr.set("", 10)
	if _, ok := tr.eta(clk.Now()); ok {
		t.Error("ETA known without a total")
	}
	tr.start("x", 100, nil)
	if _, ok := tr.eta(clk.Now()); ok {
		t.Error("ETA known before any progress")
	}
	clk.Advance(10 * time.Second)
	tr.set("", 0)
	if _, ok := tr.eta(clk.Now()); ok {
		t.Error("ETA known at zero rate")
	}
}

func TestBarTerminal(t *testing.T) {
	clk := newFakeClock()
	var buf bytes.Buffer
	r := NewBar(&buf, WithClock(clk.Now), WithTerminal(true), WithWidth(100))
	r.Start("tensors", 27)
	for i := 1; i <= 12; i++ {
		clk.Advance(200 * time.Millisecond)
		r.Update(fmt.Sprintf("blk.%d.ffn_up.weight", i-9), int64(i))
	}
	frames := strings.Split(buf.String(), "\r")
	last := strings.TrimSuffix(frames[len(frames)-1], "\x1b[K")
	if want := "[########............] 12/27 tensors 44% ETA 0:03 blk.3.ffn_up.weight"; last != want {
		t.Errorf("bar = %q\nwant  %q", last, want)
	}
	for i := 13; i <= 27; i++ {
		clk.Advance(200 * time.Millisecond)
		r.Update("t", int64(i))
	}
	r.Finish("ok")
	out := buf.String()
	if !strings.HasSuffix(out, "\r\x1b[Ktensors: done 27/27 tensors in 0:05: ok\n") {
		t.Errorf("output ends %q", out[max(0, len(out)-80):])
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("bar printed %d newlines, want only the final one", strings.Count(out, "\n"))
	}
}

// Redraws are limited to about 10 a second and lines fit the terminal.
func TestBarTerminalThrottleAndWidth(t *testing.T) {
	clk := newFakeClock()
	var buf bytes.Buffer
	const width = 60
	r := NewBar(&buf, WithClock(clk.Now), WithTerminal(true), WithWidth(width))
	r.Start("quantize", 2000, Unit("tensors"))
	for i := 1; i <= 2000; i++ {
		clk.Advance(time.Millisecond)
		r.Update("blk.17.attn_output.weight.with.a.very.long.name.that.does.not.fit", int64(i))
	}
	out := buf.String()
	if n := strings.Count(out, "\r"); n < 20 || n > 24 {
		t.Errorf("%d redraws over 2s, want about 20", n)
	}
	for _, frame := range strings.Split(out, "\r")[1:] {
		frame = strings.TrimSuffix(frame, "\x1b[K")
		if n := len([]rune(frame)); n > width-1 {
			t.Errorf("frame of %d columns > %d: %q", n, width-1, frame)
		}
		if !strings.HasPrefix(frame, "quantize [") {
			t.Errorf("frame %q does not start with the stage", frame)
		}
	}
}

func TestBarPlain(t *testing.T) {
	clk := newFakeClock()
	var buf bytes.Buffer
	r := NewBar(&buf, WithClock(clk.Now)) // a buffer is not a terminal
	r.Start("tensors", 200)
	for i := 1; i <= 200; i++ {
		clk.Advance(50 * time.Millisecond)
		r.Update(fmt.Sprintf("t%d", i), int64(i))
	}
	r.Finish("")
	out := buf.String()
	if strings.ContainsAny(out, "\r\x1b") {
		t.Errorf("plain output has control characters: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []string{"tensors: started, 200 tensors"}
	for p := 10; p <= 100; p += 10 {
		n := p * 2
		eta := clock(float64(200-n) / 20)
		want = append(want, fmt.Sprintf("tensors: %d/200 tensors %d%% ETA %s t%d", n, p, eta, n))
	}
	want = append(want, "tensors: done 200/200 tensors in 0:10")
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("plain output:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestBarPlainBytesAndUnknownTotal(t *testing.T) {
	clk := newFakeClock()
	var buf bytes.Buffer
	r := NewBar(&buf, WithClock(clk.Now))
	r.Start("download", 4<<20, Bytes())
	for range 4 {
		clk.Advance(time.Second)
		r.Add("model.safetensors", 1<<20)
	}
	r.Finish("")
	r.Start("scan", 0)
	for range 25 {
		clk.Advance(time.Second)
		r.Add("", 1)
	}
	r.Error(errors.New("boom"))
	want := []string{
		"download: started, 4.0 MiB",
		"download: 1.0 MiB/4.0 MiB 25% ETA 0:03 model.safetensors",
		"download: 2.0 MiB/4.0 MiB 50% ETA 0:02 model.safetensors",
		"download: 3.0 MiB/4.0 MiB 75% ETA 0:01 model.safetensors",
		"download: 4.0 MiB/4.0 MiB 100% ETA 0:00 model.safetensors",
		"download: done 4.0 MiB/4.0 MiB in 0:04",
		"scan: started",
		"scan: 10 scan",
		"scan: 20 scan",
		"scan: error: boom",
	}
	if got := strings.TrimSuffix(buf.String(), "\n"); got != strings.Join(want, "\n") {
		t.Errorf("output:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

// Concurrent workers adding their shares: the total adds up and lines are
// never torn (run with -race).
func TestConcurrentAdd(t *testing.T) {
	for _, name := range []string{"json", "bar", "terminal"} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			var r Reporter
			switch name {
			case "json":
				r = NewJSON(&buf)
			case "bar":
				r = NewBar(&buf)
			default:
				r = NewBar(&buf, WithTerminal(true))
			}
			const workers, each = 8, 500
			r.Start("work", workers*each)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for range each {
						r.Add(fmt.Sprintf("w%d", w), 1)
					}
				})
			}
			wg.Wait()
			r.Finish("")
			out := buf.String()
			if name == "json" {
				evs := parseEvents(t, out)
				if last := evs[len(evs)-1]; last.Kind != KindDone || last.Done != workers*each {
					t.Errorf("last event = %+v", last)
				}
			} else if !strings.Contains(out, fmt.Sprintf("work: done %d/%d work", workers*each, workers*each)) {
				t.Errorf("no complete summary in %q", out[max(0, len(out)-100):])
			}
		})
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) || IsTerminal(nil) {
		t.Error("a regular file (or nil) is a terminal")
	}
	// A bar on a regular file prints plain lines.
	r := NewBar(f)
	r.Start("x", 10)
	r.Update("", 10)
	r.Finish("")
	data, _ := os.ReadFile(f.Name())
	if bytes.ContainsRune(data, '\r') || !bytes.Contains(data, []byte("x: done 10/10 x")) {
		t.Errorf("bar on a file wrote %q", data)
	}
}

func TestNop(t *testing.T) {
	r := Nop()
	r.Start("x", 1)
	r.Update("a", 1)
	r.Add("a", 1)
	r.Finish("")
	r.Error(errors.New("e"))
	r.Result(1)
}

func TestClock(t *testing.T) {
	tests := []struct {
		secs float64
		want string
	}{
		{0, "0:00"}, {3.4, "0:03"}, {59.6, "1:00"}, {61, "1:01"}, {3599, "59:59"},
		{3600, "1:00:00"}, {86399, "23:59:59"}, {-1, "--:--"}, {math.Inf(1), "--:--"}, {math.NaN(), "--:--"},
	}
	for _, tt := range tests {
		if got := clock(tt.secs); got != tt.want {
			t.Errorf("clock(%v) = %q, want %q", tt.secs, got, tt.want)
		}
	}
}

// A bufio.Writer is flushed after every line, so consumers see events live.
func TestJSONFlushesBufio(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriterSize(&buf, 1<<16)
	r := NewJSON(bw)
	r.Start("x", 1)
	if buf.Len() == 0 {
		t.Error("start event still buffered")
	}
}
