package objfs

import (
	"context"
	"fmt"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/services/fleet"
)

// OpenModel opens the checkpoint stored under prefix: only config.json and the safetensors
// headers are read.
func OpenModel(ctx context.Context, store blob.Store, prefix, name string) (*hfmodel.Model, *FS, error) {
	fsys, err := New(ctx, store, prefix)
	if err != nil {
		return nil, nil, err
	}
	if len(fsys.Files()) == 0 {
		return nil, nil, fmt.Errorf("%w: no objects under %q", fleet.ErrNoModel, prefix)
	}
	m, err := hfmodel.Open(fsys, name)
	if err != nil {
		return nil, nil, err
	}
	return m, fsys, nil
}
