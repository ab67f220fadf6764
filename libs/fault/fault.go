// Package fault classifies errors where they arise, so that callers decide with one errors.Is
// instead of keeping allow-lists of other packages' sentinels:
//
//   - ErrBadInput: the user's input is wrong (a flag, a model file, a config value). No retry can fix
//     it; commands exit 2, the fleet fails the job at once with the message.
//   - ErrPermanent: not the user's fault, but retrying the same work cannot succeed (a plan that
//     contradicts itself, a result that fails validation). Bad input is permanent too.
//   - ErrTransient: the failure may go away by itself (a server down or overloaded, a timeout).
//
// A package declares its sentinels with New, naming their class:
//
//	var ErrBadHeader = fault.New(fault.ErrBadInput, "safetensors: bad header")
//
// and wraps them with %w as usual; errors.Is(err, fault.ErrBadInput) then holds for every error that
// wraps ErrBadHeader, as errors.Is(err, fs.ErrNotExist) holds for a syscall.ENOENT.
package fault

import "errors"

// The classes. Wrap them through New's sentinels, or directly with fmt.Errorf("%w: ...", class).
var (
	ErrBadInput  = errors.New("bad input")
	ErrPermanent = errors.New("permanent failure")
	ErrTransient = errors.New("transient failure")
)

// New returns a sentinel error with the given text that belongs to class (one of ErrBadInput,
// ErrPermanent, ErrTransient): errors.Is(New(c, s), c) is true, and errors.Is(err, sentinel) works
// as for any errors.New value.
func New(class error, text string) error {
	return &sentinel{text: text, class: class}
}

type sentinel struct {
	text  string
	class error
}

func (e *sentinel) Error() string { return e.text }

// Is makes a sentinel match its class; bad input is also permanent.
func (e *sentinel) Is(target error) bool {
	return target == e.class || (target == ErrPermanent && e.class == ErrBadInput)
}

// BadInput reports whether err, or any error it wraps, is the user's input at fault.
func BadInput(err error) bool { return errors.Is(err, ErrBadInput) }

// Permanent reports whether retrying cannot fix err: bad input or a permanent failure.
func Permanent(err error) bool {
	return errors.Is(err, ErrPermanent) || errors.Is(err, ErrBadInput)
}

// Transient reports whether err was classified as a failure that may pass.
func Transient(err error) bool { return errors.Is(err, ErrTransient) }
