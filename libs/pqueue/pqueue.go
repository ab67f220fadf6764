// Package pqueue provides a generic binary min-heap, a priority queue without container/heap's
// interface boxing: the tokenizers' merge loops push and pop once per merge, their hot path.
package pqueue

// Queue is a min-heap ordered by less; the zero value is not usable, make one with New.
type Queue[T any] struct {
	items []T
	less  func(a, b T) bool
}

// New returns an empty queue ordered by less with room for capacity items.
func New[T any](less func(a, b T) bool, capacity int) *Queue[T] {
	return &Queue[T]{items: make([]T, 0, capacity), less: less}
}

// Len returns the number of queued items.
func (q *Queue[T]) Len() int { return len(q.items) }

// Push adds x.
func (q *Queue[T]) Push(x T) {
	q.items = append(q.items, x)
	i := len(q.items) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(q.items[i], q.items[p]) {
			break
		}
		q.items[i], q.items[p] = q.items[p], q.items[i]
		i = p
	}
}

// Pop removes and returns the least item; the queue must not be empty.
func (q *Queue[T]) Pop() T {
	top := q.items[0]
	n := len(q.items) - 1
	q.items[0] = q.items[n]
	q.items = q.items[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && q.less(q.items[r], q.items[l]) {
			m = r
		}
		if !q.less(q.items[m], q.items[i]) {
			break
		}
		q.items[i], q.items[m] = q.items[m], q.items[i]
		i = m
	}
	return top
}
