// Package kinds is the registry of the fleet's job kinds: the one place that lists them. The
// dispatcher, the workers and the assembler find a job's kind here, by output format or by the
// kind named in its plan, and never branch on kinds themselves.
package kinds

import (
	"context"
	"fmt"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/gguf"
	"quantfleet.dev/services/fleet/layered"
)

// all lists every kind. A new kind is a package implementing fleet.Kind, one line here and its
// variant of the task message's oneof.
var all = []fleet.Kind{
	&gguf.Kind{},
	&layered.Kind{},
}

// ForFormat returns the kind that makes format f.
func ForFormat(f domain.OutputFormat) (fleet.Kind, error) {
	for _, k := range all {
		for _, kf := range k.Formats() {
			if kf == f {
				return k, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: no job kind makes format %q", domain.ErrInvalidConfig, f)
}

// TaskKinds are the wire kinds of every kind's tasks: what workers run.
func TaskKinds() []pb.TaskKind {
	var out []pb.TaskKind
	for _, k := range all {
		out = append(out, k.TaskKinds()...)
	}
	return out
}

// Of returns the kind of a plan, after checking the plan's kind-specific part.
func Of(p *fleet.Plan) (fleet.Kind, error) {
	for _, k := range all {
		if k.Name() == p.Kind {
			return k, k.Check(p)
		}
	}
	return nil, fmt.Errorf("%w: unknown job kind %q", fleet.ErrBadPlan, p.Kind)
}

// LoadPlan reads a job's stored plan (with sum not empty, only the plan of that SHA-256), checks
// it and returns it with its kind and SHA-256.
func LoadPlan(ctx context.Context, store blob.Store, key, sum string) (*fleet.Plan, fleet.Kind, string, error) {
	p, got, err := fleet.ReadPlan(ctx, store, key, sum)
	if err != nil {
		return nil, nil, "", err
	}
	k, err := Of(p)
	if err != nil {
		return nil, nil, "", err
	}
	return p, k, got, nil
}
