package dispatcher

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"quantfleet.dev/libs/domain"
)

type metrics struct {
	published   *prometheus.CounterVec
	done        prometheus.Counter
	failed      prometheus.Counter
	deadLetters prometheus.Counter
	pending     *prometheus.GaugeVec
	ackPending  *prometheus.GaugeVec
	jobs        *prometheus.GaugeVec

	mu     sync.Mutex
	states map[string]domain.JobStatus
}

// newMetrics makes the metrics, registered with reg unless it is nil.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		published: f.NewCounterVec(prometheus.CounterOpts{Name: "quantfleet_dispatcher_tasks_published_total",
			Help: "Tasks enqueued (de-duplicated publishes not counted), by kind."}, []string{"kind"}),
		done: f.NewCounter(prometheus.CounterOpts{Name: "quantfleet_dispatcher_tasks_done_total",
			Help: "Task completions applied to jobs."}),
		failed: f.NewCounter(prometheus.CounterOpts{Name: "quantfleet_dispatcher_tasks_failed_total",
			Help: "Failed task attempts reported by workers."}),
		deadLetters: f.NewCounter(prometheus.CounterOpts{Name: "quantfleet_dispatcher_dead_letters_total",
			Help: "Dead-lettered tasks seen."}),
		pending: f.NewGaugeVec(prometheus.GaugeOpts{Name: "quantfleet_queue_pending_tasks",
			Help: "Tasks waiting in a pool's queue (consumer num_pending): the queue lag."}, []string{"pool"}),
		ackPending: f.NewGaugeVec(prometheus.GaugeOpts{Name: "quantfleet_queue_running_tasks",
			Help: "Tasks delivered and not yet acknowledged (consumer num_ack_pending)."}, []string{"pool"}),
		jobs: f.NewGaugeVec(prometheus.GaugeOpts{Name: "quantfleet_dispatcher_jobs",
			Help: "Jobs by state, as seen by this dispatcher."}, []string{"state"}),
		states: map[string]domain.JobStatus{},
	}
	return m
}

func (m *metrics) observeJob(j *domain.QuantizationJob) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.states[j.JobID]; ok {
		if old == j.Status {
			return
		}
		m.jobs.WithLabelValues(string(old)).Dec()
	}
	m.states[j.JobID] = j.Status
	m.jobs.WithLabelValues(string(j.Status)).Inc()
}
