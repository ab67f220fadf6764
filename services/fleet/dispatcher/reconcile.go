package dispatcher

import (
	"context"
	"time"

	"go.uber.org/zap"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/queue"
	"quantfleet.dev/services/fleet"
)

// tick writes dirty checkpoints, reconciles completion records and samples the queue lag.
func (d *Dispatcher) tick(ctx context.Context) {
	ckT := time.NewTicker(time.Second)
	defer ckT.Stop()
	recT := time.NewTicker(d.cfg.Reconcile)
	defer recT.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ckT.C:
			for _, st := range d.snapshot() {
				if !st.isReady() {
					continue
				}
				if err := d.writeCheckpoint(ctx, st); err != nil {
					d.log.Warn("writing checkpoint failed", zap.String("job", st.id), zap.Error(err))
				}
				st.mu.Lock()
				memDirty := st.memDirty
				st.mu.Unlock()
				if memDirty {
					d.progress(ctx, st, nil)
				}
				d.watchPools(ctx, st)
			}
			d.sampleLag(ctx)
		case <-recT.C:
			for _, st := range d.snapshot() {
				if st.isReady() {
					d.reconcile(ctx, st)
				}
			}
		}
	}
}

func (d *Dispatcher) snapshot() []*jobState {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*jobState, 0, len(d.jobs))
	for _, st := range d.jobs {
		out = append(out, st)
	}
	return out
}

// reconcile picks up completion records whose events were lost.
func (d *Dispatcher) reconcile(ctx context.Context, st *jobState) {
	recs, err := d.rt.Done.ListJob(ctx, st.id)
	if err != nil {
		return
	}
	for id, b := range recs {
		st.mu.Lock()
		known := st.done[id] != nil
		st.mu.Unlock()
		if known {
			continue
		}
		if r, err := fleet.DecodeResult(b); err == nil {
			d.log.Info("found a completion without its event", zap.String("job", st.id), zap.String("task", id))
			d.progress(ctx, st, r)
		}
	}
	d.publishNext(ctx, st)
	d.maybeAssemble(ctx, st)
}

func (d *Dispatcher) sampleLag(ctx context.Context) {
	for _, pool := range []string{d.cfg.Pool, queue.PoolAsm} {
		c, err := d.rt.JS.Consumer(ctx, queue.TasksStream, queue.ConsumerName(pool))
		if err != nil {
			continue
		}
		info, err := c.Info(ctx)
		if err != nil {
			continue
		}
		d.m.pending.WithLabelValues(pool).Set(float64(info.NumPending))
		d.m.ackPending.WithLabelValues(pool).Set(float64(info.NumAckPending))
	}
}

// cleanup removes a cancelled or failed job's objects and completion records, twice: now, and
// after the tasks still running have noticed the end. A job that left that state meanwhile (a
// resumed failed job) is left alone.
func (d *Dispatcher) cleanup(ctx context.Context, id string, status domain.JobStatus, ended time.Time) {
	for i, wait := range []time.Duration{0, d.cfg.CleanupGrace} {
		sleep(ctx, wait)
		if ctx.Err() != nil {
			return
		}
		if j, _, err := d.rt.Jobs.Get(ctx, id); err != nil || j.Status != status || !j.EndTime.Equal(ended) {
			return
		}
		n := 0
		for _, p := range []string{fleet.JobPrefix(id), fleet.OutputPrefix(id)} {
			err := d.cfg.Backoff.Retry(ctx, func() error { // storage that is down is waited for
				k, err := d.rt.Store.DeletePrefix(ctx, p)
				n += k
				return err
			}, nil)
			if err != nil {
				d.log.Warn("removing an ended job's objects failed", zap.String("job", id), zap.Error(err))
			}
		}
		if err := d.rt.Done.DeleteJob(ctx, id); err != nil {
			d.log.Warn("removing an ended job's records failed", zap.String("job", id), zap.Error(err))
		}
		// Tasks still queued (a pool without workers keeps them forever) go too.
		req, _ := d.rt.Request(ctx, id)
		for _, pool := range []string{d.pool(req), queue.PoolAsm} {
			k, err := queue.DeleteTasks(ctx, d.rt.JS, pool, func(b []byte) bool {
				t, err := fleet.DecodeTask(b)
				return err == nil && t.JobId == id
			})
			if err != nil {
				d.log.Warn("removing an ended job's tasks failed", zap.String("job", id), zap.Error(err))
			}
			n += k
		}
		d.log.Info("ended job cleaned up", zap.String("job", id), zap.String("status", string(status)), zap.Int("objects", n), zap.Int("sweep", i+1))
	}
}
