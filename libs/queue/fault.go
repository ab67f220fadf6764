package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"quantfleet.dev/libs/fault"
)

// ErrUnavailable wraps NATS failures that may pass: no server reachable, a connection closed or
// reconnecting, no JetStream responder yet, a request that timed out. It is fault.ErrTransient.
var ErrUnavailable = fault.New(fault.ErrTransient, "NATS unavailable")

// classify marks err transient when NATS itself failed. A deadline counts only when it is the
// request's own, not the caller's (ctx still live).
func classify(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	switch {
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrNoServers),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrStaleConnection), errors.Is(err, jetstream.ErrNoHeartbeat),
		errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
