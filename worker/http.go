package worker

import (
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// Handler serves /healthz (200 while the process lives), /readyz (200 once
// the start-up chain is done and while NATS is connected, 503 otherwise;
// either way followed by a line for each of Problems),
// /partitions (this worker's id and the partitions it pulls, as JSON) and
// /metrics.
func (w *Worker) Handler() http.Handler {
	w.httpOnce.Do(func() { w.http = w.newHandler() })
	return w.http
}

func (w *Worker) newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(rw, "ok")
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		problems := w.Problems()
		if !w.Ready() {
			http.Error(rw, strings.Join(append([]string{"not ready"}, problems...), "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ready")
		for _, p := range problems {
			fmt.Fprintln(rw, p)
		}
	})
	mux.HandleFunc("GET /partitions", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(rw).Encode(map[string]any{"worker_id": w.cfg.ID, "partitions": w.Partitions()})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(w.metrics.reg, promhttp.HandlerOpts{}))
	return mux
}
