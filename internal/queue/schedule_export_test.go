package queue

import "time"

// SetForgetEvery sets how often ForgetFired purges, for a test; it returns
// the old value's restore.
func SetForgetEvery(d time.Duration) (restore func()) {
	old := forgetEvery
	forgetEvery = d
	return func() { forgetEvery = old }
}
