package fleet

import "quantfleet.dev/libs/fault"

// Permanent reports errors that retrying cannot fix: bad input and permanent failures, as classified
// where they arose (package fault).
func Permanent(err error) bool { return fault.Permanent(err) }
