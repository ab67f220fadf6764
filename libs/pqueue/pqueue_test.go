package pqueue

import (
	"math/rand"
	"slices"
	"testing"
)

// TestQueueOrder: interleaved pushes and pops give every item back, each pop the least of what
// is queued (checked against a sorted copy), for sizes around the heap's level boundaries.
func TestQueueOrder(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, n := range []int{0, 1, 2, 3, 7, 8, 100, 1000} {
		q := New(func(a, b int) bool { return a < b }, 0)
		var shadow []int
		var popped int
		for i := 0; i < n; i++ {
			x := rng.Intn(50) // duplicates on purpose
			q.Push(x)
			shadow = append(shadow, x)
			if rng.Intn(3) == 0 {
				slices.Sort(shadow)
				if got := q.Pop(); got != shadow[0] {
					t.Fatalf("n=%d: pop %d, want %d", n, got, shadow[0])
				}
				shadow = shadow[1:]
				popped++
			}
		}
		slices.Sort(shadow)
		for _, want := range shadow {
			if got := q.Pop(); got != want {
				t.Fatalf("n=%d: pop %d, want %d", n, got, want)
			}
			popped++
		}
		if q.Len() != 0 || popped != n {
			t.Fatalf("n=%d: %d left, %d popped", n, q.Len(), popped)
		}
	}
}
