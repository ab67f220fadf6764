package progress

import (
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dustin/go-humanize"
	"golang.org/x/term"
)

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	return f != nil && term.IsTerminal(int(f.Fd()))
}

const (
	barCells     = 20
	defaultWidth = 80
	// Without a terminal, stages of unknown size print a line this often.
	plainEvery = 10 * time.Second
)

// NewBar returns a Reporter for people. On a terminal it redraws one line
// in place, at most about 10 times a second:
//
//	[#########...........] 12/27 tensors 44% ETA 0:03 blk.3.ffn_up.weight
//
// Elsewhere (a log file, a pipe) it prints a plain line, without carriage
// returns, each time another 10% is done, and a summary when the stage ends.
func NewBar(w io.Writer, opts ...Option) Reporter {
	c := newConfig(opts)
	b := &bar{t: tracker{now: c.now}, w: w, width: c.width}
	f, isFile := w.(*os.File)
	if c.terminal != nil {
		b.terminal = *c.terminal
	} else {
		b.terminal = isFile && IsTerminal(f)
	}
	if b.width <= 0 && b.terminal && isFile {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			b.width = cols
		}
	}
	if b.width <= 0 {
		b.width = defaultWidth
	}
	return b
}

type bar struct {
	t        tracker
	w        io.Writer
	terminal bool
	width    int
	drawn    bool    // a bar line is on screen
	nextPct  float64 // plain mode: percent of the next line
	nextLine time.Time
}

func (b *bar) Start(stage string, total int64, opts ...StageOption) {
	b.t.mu.Lock()
	defer b.t.mu.Unlock()
	b.t.start(stage, total, opts)
	now := b.t.now()
	if b.terminal {
		b.t.due(now)
		b.draw(now)
		return
	}
	b.nextPct, b.nextLine = 10, now.Add(plainEvery)
	if b.t.total > 0 {
		fmt.Fprintf(b.w, "%s: started, %s\n", b.t.stage, strings.TrimSpace(b.count(b.t.total)+" "+b.label()))
	} else {
		fmt.Fprintf(b.w, "%s: started\n", b.t.stage)
	}
}

func (b *bar) Update(item string, done int64) {
	b.t.mu.Lock()
	defer b.t.mu.Unlock()
	b.update(item, done)
}

func (b *bar) Add(item string, n int64) {
	b.t.mu.Lock()
	defer b.t.mu.Unlock()
	b.update(item, b.t.done+n)
}

func (b *bar) update(item string, done int64) {
	now := b.t.set(item, done)
	if b.terminal {
		if b.t.due(now) {
			b.draw(now)
		}
		return
	}
	pct := b.t.percent()
	switch {
	case b.t.total > 0 && pct >= b.nextPct:
		b.nextPct = math.Floor(pct/10)*10 + 10
	case b.t.total <= 0 && !now.Before(b.nextLine):
		b.nextLine = now.Add(plainEvery)
	default:
		return
	}
	fmt.Fprintf(b.w, "%s: %s\n", b.t.stage, b.status(now))
}

func (b *bar) Finish(msg string) {
	b.t.mu.Lock()
	defer b.t.mu.Unlock()
	now := b.t.now()
	line := fmt.Sprintf("%s: done", b.t.stage)
	if b.t.done > 0 || b.t.total > 0 {
		line += " " + b.fraction()
	}
	line += " in " + clock(now.Sub(b.t.started).Seconds())
	if msg != "" {
		line += ": " + msg
	}
	b.end(line)
}

func (b *bar) Error(err error) {
	if err == nil {
		return
	}
	b.t.mu.Lock()
	defer b.t.mu.Unlock()
	if b.t.stage != "" {
		b.end(fmt.Sprintf("%s: error: %v", b.t.stage, err))
	} else {
		b.end(fmt.Sprintf("error: %v", err))
	}
}

// Result prints nothing: results for people are the caller's to format.
func (b *bar) Result(any) {}

// end replaces the bar with a final line.
func (b *bar) end(line string) {
	if b.terminal && b.drawn {
		io.WriteString(b.w, "\r\x1b[K")
	}
	io.WriteString(b.w, line+"\n")
	b.drawn = false
}

// label names what is counted: the unit, else the stage name, except that
// byte counts speak for themselves.
func (b *bar) label() string {
	switch {
	case b.t.cfg.unit != "":
		return b.t.cfg.unit
	case b.t.cfg.bytes:
		return ""
	}
	return b.t.stage
}

func (b *bar) count(n int64) string {
	if b.t.cfg.bytes {
		return humanize.IBytes(uint64(max(n, 0)))
	}
	return fmt.Sprint(n)
}

// fraction is "12/27 tensors", or "12 tensors" when the total is unknown.
func (b *bar) fraction() string {
	s := b.count(b.t.done)
	if b.t.total > 0 {
		s += "/" + b.count(b.t.total)
	}
	if l := b.label(); l != "" {
		s += " " + l
	}
	return s
}

// status is "12/27 tensors 44% ETA 0:03 item".
func (b *bar) status(now time.Time) string {
	s := b.fraction()
	if b.t.total > 0 {
		s += fmt.Sprintf(" %d%%", int(b.t.percent()))
		if eta, ok := b.t.eta(now); ok {
			s += " ETA " + clock(eta)
		} else {
			s += " ETA --:--"
		}
	}
	if b.t.item != "" {
		s += " " + b.t.item
	}
	return s
}

func (b *bar) draw(now time.Time) {
	var line string
	if b.label() != b.t.stage {
		line = b.t.stage + " "
	}
	if b.t.total > 0 {
		filled := int(float64(barCells) * float64(min(b.t.done, b.t.total)) / float64(b.t.total))
		line += "[" + strings.Repeat("#", filled) + strings.Repeat(".", barCells-filled) + "] "
	}
	line += b.status(now)
	io.WriteString(b.w, "\r"+fit(line, b.width-1)+"\x1b[K")
	b.drawn = true
}

// fit shortens s to at most cols runes, keeping the start and marking the cut.
func fit(s string, cols int) string {
	if cols <= 0 || utf8.RuneCountInString(s) <= cols {
		return s
	}
	r := []rune(s)
	return string(r[:max(cols-1, 0)]) + "…"
}

// clock formats seconds as m:ss or h:mm:ss.
func clock(secs float64) string {
	if secs < 0 || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return "--:--"
	}
	s := int64(math.Round(secs))
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
