package quantize

import "context"

// assembly adds each layer's result to a checkpoint as soon as the layer's tasks are done, in
// layer order and beside the later layers' work, so that little is left to write when the
// last layer ends; each result leaves the store once written. An error cancels the job (the
// context's cancel) and is what wait returns.
type assembly struct {
	left  []int // tasks not done, per layer
	next  int   // the first layer not handed to the writer
	ready chan int
	done  chan error
}

// assemble starts the writer of layers' results from store (whose objects del removes) into b
// for the plan's tasks.
func assemble(ctx context.Context, store ShardStore, del func(key string) error, p *ShardPlan, tasks []ShardTask, b *CheckpointBuilder, cancel context.CancelCauseFunc) *assembly {
	a := &assembly{left: make([]int, p.Layers), ready: make(chan int, p.Layers), done: make(chan error, 1)}
	for _, t := range tasks {
		a.left[t.Layer]++
	}
	go func() {
		var err error
		for L := range a.ready {
			if err == nil {
				if err = addLayerResult(ctx, store, del, p, b, L); err != nil {
					cancel(err)
				}
			}
		}
		a.done <- err
	}()
	return a
}

func addLayerResult(ctx context.Context, store ShardStore, del func(key string) error, p *ShardPlan, b *CheckpointBuilder, layer int) error {
	r, err := ShardedLayerResult(ctx, store, p, layer)
	if err == nil {
		err = b.AddLayer(r)
	}
	for _, key := range layerResultKeys(p, layer) {
		if err != nil {
			break
		}
		err = del(key)
	}
	return err
}

// taskDone notes that a task of layer finished (tasks are noted one at a time).
func (a *assembly) taskDone(layer int) {
	a.left[layer]--
	for a.next < len(a.left) && a.left[a.next] == 0 {
		a.ready <- a.next // never blocks: room for every layer
		a.next++
	}
}

// complete is the number of layers whose tasks are all done (layers end in order here).
func (a *assembly) complete() int { return a.next }

// wait returns, once every layer handed over is written, the first error.
func (a *assembly) wait() error {
	close(a.ready)
	return <-a.done
}
