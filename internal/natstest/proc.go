package natstest

import (
	"bytes"
	"io"
	"net/http"
	"sync"
)

// Output collects what a process or a run writes on its two output streams,
// safe for concurrent writers.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// HTTPGet fetches url and returns the status code and body; a request that
// fails gives code 0 and the error as the body, so that callers polling a
// server that is not up yet simply see "not 200".
func HTTPGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(body)
}
