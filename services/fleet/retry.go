package fleet

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"go.uber.org/zap"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/queue"
)

// Backoff is how the services wait out failures classified transient (fault.ErrTransient): tries
// again after exponentially growing, jittered delays until the work succeeds, fails otherwise,
// or the budget since the first failure is spent. Zero fields take the defaults in brackets.
type Backoff struct {
	Budget time.Duration // [10 min]
	Min    time.Duration // first delay [1 s]
	Max    time.Duration // longest delay [30 s]
}

// DefaultBudget is how long a job waits for a transient failure to pass before it fails.
const DefaultBudget = 10 * time.Minute

// ErrGaveUp wraps a transient failure that outlasted the budget; it is permanent.
var ErrGaveUp = fault.New(fault.ErrPermanent, "gave up waiting")

// Register adds --transient-budget and --transient-backoff-max to fs, with defaults from
// QUANTFLEET_TRANSIENT_BUDGET and QUANTFLEET_TRANSIENT_BACKOFF_MAX (getenv; os.Getenv when nil).
func (b *Backoff) Register(fs *flag.FlagSet, getenv func(string) string) {
	if getenv == nil {
		getenv = os.Getenv
	}
	dur := func(name string, def time.Duration) time.Duration {
		if d, err := time.ParseDuration(getenv(name)); err == nil && d > 0 {
			return d
		}
		return def
	}
	fs.DurationVar(&b.Budget, "transient-budget", dur("QUANTFLEET_TRANSIENT_BUDGET", DefaultBudget),
		"how long a job waits out transient failures (object storage or NATS down) before it fails (env QUANTFLEET_TRANSIENT_BUDGET)")
	fs.DurationVar(&b.Max, "transient-backoff-max", dur("QUANTFLEET_TRANSIENT_BACKOFF_MAX", 30*time.Second),
		"longest delay between retries of a transient failure (env QUANTFLEET_TRANSIENT_BACKOFF_MAX)")
}

func (b Backoff) withDefaults() Backoff {
	if b.Budget <= 0 {
		b.Budget = DefaultBudget
	}
	if b.Min <= 0 {
		b.Min = time.Second
	}
	if b.Max <= 0 {
		b.Max = 30 * time.Second
	}
	b.Min = min(b.Min, b.Max)
	return b
}

// Delay is the wait before retry n (1-based): Min·2^(n-1) capped at Max, jittered to between half
// and all of it so that a fleet does not retry in step.
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	d := b.Max
	if n < 30 {
		d = min(b.Min<<max(n-1, 0), b.Max)
	}
	return d/2 + rand.N(d/2+1)
}

// Retry runs f until it returns nil or an error that is not transient, ctx ends, or the budget
// since the first transient failure is spent (then the error wraps ErrGaveUp). wait, if not nil,
// is told of each transient failure before the delay.
func (b Backoff) Retry(ctx context.Context, f func() error, wait func(err error, attempt int, delay time.Duration)) error {
	b = b.withDefaults()
	var first time.Time
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || !fault.Transient(err) || fault.Permanent(err) || ctx.Err() != nil {
			return err
		}
		if first.IsZero() {
			first = time.Now()
		}
		left := b.Budget - time.Since(first)
		if left <= 0 {
			return fmt.Errorf("%w after %v: %w", ErrGaveUp, b.Budget.Round(time.Second), err)
		}
		delay := min(b.Delay(attempt), left)
		if wait != nil {
			wait(err, attempt, delay)
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return err
		}
	}
}

// WaitReason describes what a transient failure makes a job wait for.
func WaitReason(err error) string {
	switch {
	case errors.Is(err, blob.ErrUnavailable):
		return "waiting for object storage"
	case errors.Is(err, queue.ErrUnavailable):
		return "waiting for NATS"
	}
	return "waiting to retry"
}

// SetWaiting records in an active job what it waits for ("" once it progresses again). It writes
// only when the value changes.
func SetWaiting(ctx context.Context, rt *Runtime, job, what string) error {
	j, _, err := rt.Jobs.Get(ctx, job)
	if err != nil || j.Waiting == what || j.Status.Terminal() {
		return err
	}
	_, err = rt.Jobs.Update(ctx, job, func(j *domain.QuantizationJob) error {
		if j.Status.Terminal() {
			return errTerminal
		}
		j.Waiting = what
		return nil
	})
	if errors.Is(err, errTerminal) {
		return nil
	}
	return err
}

// RetryJob is Retry for work of one job: meanwhile the job shows what it waits for (SetWaiting),
// and the note is cleared once the work went through.
func (b Backoff) RetryJob(ctx context.Context, rt *Runtime, job string, log *zap.Logger, f func() error) error {
	waited := false
	err := b.Retry(ctx, f, func(err error, attempt int, delay time.Duration) {
		log.Warn("transient failure; retrying", zap.Int("attempt", attempt), zap.Duration("delay", delay), zap.Error(err))
		waited = true
		if werr := SetWaiting(ctx, rt, job, WaitReason(err)); werr != nil {
			log.Debug("recording the wait failed", zap.Error(werr))
		}
	})
	if waited && err == nil {
		_ = SetWaiting(ctx, rt, job, "")
	}
	return err
}
