package fleet

import (
	"errors"
	"net"
	"net/url"

	"quantfleet.dev/libs/fault"
)

// Permanent reports errors that retrying cannot fix: bad input and permanent failures, as classified
// where they arose (package fault).
func Permanent(err error) bool { return fault.Permanent(err) }

// Unreachable reports network-level failures (connection refused, DNS, timeouts).
func Unreachable(err error) bool {
	var op *net.OpError
	var ue *url.Error
	var dns *net.DNSError
	return errors.As(err, &op) || errors.As(err, &ue) || errors.As(err, &dns)
}
