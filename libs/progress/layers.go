package progress

// Layers counts the layers a job has completed as its tasks finish, for work split into more tasks
// than layers (a sharded GPTQ layer is Hessian partials, solves and forwards; an AWQ layer ends with
// its finish): a layer is complete once every task of it is done, so "layer x/y" means whole layers
// and not tasks. It is not safe for concurrent use.
type Layers struct {
	left     map[int]int // tasks not done yet, by layer
	total    int
	complete int
	last     int
}

// NewLayers counts the layers of tasks whose layers are layerOf (one entry per task). A negative
// entry is a task outside the layers (a GGUF embedding or output matrix): it counts as a layer of
// its own, so that a job of such tasks only still reports whole units.
func NewLayers(layerOf []int) *Layers {
	l := &Layers{left: map[int]int{}, last: -1}
	alone := -1
	for _, layer := range layerOf {
		if layer < 0 {
			layer, alone = alone, alone-1 // a key of its own below every real layer
		}
		if l.left[layer] == 0 {
			l.total++
		}
		l.left[layer]++
	}
	return l
}

// TaskDone notes that one task of layer finished; every task must be noted once. A negative layer
// completes one of the tasks outside the layers.
func (l *Layers) TaskDone(layer int) {
	if layer < 0 {
		for k, n := range l.left {
			if k < 0 && n > 0 {
				layer = k
				break
			}
		}
	}
	n, ok := l.left[layer]
	if !ok || n == 0 {
		return
	}
	l.left[layer] = n - 1
	if n == 1 {
		l.complete++
		if layer >= 0 {
			l.last = max(l.last, layer)
		}
	}
}

// Complete returns how many layers are complete and how many there are.
func (l *Layers) Complete() (done, total int) { return l.complete, l.total }

// Last returns the highest complete layer index, -1 while none is.
func (l *Layers) Last() int { return l.last }
