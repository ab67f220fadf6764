package progress

import "testing"

func TestLayers(t *testing.T) {
	// Layer 0 is three tasks, layer 1 two, and two tasks sit outside the layers (-1).
	l := NewLayers([]int{0, 0, 0, 1, 1, -1, -1})
	if d, n := l.Complete(); d != 0 || n != 4 || l.Last() != -1 {
		t.Fatalf("start: %d/%d layers, last %d; want 0/4, -1", d, n, l.Last())
	}
	steps := []struct {
		layer      int
		done, last int
	}{
		{0, 0, -1}, {1, 0, -1}, {0, 0, -1},
		{0, 1, 0}, // layer 0's last task
		{-1, 2, 0},
		{1, 3, 1},
		{1, 3, 1}, // a task too many changes nothing
		{-1, 4, 1},
		{7, 4, 1}, // a layer of no task neither
	}
	for i, s := range steps {
		l.TaskDone(s.layer)
		if d, n := l.Complete(); d != s.done || n != 4 || l.Last() != s.last {
			t.Errorf("step %d (layer %d): %d/%d layers, last %d; want %d/4, last %d", i, s.layer, d, n, l.Last(), s.done, s.last)
		}
	}
}
