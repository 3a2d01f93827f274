package queue

import "time"

// SetForgetEvery sets how often ForgetFired purges, for a test; it returns
// the old value's restore.
func SetForgetEvery(d time.Duration) (restore func()) {
	old := forgetEvery
	forgetEvery = d
	return func() { forgetEvery = old }
}

// IndexWithTimeout is Conn.Index with another IndexWriteTimeout.
func IndexWithTimeout(c *Conn, workflow string, window int, timeout time.Duration, failed func(key string)) *Index {
	return c.index(workflow, window, timeout, failed)
}
