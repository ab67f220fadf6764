package hub

import "time"

// SetRetryBackoff shortens the wait between failed attempts for a test.
func SetRetryBackoff(d time.Duration) (restore func()) {
	old := retryBackoff
	retryBackoff = d
	return func() { retryBackoff = old }
}
