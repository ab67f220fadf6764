package worker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	tasks    *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
	slots    *prometheus.GaugeVec
	read     prometheus.Counter
	taskRead prometheus.Counter
	written  prometheus.Counter
	memory   prometheus.Gauge
}

// newMetrics makes the metrics, registered with reg unless it is nil.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		tasks: f.NewCounterVec(prometheus.CounterOpts{Name: "quantfleet_worker_tasks_total",
			Help: "Tasks settled by this worker, by pool, kind and result (ok, failed, malformed, dropped, duplicate, shutdown)."},
			[]string{"pool", "kind", "result"}),
		seconds: f.NewHistogramVec(prometheus.HistogramOpts{Name: "quantfleet_worker_task_duration_seconds",
			Help: "Wall time of successful tasks.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 18)}, []string{"pool", "kind"}),
		inFlight: f.NewGaugeVec(prometheus.GaugeOpts{Name: "quantfleet_worker_tasks_in_flight",
			Help: "Tasks being processed."}, []string{"pool"}),
		slots: f.NewGaugeVec(prometheus.GaugeOpts{Name: "quantfleet_worker_slots",
			Help: "Concurrent task slots."}, []string{"pool"}),
		read: f.NewCounter(prometheus.CounterOpts{Name: "quantfleet_worker_read_bytes_total",
			Help: "Bytes read from object storage (checkpoint headers and tensor ranges)."}),
		taskRead: f.NewCounter(prometheus.CounterOpts{Name: "quantfleet_worker_task_read_bytes_total",
			Help: "Bytes the worker's finished tasks report having read (TaskResult.bytes_read): for GPTQ/AWQ the job's " +
				"objects (activations, Hessian partials, statistics, solved groups), for GGUF the tensors (also in quantfleet_worker_read_bytes_total)."}),
		written: f.NewCounter(prometheus.CounterOpts{Name: "quantfleet_worker_written_bytes_total",
			Help: "Shard bytes written to object storage."}),
		memory: f.NewGauge(prometheus.GaugeOpts{Name: "quantfleet_worker_memory_bytes",
			Help: "Resident memory after the last task."}),
	}
	return m
}
