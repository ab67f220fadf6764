package fleet

import (
	"errors"
	"net"
	"net/url"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/convert"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/hub"
	"quantfleet.dev/libs/queue"
	"quantfleet.dev/libs/safetensors"
	"quantfleet.dev/services/fleet/ggufjob"
	"quantfleet.dev/services/fleet/modelstore"
)

// Permanent reports errors that retrying cannot fix: bad input (an unknown level or model, a
// corrupt checkpoint), a bad plan, a missing object. Everything else (network, 5xx) is transient.
func Permanent(err error) bool {
	for _, target := range []error{ggufjob.ErrBadPlan, ggufjob.ErrPlanChanged, ggufjob.ErrNoModel, ggufjob.ErrInvalidOutput, ggufjob.ErrShard,
		modelstore.ErrNotModelDir, blob.ErrNotFound, blob.ErrNoSuchBucket, blob.ErrInvalidKey,
		hfmodel.ErrBadConfig, hfmodel.ErrUnsupportedArchitecture, convert.ErrUnknownLevel, convert.ErrUnmappedTensor,
		safetensors.ErrBadHeader, safetensors.ErrNotFound, safetensors.ErrTruncated, safetensors.ErrUnsupportedDType,
		safetensors.ErrNoWeights, safetensors.ErrOverlap, queue.ErrPermanent, queue.ErrMalformed, domain.ErrInvalidConfig,
		hub.ErrInvalidModelID, hub.ErrNotFound, hub.ErrAccessDenied, hub.ErrNoFiles} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// Unreachable reports network-level failures (connection refused, DNS, timeouts).
func Unreachable(err error) bool {
	var op *net.OpError
	var ue *url.Error
	var dns *net.DNSError
	return errors.As(err, &op) || errors.As(err, &ue) || errors.As(err, &dns)
}
