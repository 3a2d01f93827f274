package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
	"github.com/nats-io/nats-server/v2/server"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/orderly-dev/orderly/internal/memlimit"
	"github.com/orderly-dev/orderly/internal/natstest"
)

const (
	monitoringDir = "monitoring"
	dashboardFile = "monitoring/dashboard.json"
	rulesFile     = "monitoring/prometheusrule.yaml"
	operationsDoc = "../docs/operations.md"
	// workerJob is the job label of the worker's series: the PodMonitor
	// takes it from the pods' app.kubernetes.io/name. The rules and the
	// dashboard select the worker's go_* and process_* series by it, since
	// the NATS exporter serves series of the same names.
	workerJob = "orderly-worker"
	// The exporter next to each NATS server. Its metric names below are
	// those of this version.
	natsExporterImage   = "natsio/prometheus-nats-exporter"
	natsExporterVersion = "0.20.1"
	// natsRow is the title of the dashboard's row whose panels read NATS's
	// series; the other panels read only the worker's.
	natsRow = "NATS"
)

// targetLabels are the labels Prometheus gives every series of a target
// found by the Prometheus Operator's pod discovery.
var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "endpoint"}

// metricInfo is what an expression may ask of a metric name: the labels
// its series have (besides the target's), and where the name comes from.
type metricInfo struct {
	labels map[string]bool
	source string
}

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// ---------------------------------------------------------------------------
// The names the worker serves

// servedFamily is one metric family of a real worker's /metrics.
type servedFamily struct {
	kind   dto.MetricType
	labels map[string]bool
}

// scrapeWorker starts the real worker binary on an embedded NATS server,
// waits until it is ready and returns the families of its /metrics.
func scrapeWorker(t *testing.T) map[string]servedFamily {
	t.Helper()
	w := workerInfo(t)
	cmd := exec.Command(w.path, "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0", "--replicas", "1")
	cmd.Env = []string{}
	var out natstest.Output
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("worker output:\n%s", out.String())
		}
	}()
	base := "http://" + natstest.LoggedAddr(t, &out, "start-up: http listening", "addr", natstest.Timeout)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if code, _ := natstest.HTTPGet(base + "/readyz"); code == http.StatusOK {
			break
		}
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("worker exited before it was ready: %v", err)
		case <-ctx.Done():
			t.Fatal("the worker never got ready")
		case <-tick.C:
		}
	}
	code, body := natstest.HTTPGet(base + "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	served := map[string]servedFamily{}
	for name, f := range fams {
		sf := servedFamily{kind: f.GetType(), labels: map[string]bool{}}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				sf.labels[l.GetName()] = true
			}
		}
		served[name] = sf
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		stopped = true
	case <-ctx.Done():
		t.Fatal("worker did not exit after SIGTERM")
	}
	return served
}

// documentedMetric is a row of the metrics table of docs/operations.md.
type documentedMetric struct {
	kind   string
	labels []string
}

// documentedMetrics reads the metrics table of docs/operations.md, which
// TestOperationsDocMetrics (cmd/worker) keeps equal to what a worker with
// traffic serves: the series with a reason, action or outcome label appear
// only with their first event, so a freshly started worker does not show
// them.
func documentedMetrics(t *testing.T) map[string]documentedMetric {
	t.Helper()
	data, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]documentedMetric{}
	row := regexp.MustCompile("(?m)^\\| `(orderly_[a-z0-9_]+)(?:\\{([a-z_,]+)\\})?` \\| (counter|gauge|histogram) \\|")
	for _, m := range row.FindAllStringSubmatch(string(data), -1) {
		var labels []string
		if m[2] != "" {
			labels = strings.Split(m[2], ",")
		}
		docs[m[1]] = documentedMetric{kind: m[3], labels: labels}
	}
	if len(docs) < 10 {
		t.Fatalf("found %d metrics in the table of %s", len(docs), operationsDoc)
	}
	return docs
}

// workerMetrics is every name an expression may use for the worker's
// series: the families a real worker serves and those docs/operations.md
// documents, with the samples' suffixes of histograms and summaries, and
// Prometheus's own up.
func workerMetrics(t *testing.T) map[string]metricInfo {
	t.Helper()
	served := scrapeWorker(t)
	docs := documentedMetrics(t)
	known := map[string]metricInfo{
		"up": {labels: set(), source: "Prometheus, for every target"},
	}
	add := func(name, kind string, labels map[string]bool, source string) {
		switch kind {
		case "histogram":
			known[name+"_bucket"] = metricInfo{labels: with(labels, "le"), source: source}
			known[name+"_sum"] = metricInfo{labels: labels, source: source}
			known[name+"_count"] = metricInfo{labels: labels, source: source}
		case "summary":
			known[name] = metricInfo{labels: with(labels, "quantile"), source: source}
			known[name+"_sum"] = metricInfo{labels: labels, source: source}
			known[name+"_count"] = metricInfo{labels: labels, source: source}
		default:
			known[name] = metricInfo{labels: labels, source: source}
		}
	}
	for name, f := range served {
		if _, ok := docs[name]; strings.HasPrefix(name, "orderly_") && !ok {
			t.Errorf("the worker serves %s, which the metrics table of %s lacks", name, operationsDoc)
		}
		add(name, strings.ToLower(f.kind.String()), f.labels, "a real worker's /metrics")
	}
	for name, d := range docs {
		labels := set(d.labels...)
		if f, ok := served[name]; ok {
			maps.Copy(labels, f.labels)
		} else {
			// Every Orderly metric the worker does not serve at start-up
			// is labelled by workflow (docs/operations.md, Metrics).
			labels["workflow"] = true
		}
		add(name, d.kind, labels, operationsDoc)
	}
	return known
}

func with(m map[string]bool, names ...string) map[string]bool {
	out := maps.Clone(m)
	for _, n := range names {
		out[n] = true
	}
	return out
}

// ---------------------------------------------------------------------------
// The names NATS's exporter serves

// natsMetrics is every name the NATS panels may use: those
// prometheus-nats-exporter (natsExporterVersion, with the arguments of
// components/monitoring and of the Helm chart: -prefix=nats -varz -jsz=all)
// serves. The /jsz names are fixed in the exporter's source
// (collector/jsz.go); the /varz names are the server's /varz fields,
// flattened as the exporter does it, read here from a real nats-server.
func natsMetrics(t *testing.T) map[string]metricInfo {
	t.Helper()
	serverLabels := []string{"server_id", "server_name", "cluster", "domain", "meta_leader", "is_meta_leader"}
	accountLabels := append(slices.Clone(serverLabels), "account", "account_name", "account_id")
	streamLabels := append(slices.Clone(accountLabels), "stream_name", "stream_leader", "is_stream_leader", "stream_raft_group")
	consumerLabels := append(slices.Clone(streamLabels), "consumer_name", "consumer_leader", "is_consumer_leader", "consumer_desc")
	source := natsExporterImage + ":" + natsExporterVersion + ", /jsz"
	known := map[string]metricInfo{}
	for labels, names := range map[*[]string][]string{
		&serverLabels: {"server_jetstream_disabled", "server_total_streams", "server_total_consumers",
			"server_total_messages", "server_total_message_bytes", "server_max_memory", "server_max_storage"},
		&accountLabels: {"account_max_memory", "account_max_storage", "account_storage_used", "account_memory_used"},
		&streamLabels: {"stream_total_messages", "stream_limit_messages", "stream_total_bytes", "stream_limit_bytes",
			"stream_first_seq", "stream_last_seq", "stream_consumer_count", "stream_subject_count"},
		&consumerLabels: {"consumer_delivered_consumer_seq", "consumer_delivered_stream_seq", "consumer_last_delivery_seconds",
			"consumer_last_ack_seconds", "consumer_num_ack_pending", "consumer_num_redelivered", "consumer_num_waiting",
			"consumer_num_pending", "consumer_ack_floor_stream_seq", "consumer_ack_floor_consumer_seq"},
	} {
		for _, n := range names {
			known["nats_"+n] = metricInfo{labels: set(*labels...), source: source}
		}
	}
	for _, field := range varzFields(t) {
		known["nats_varz_"+field] = metricInfo{labels: set("server_id"), source: "a real nats-server's /varz"}
	}
	return known
}

// varzFields returns the numeric fields of a real nats-server's /varz (with
// JetStream, as deploy/k8s/base/nats runs it), named as the exporter names
// them: nested objects' keys joined by "_" (collector.go, objectToMetrics).
func varzFields(t *testing.T) []string {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, HTTPHost: "127.0.0.1", HTTPPort: -1,
		JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	defer func() {
		s.Shutdown()
		s.WaitForShutdown()
	}()
	if !s.ReadyForConnections(natstest.Timeout) {
		t.Fatal("nats-server not ready")
	}
	code, body := natstest.HTTPGet("http://" + s.MonitorAddr().String() + "/varz")
	if code != http.StatusOK {
		t.Fatalf("/varz: %d %s", code, body)
	}
	var varz map[string]any
	if err := json.Unmarshal([]byte(body), &varz); err != nil {
		t.Fatal(err)
	}
	var fields []string
	var flatten func(m map[string]any, path []string)
	flatten = func(m map[string]any, path []string) {
		for k, v := range m {
			p := append(slices.Clone(path), k)
			switch v := v.(type) {
			case float64:
				name := strings.Trim(strings.ReplaceAll(strings.Join(p, "_"), "/", "_"), "_")
				for strings.Contains(name, "__") {
					name = strings.ReplaceAll(name, "__", "_")
				}
				fields = append(fields, name)
			case map[string]any:
				flatten(v, p)
			}
		}
	}
	flatten(varz, nil)
	if !slices.Contains(fields, "mem") || !slices.Contains(fields, "jetstream_stats_storage") {
		t.Fatalf("/varz fields %v lack mem or jetstream.stats.storage", fields)
	}
	return fields
}

// ---------------------------------------------------------------------------
// The dashboard

// loadDashboard decodes dashboard.json with the Grafana Foundation SDK's
// types (v0.0.22), strictly: unknown fields fail at every level, panels'
// options and field configs by their panel type, targets as Prometheus
// queries.
func loadDashboard(t *testing.T) *dashboard.Dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	d, err := decodeDashboard(data)
	if err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// decodeDashboard checks data with the SDK's strict decoder, then decodes
// it with the SDK's ordinary one. The strict decoder of v0.0.22 reports
// what is wrong, but returns its empty list of errors as a non-nil error
// (a typed nil), on which PanelOrRowPanel stops before it keeps the panel
// it decoded: its result has no panels. The ordinary decoder keeps them,
// with the same types.
func decodeDashboard(data []byte) (*dashboard.Dashboard, error) {
	plugins.RegisterDefaultPlugins()
	var strict dashboard.Dashboard
	err := strict.UnmarshalJSONStrict(data)
	if be, ok := err.(cog.BuildErrors); ok && len(be) == 0 {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	var d dashboard.Dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// TestDashboardAndAlertsDashboardDecodingIsStrict shows that decodeDashboard
// refuses a field the schema lacks, at each level the dashboard uses.
func TestDashboardAndAlertsDashboardDecodingIsStrict(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	for where, mutate := range map[string]func(d map[string]any){
		"dashboard": func(d map[string]any) { d["titel"] = "x" },
		"variable":  func(d map[string]any) { variable(d, 0)["refresh_"] = 1 },
		"row":       func(d map[string]any) { panel(d, "row")["collapsd"] = false },
		"panel":     func(d map[string]any) { panel(d, "timeseries")["gridpos"] = map[string]any{} },
		"target":    func(d map[string]any) { target(panel(d, "timeseries"))["expression"] = "up" },
		"stat options": func(d map[string]any) {
			panel(d, "stat")["options"].(map[string]any)["colourMode"] = "value"
		},
		"timeseries legend": func(d map[string]any) {
			panel(d, "timeseries")["options"].(map[string]any)["legend"].(map[string]any)["show"] = true
		},
		"timeseries custom": func(d map[string]any) {
			panel(d, "timeseries")["fieldConfig"].(map[string]any)["defaults"].(map[string]any)["custom"].(map[string]any)["linewidth"] = 1
		},
		"table options": func(d map[string]any) { panel(d, "table")["options"].(map[string]any)["showHeaders"] = true },
	} {
		var d map[string]any
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatal(err)
		}
		mutate(d)
		bad, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeDashboard(bad); err == nil {
			t.Errorf("%s: an unknown field decoded without error", where)
		}
	}
	// The file as it is decodes, with its panels.
	d, err := decodeDashboard(data)
	if err != nil || len(d.Panels) == 0 || d.Panels[0].RowPanel == nil && d.Panels[0].Panel == nil {
		t.Errorf("%s: %v, or no panels", dashboardFile, err)
	}
}

func variable(d map[string]any, i int) map[string]any {
	return d["templating"].(map[string]any)["list"].([]any)[i].(map[string]any)
}

func panel(d map[string]any, typ string) map[string]any {
	for _, p := range d["panels"].([]any) {
		if p := p.(map[string]any); p["type"] == typ {
			return p
		}
	}
	panic("no panel of type " + typ)
}

func target(p map[string]any) map[string]any {
	return p["targets"].([]any)[0].(map[string]any)
}

// dashboardPanel is a panel with the row it sits in.
type dashboardPanel struct {
	dashboard.Panel
	row string
}

// panels flattens the dashboard's panels, rows open or collapsed.
func panels(t *testing.T, d *dashboard.Dashboard) []dashboardPanel {
	t.Helper()
	var out []dashboardPanel
	row := ""
	for _, p := range d.Panels {
		switch {
		case p.RowPanel != nil:
			row = deref(p.RowPanel.Title)
			for _, q := range p.RowPanel.Panels {
				out = append(out, dashboardPanel{q, row})
			}
		case p.Panel != nil:
			out = append(out, dashboardPanel{*p.Panel, row})
		}
	}
	return out
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// TestDashboardAndAlertsDecodeStrictly: the dashboard is one Grafana
// imports and the sidecar loads: strict JSON, a data source variable that
// every panel and query uses (no data source or instance is fixed), the
// workflow and namespace variables, panels of the kinds it decodes, with
// unique ids, inside the grid and not overlapping.
func TestDashboardAndAlertsDecodeStrictly(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	if deref(d.Uid) == "" || deref(d.Title) == "" {
		t.Error("the dashboard has no uid or title")
	}
	if d.Id != nil {
		t.Error("the dashboard has an id: Grafana assigns it on import")
	}
	vars := map[string]dashboard.VariableModel{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != dashboard.VariableTypeDatasource || v.Query == nil || deref(v.Query.String) != "prometheus" {
		t.Errorf("no variable datasource of type datasource for prometheus: %+v", v)
	}
	for _, name := range []string{"workflow", "namespace"} {
		v, ok := vars[name]
		if !ok || v.Type != dashboard.VariableTypeQuery || !deref(v.IncludeAll) || !deref(v.Multi) {
			t.Errorf("variable %s: want a query variable with All and several values: %+v", name, v)
		}
		if ok && (v.Datasource == nil || v.Datasource.Uid == nil || *v.Datasource.Uid != "${datasource}") {
			t.Errorf("variable %s does not query ${datasource}", name)
		}
	}

	checkDS := func(where string, uid *string, typ *string) {
		if deref(uid) != "${datasource}" || deref(typ) != "prometheus" {
			t.Errorf("%s: data source %q (%q), want the variable ${datasource} (prometheus)", where, deref(uid), deref(typ))
		}
	}
	ids := map[uint32]string{}
	type rect struct{ x, y, w, h uint32 }
	var placed []rect
	var titles []string
	for _, p := range d.Panels {
		var id uint32
		var gp *dashboard.GridPos
		var title string
		if p.RowPanel != nil {
			id, gp, title = p.RowPanel.Id, p.RowPanel.GridPos, deref(p.RowPanel.Title)
		} else {
			id, gp, title = deref(p.Panel.Id), p.Panel.GridPos, deref(p.Panel.Title)
		}
		if other, dup := ids[id]; dup || id == 0 {
			t.Errorf("panel %q: id %d (also %q)", title, id, other)
		}
		ids[id] = title
		if gp == nil || gp.W == 0 || gp.H == 0 || gp.X+gp.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", title, gp)
			continue
		}
		r := rect{gp.X, gp.Y, gp.W, gp.H}
		for _, o := range placed {
			if r.x < o.x+o.w && o.x < r.x+r.w && r.y < o.y+o.h && o.y < r.y+r.h {
				t.Errorf("panel %q at %+v overlaps another at %+v", title, r, o)
			}
		}
		placed = append(placed, r)
		titles = append(titles, title)
	}
	for _, p := range panels(t, d) {
		title := deref(p.Title)
		if p.Datasource == nil {
			t.Errorf("panel %q has no data source", title)
		} else {
			checkDS("panel "+title, p.Datasource.Uid, p.Datasource.Type)
		}
		switch p.Type {
		case "timeseries":
			_, ok := p.Options.(*timeseries.Options)
			if _, fc := p.FieldConfig.Defaults.Custom.(*common.GraphFieldConfig); !ok || !fc {
				t.Errorf("panel %q: options %T, custom %T: not decoded as a timeseries panel's", title, p.Options, p.FieldConfig.Defaults.Custom)
			}
		case "stat":
			if _, ok := p.Options.(*stat.Options); !ok {
				t.Errorf("panel %q: options %T: not decoded as a stat panel's", title, p.Options)
			}
		case "table":
			if _, ok := p.Options.(*table.Options); !ok {
				t.Errorf("panel %q: options %T: not decoded as a table panel's", title, p.Options)
			}
		default:
			t.Errorf("panel %q of type %s: the test knows timeseries, stat and table", title, p.Type)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", title)
		}
		for i, q := range p.Targets {
			pq, ok := q.(*prometheus.Dataquery)
			if !ok {
				t.Errorf("panel %q, query %d: %T, want a Prometheus query", title, i, q)
				continue
			}
			if pq.Datasource == nil {
				t.Errorf("panel %q, query %d has no data source", title, i)
			} else {
				checkDS(fmt.Sprintf("panel %q, query %d", title, i), pq.Datasource.Uid, pq.Datasource.Type)
			}
		}
	}
	if len(titles) < 20 {
		t.Errorf("%d panels and rows: %v", len(titles), titles)
	}
}

// query is one PromQL expression of the dashboard or the rules.
type query struct {
	where  string
	expr   string
	legend string // a dashboard query's legend format
	nats   bool   // in the dashboard's NATS row: may read NATS's series
	dash   bool   // a dashboard query: uses the dashboard's variables
}

// grafanaIntervals are the dashboard's interval variables, with values to
// parse the queries with. The other variables ($workflow, $namespace)
// appear only in label matchers' strings, where the parser takes them as
// they are.
var grafanaIntervals = strings.NewReplacer("$__rate_interval", "2m", "$__range", "3h", "$__interval", "30s")

// dashboardQueries returns the expressions of the dashboard's panels and
// the metric selectors of its variables' label_values().
func dashboardQueries(t *testing.T) (exprs []query, selectors []query) {
	t.Helper()
	d := loadDashboard(t)
	for _, p := range panels(t, d) {
		for i, q := range p.Targets {
			pq, ok := q.(*prometheus.Dataquery)
			if !ok {
				continue // TestDashboardAndAlertsDecodeStrictly says so
			}
			exprs = append(exprs, query{
				where: fmt.Sprintf("%s: panel %q, query %d", dashboardFile, deref(p.Title), i),
				expr:  pq.Expr, legend: deref(pq.LegendFormat), nats: p.row == natsRow, dash: true,
			})
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+), *([a-zA-Z_][a-zA-Z0-9_]*)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != dashboard.VariableTypeQuery {
			continue
		}
		q := deref(deref(v.Query).String)
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q, want label_values(SELECTOR, LABEL)", v.Name, q)
			continue
		}
		// Not a dashboard query (dash): a variable's values are what the
		// others filter by.
		selectors = append(selectors, query{where: "variable " + v.Name, expr: m[1], legend: m[2]})
	}
	return exprs, selectors
}

// loadRules decodes prometheusrule.yaml strictly into the Prometheus
// Operator's type.
func loadRules(t *testing.T) *monitoringv1.PrometheusRule {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := decode(data)
	if err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	pr, ok := obj.(*monitoringv1.PrometheusRule)
	if !ok {
		t.Fatalf("%s: a %T, want a PrometheusRule", rulesFile, obj)
	}
	return pr
}

func ruleQueries(t *testing.T) []query {
	t.Helper()
	var out []query
	for _, g := range loadRules(t).Spec.Groups {
		for _, r := range g.Rules {
			out = append(out, query{where: fmt.Sprintf("%s: %s%s", rulesFile, r.Alert, r.Record), expr: r.Expr.String()})
		}
	}
	return out
}

var promql = parser.NewParser(parser.Options{})

// TestDashboardAndAlertsNameServedMetrics: every expression of the dashboard
// and the rules parses with Prometheus's own parser and names only metrics
// that exist, with labels they have: the worker's (a real worker's
// /metrics, and the table of docs/operations.md for the series that appear
// with their first event), and in the dashboard's NATS row those of
// prometheus-nats-exporter. A legend names only labels its expression
// keeps, and the dashboard's queries filter by its variables.
func TestDashboardAndAlertsNameServedMetrics(t *testing.T) {
	t.Parallel()
	worker := workerMetrics(t)
	nats := natsMetrics(t)
	exprs, selectors := dashboardQueries(t)
	exprs = append(exprs, ruleQueries(t)...)
	if len(exprs) < 40 {
		t.Errorf("found only %d expressions", len(exprs))
	}
	used := map[string]bool{}
	lookup := func(q query, name string) (metricInfo, bool) {
		if m, ok := worker[name]; ok {
			return m, true
		}
		if m, ok := nats[name]; ok && q.nats {
			return m, true
		}
		if _, ok := nats[name]; ok {
			t.Errorf("%s: %s is a NATS metric, outside the dashboard's %s row", q.where, name, natsRow)
		} else {
			t.Errorf("%s: no metric %s is served (by the worker, or by NATS's exporter in the %s row)", q.where, name, natsRow)
		}
		return metricInfo{}, false
	}
	// allowed is what a selector may match on and keep: the metric's
	// labels and the target's.
	allowed := func(q query, vs *parser.VectorSelector) (map[string]bool, bool) {
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel && name == "" {
				name = m.Value
			}
		}
		if name == "" {
			t.Errorf("%s: a selector without a metric name: %s", q.where, vs)
			return nil, false
		}
		used[name] = true
		m, ok := lookup(q, name)
		if !ok {
			return nil, false
		}
		return with(m.labels, targetLabels...), true
	}
	checkSelector := func(q query, vs *parser.VectorSelector) map[string]bool {
		labels, ok := allowed(q, vs)
		if !ok {
			return nil
		}
		matched := map[string]string{}
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel {
				continue
			}
			if !labels[m.Name] {
				t.Errorf("%s: %s has no label %s (it has %v)", q.where, vs.Name, m.Name, sorted(labels))
			}
			matched[m.Name] = m.Value
			if q.dash && (m.Name == "instance" || m.Name == "pod") {
				t.Errorf("%s: %s is fixed to %s %q", q.where, vs.Name, m.Name, m.Value)
			}
			if m.Name == "job" && !strings.HasPrefix(vs.Name, "go_") && !strings.HasPrefix(vs.Name, "process_") && vs.Name != "up" {
				t.Errorf("%s: %s selected by job: only the worker's go_*, process_* and up need it", q.where, vs.Name)
			}
		}
		if (strings.HasPrefix(vs.Name, "go_") || strings.HasPrefix(vs.Name, "process_") || vs.Name == "up") && matched["job"] != workerJob {
			t.Errorf("%s: %s without job=%q: NATS's exporter serves the same name", q.where, vs.Name, workerJob)
		}
		if q.dash {
			if matched["namespace"] != "$namespace" {
				t.Errorf("%s: %s does not filter by namespace=~\"$namespace\"", q.where, vs.Name)
			}
			switch {
			case labels["workflow"] && matched["workflow"] != "$workflow":
				t.Errorf("%s: %s does not filter by workflow=~\"$workflow\"", q.where, vs.Name)
			case labels["consumer_name"] && !strings.Contains(matched["consumer_name"], "${workflow:regex}"):
				t.Errorf("%s: %s does not filter its consumers by ${workflow:regex}", q.where, vs.Name)
			}
		}
		return labels
	}
	for _, q := range selectors {
		ms, err := promql.ParseMetricSelector(q.expr)
		if err != nil {
			t.Errorf("%s: %q: %v", q.where, q.expr, err)
			continue
		}
		if labels := checkSelector(q, &parser.VectorSelector{LabelMatchers: ms}); labels != nil && !labels[q.legend] {
			t.Errorf("%s: label_values of %s, which has no label %s", q.where, q.expr, q.legend)
		}
	}
	for _, q := range exprs {
		src := q.expr
		if q.dash {
			src = grafanaIntervals.Replace(src)
		}
		expr, err := promql.ParseExpr(src)
		if err != nil {
			t.Errorf("%s: %q: %v", q.where, q.expr, err)
			continue
		}
		out := outputLabels(t, q, expr, func(vs *parser.VectorSelector) map[string]bool { return checkSelector(q, vs) })
		for _, m := range regexp.MustCompile(`\{\{ *([a-zA-Z_][a-zA-Z0-9_]*) *\}\}`).FindAllStringSubmatch(q.legend, -1) {
			if !out[m[1]] {
				t.Errorf("%s: the legend shows {{%s}}, which %s does not keep (it keeps %v)", q.where, m[1], q.expr, sorted(out))
			}
		}
	}
	// The dashboard covers what the issue asks for.
	for _, name := range []string{
		"orderly_events_received_total", "orderly_events_applied_total", "orderly_events_rejected_total",
		"orderly_consumer_lag", "orderly_action_retries_total", "orderly_action_duration_seconds_count",
		"orderly_dead_lettered_total", "orderly_live_actors", "process_resident_memory_bytes",
		"go_gc_gomemlimit_bytes", "orderly_build_info", "orderly_ready", "nats_consumer_num_pending",
		"orderly_actions_queued", "orderly_actions_running", "orderly_actions_awaiting_retry",
		"orderly_actions_oldest_age_seconds", "orderly_dead_letters", "orderly_apply_latency_seconds_bucket",
	} {
		if !used[name] {
			t.Errorf("no expression reads %s", name)
		}
	}
}

func sorted(m map[string]bool) []string {
	return slices.Sorted(maps.Keys(m))
}

// outputLabels returns the labels the series of expr can have, checking on
// the way that aggregations group and binary operations match by labels
// their operands have. sel gives a selector's labels (nil: none known,
// reported already).
func outputLabels(t *testing.T, q query, expr parser.Expr, sel func(*parser.VectorSelector) map[string]bool) map[string]bool {
	t.Helper()
	rec := func(e parser.Expr) map[string]bool { return outputLabels(t, q, e, sel) }
	known := func(have map[string]bool, names []string, what string) {
		if have == nil {
			return
		}
		for _, n := range names {
			if !have[n] {
				t.Errorf("%s: %s %s: no operand has it (they have %v)", q.where, what, n, sorted(have))
			}
		}
	}
	switch e := expr.(type) {
	case *parser.VectorSelector:
		return sel(e)
	case *parser.MatrixSelector:
		return rec(e.VectorSelector)
	case *parser.SubqueryExpr:
		return rec(e.Expr)
	case *parser.ParenExpr:
		return rec(e.Expr)
	case *parser.UnaryExpr:
		return rec(e.Expr)
	case *parser.StepInvariantExpr:
		return rec(e.Expr)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return map[string]bool{}
	case *parser.AggregateExpr:
		in := rec(e.Expr)
		if e.Param != nil {
			rec(e.Param)
		}
		known(in, e.Grouping, "groups by")
		if in == nil {
			return nil
		}
		var out map[string]bool
		switch {
		case e.Op == parser.TOPK || e.Op == parser.BOTTOMK || e.Op == parser.LIMITK || e.Op == parser.LIMIT_RATIO:
			out = maps.Clone(in)
		case e.Without:
			out = maps.Clone(in)
			for _, g := range e.Grouping {
				delete(out, g)
			}
		default:
			out = set(e.Grouping...)
		}
		if e.Op == parser.COUNT_VALUES {
			if s, ok := e.Param.(*parser.StringLiteral); ok {
				out[s.Val] = true
			}
		}
		return out
	case *parser.Call:
		var args []map[string]bool
		for _, a := range e.Args {
			args = append(args, rec(a))
		}
		switch e.Func.Name {
		case "histogram_quantile":
			if args[1] == nil {
				return nil
			}
			known(args[1], []string{"le"}, "histogram_quantile needs")
			out := maps.Clone(args[1])
			delete(out, "le")
			return out
		case "label_replace":
			if args[0] == nil {
				return nil
			}
			return with(args[0], e.Args[1].(*parser.StringLiteral).Val)
		case "vector", "time", "scalar":
			return map[string]bool{}
		}
		out := map[string]bool{}
		for i, a := range args {
			if a == nil {
				return nil
			}
			if e.Args[i].Type() == parser.ValueTypeVector || e.Args[i].Type() == parser.ValueTypeMatrix {
				maps.Copy(out, a)
			}
		}
		return out
	case *parser.BinaryExpr:
		l, r := rec(e.LHS), rec(e.RHS)
		lv := e.LHS.Type() == parser.ValueTypeVector
		rv := e.RHS.Type() == parser.ValueTypeVector
		switch {
		case l == nil || r == nil:
			return nil
		case !lv:
			return r
		case !rv:
			return l
		}
		vm := e.VectorMatching
		if vm != nil && vm.On {
			known(l, vm.MatchingLabels, "matches on")
			known(r, vm.MatchingLabels, "matches on")
		}
		switch e.Op {
		case parser.LOR:
			return with(l, sorted(r)...)
		case parser.LAND, parser.LUNLESS:
			return l
		}
		if vm == nil {
			return l
		}
		out := maps.Clone(l)
		switch vm.Card {
		case parser.CardOneToOne:
			if vm.On {
				out = set(vm.MatchingLabels...)
			} else {
				for _, n := range vm.MatchingLabels {
					delete(out, n)
				}
			}
		case parser.CardManyToOne:
			known(r, vm.Include, "group_left takes")
			out = with(out, vm.Include...)
		case parser.CardOneToMany:
			known(l, vm.Include, "group_right takes")
			out = with(r, vm.Include...)
		}
		return out
	}
	t.Errorf("%s: %T in %s: the test does not know what labels it keeps", q.where, expr, q.expr)
	return nil
}

// ---------------------------------------------------------------------------
// The rules

// requiredAlerts are the alerts issue 19 asks for, with the least time
// each condition must hold ("for").
var requiredAlerts = map[string]time.Duration{
	"OrderlyBacklogGrowing":  10 * time.Minute, // lag growing for 10 m
	"OrderlyDeadLetters":     0,                // dead letters increasing
	"OrderlyActionsFailing":  5 * time.Minute,  // action failure rate
	"OrderlyWorkerNotReady":  5 * time.Minute,  // a worker unready for 5 m
	"OrderlySlowWorkBacklog": 5 * time.Minute,  // slow work older than a threshold
	"OrderlyMemoryNearLimit": 5 * time.Minute,  // memory near its limit
}

// TestDashboardAndAlertsRunbooks: every alert says what it is (summary,
// description, a severity) and links its runbook: a section of
// docs/operations.md, on GitHub, named after the alert, that speaks of
// the metrics the alert reads. The alerts the issue asks for are there.
func TestDashboardAndAlertsRunbooks(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	sections := markdownSections(string(doc))
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	module := regexp.MustCompile(`(?m)^module (\S+)`).FindSubmatch(gomod)
	if module == nil {
		t.Fatal("../go.mod has no module line")
	}
	prefix := "https://" + string(module[1]) + "/blob/main/docs/operations.md#"

	seen := map[string]bool{}
	for _, g := range loadRules(t).Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, sev)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s has no %s", r.Alert, a)
				}
			}
			if want, ok := requiredAlerts[r.Alert]; ok {
				var got time.Duration
				if r.For != nil {
					d, err := model.ParseDuration(string(*r.For))
					if err != nil {
						t.Errorf("alert %s: for %q: %v", r.Alert, *r.For, err)
					}
					got = time.Duration(d)
				}
				if got < want {
					t.Errorf("alert %s holds for %s, want at least %s", r.Alert, got, want)
				}
			}
			u := r.Annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(u, prefix)
			if !ok {
				t.Errorf("alert %s: runbook_url %s is not a section of %s", r.Alert, u, prefix)
				continue
			}
			if anchor != strings.ToLower(r.Alert) {
				t.Errorf("alert %s: runbook anchor #%s, want #%s (a section named after the alert)", r.Alert, anchor, strings.ToLower(r.Alert))
			}
			text, ok := sections[anchor]
			if !ok {
				t.Errorf("alert %s: runbook_url %s: %s has no section #%s", r.Alert, u, operationsDoc, anchor)
				continue
			}
			expr, err := promql.ParseExpr(r.Expr.String())
			if err != nil {
				continue // TestDashboardAndAlertsNameServedMetrics says so
			}
			mentioned := false
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok && strings.Contains(text, strings.TrimSuffix(vs.Name, "_count")) {
					mentioned = true
				}
				return nil
			})
			if !mentioned {
				t.Errorf("alert %s: its runbook (#%s) names none of the metrics it reads", r.Alert, anchor)
			}
		}
	}
	for name := range requiredAlerts {
		if !seen[name] {
			t.Errorf("no alert %s", name)
		}
	}
}

// markdownSections maps each heading's GitHub anchor to the text under it,
// up to the next heading.
func markdownSections(doc string) map[string]string {
	sections := map[string]string{}
	anchor, inCode := "", false
	var text strings.Builder
	flush := func() {
		if anchor != "" {
			sections[anchor] = text.String()
		}
		text.Reset()
	}
	for line := range strings.Lines(doc) {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if m := regexp.MustCompile(`^#{1,6} +(.+?)\s*$`).FindStringSubmatch(line); m != nil && !inCode {
			flush()
			anchor = githubAnchor(m[1])
			continue
		}
		text.WriteString(line)
	}
	flush()
	return sections
}

// githubAnchor is the id GitHub gives a heading: lower case, punctuation
// other than - and _ dropped, spaces as -.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// The kustomize component

// TestDashboardAndAlertsComponent builds the example overlay, which uses
// components/monitoring, and checks that its pieces agree with the rest:
// the PodMonitors find the worker's and NATS's pods and ports, with the
// job names the expressions select by; NATS's exporter reads the server's
// monitoring port, pinned at the version whose names the dashboard uses;
// the rules and the dashboard ConfigMap are the files of deploy/monitoring;
// the rules' thresholds are the manifests' settings.
func TestDashboardAndAlertsComponent(t *testing.T) {
	t.Parallel()
	b := build(t, filepath.Join(k8sDir, "overlays", "example"))
	if !slices.Contains(b.kust.Components, "../../components/monitoring") {
		t.Fatalf("the example overlay does not use components/monitoring: %v", b.kust.Components)
	}
	tmpls := podTemplates(b)

	// PodMonitors: one per workload, on a port its pods have.
	jobs := map[string]string{} // workload -> job label
	for _, pm := range all[*monitoringv1.PodMonitor](b) {
		names := matching(b, selector(t, &pm.Spec.Selector))
		if len(names) != 1 {
			t.Errorf("PodMonitor %s selects %v, want one workload", pm.Name, names)
			continue
		}
		tmpl := tmpls[names[0]]
		job := tmpl.Labels[pm.Spec.JobLabel]
		if pm.Spec.JobLabel == "" || job == "" {
			t.Errorf("PodMonitor %s: jobLabel %q is no label of the pods of %s", pm.Name, pm.Spec.JobLabel, names[0])
		}
		jobs[names[0]] = job
		if len(pm.Spec.PodMetricsEndpoints) != 1 {
			t.Errorf("PodMonitor %s: %d endpoints, want 1", pm.Name, len(pm.Spec.PodMetricsEndpoints))
			continue
		}
		ep := pm.Spec.PodMetricsEndpoints[0]
		if ep.Port == nil || containerPort(tmpl, *ep.Port) <= 0 {
			t.Errorf("PodMonitor %s: port %v is not a named port of %s", pm.Name, deref(ep.Port), names[0])
		}
		if ep.Path != "/metrics" {
			t.Errorf("PodMonitor %s: path %q, want /metrics", pm.Name, ep.Path)
		}
	}
	if jobs[workerName] != workerJob {
		t.Errorf("the worker's series have job %q, the expressions select job=%q", jobs[workerName], workerJob)
	}
	_, wc := workerPod(t, b)
	if e, ok := env(wc, "ORDERLY_HTTP"); !ok || !strings.HasSuffix(e.Value, ":"+strconv.Itoa(int(containerPort(tmpls[workerName], "http")))) {
		t.Errorf("the worker serves /metrics on %q, not on its port http", e.Value)
	}
	if _, ok := jobs["nats"]; !ok {
		t.Error("no PodMonitor for NATS")
	}
	for _, q := range append(ruleQueries(t), must(dashboardQueries(t))...) {
		expr, err := promql.ParseExpr(grafanaIntervals.Replace(q.expr))
		if err != nil {
			continue
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				for _, m := range vs.LabelMatchers {
					if m.Name == "job" && !slices.Contains(slices.Collect(maps.Values(jobs)), m.Value) {
						t.Errorf("%s: job %q is no PodMonitor's job (%v)", q.where, m.Value, jobs)
					}
				}
			}
			return nil
		})
	}

	// The exporter next to each NATS server.
	nats, ok := find[*appsv1.StatefulSet](b, "nats")
	if !ok {
		t.Fatal("no NATS StatefulSet")
	}
	ex := container(t, &nats.Spec.Template, "prom-exporter")
	checkNATSExporter(t, ex, &nats.Spec.Template)

	// The rules and the dashboard, as deploy/monitoring has them.
	prs := all[*monitoringv1.PrometheusRule](b)
	if len(prs) != 1 {
		t.Fatalf("%d PrometheusRules, want 1", len(prs))
	}
	if want := loadRules(t); !equalJSON(t, prs[0].Spec, want.Spec) {
		t.Errorf("the PrometheusRule differs from %s", rulesFile)
	}
	cm, ok := find[*corev1.ConfigMap](b, "orderly-dashboard")
	if !ok {
		t.Fatal("no ConfigMap orderly-dashboard")
	}
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("ConfigMap %s: labels %v, want grafana_dashboard: \"1\" for Grafana's sidecar", cm.Name, cm.Labels)
	}
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(cm.Data) != 1 || cm.Data["orderly.json"] != string(data) {
		t.Errorf("ConfigMap %s: keys %v, want orderly.json, the content of %s", cm.Name, slices.Collect(maps.Keys(cm.Data)), dashboardFile)
	}
	// kubectl apply keeps the whole object in an annotation, and the
	// annotations of an object may hold 256 KiB.
	if len(data) > 200<<10 {
		t.Errorf("%s is %d bytes: too large for kubectl apply's last-applied annotation", dashboardFile, len(data))
	}

	// Thresholds that are settings of the manifests.
	_, c := workerPod(t, b)
	e, _ := env(c, "ORDERLY_PARTITIONS")
	partitions, err := strconv.Atoi(e.Value)
	if err != nil {
		t.Fatalf("ORDERLY_PARTITIONS=%q", e.Value)
	}
	checkThreshold(t, "OrderlyPartitionWithoutOwner", float64(partitions), e.Value)
	limit := workerInfo(t).queueLimitDefault
	if e, ok := env(c, "ORDERLY_QUEUE_LIMIT"); ok {
		if limit, err = strconv.ParseInt(e.Value, 10, 64); err != nil {
			t.Fatalf("ORDERLY_QUEUE_LIMIT=%q", e.Value)
		}
	}
	checkThreshold(t, "OrderlyBacklogNearQueueLimit", float64(limit)*0.8, strconv.FormatInt(limit, 10))
}

func must[T any](v, _ T) T { return v }

// checkThreshold: alert's expression compares with want, and its summary
// or description names the setting it comes from, setting.
func checkThreshold(t *testing.T, alert string, want float64, setting string) {
	t.Helper()
	for _, g := range loadRules(t).Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert != alert {
				continue
			}
			expr, err := promql.ParseExpr(r.Expr.String())
			if err != nil {
				t.Fatal(err)
			}
			be, ok := expr.(*parser.BinaryExpr)
			if !ok || !be.Op.IsComparisonOperator() {
				t.Fatalf("alert %s: %s is no comparison", alert, expr)
			}
			if n, ok := be.RHS.(*parser.NumberLiteral); !ok || n.Val != want {
				t.Errorf("alert %s compares with %s, the manifests say %v", alert, be.RHS, want)
			}
			if !strings.Contains(r.Annotations["summary"]+r.Annotations["description"], setting) {
				t.Errorf("alert %s: its summary and description do not say %s", alert, setting)
			}
			return
		}
	}
	t.Errorf("no alert %s", alert)
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}

// checkNATSExporter: the exporter reads this pod's NATS monitoring port,
// serves the names the dashboard uses (the image's version, the arguments),
// on the port it declares, hardened like the rest.
func checkNATSExporter(t *testing.T, ex *corev1.Container, tmpl *corev1.PodTemplateSpec) {
	t.Helper()
	if want := natsExporterImage + ":" + natsExporterVersion; ex.Image != want {
		t.Errorf("NATS exporter image %s, want %s (the version whose names the dashboard is checked against)", ex.Image, want)
	}
	args := map[string]string{}
	var target string
	for _, a := range ex.Args {
		if !strings.HasPrefix(a, "-") {
			target = a
			continue
		}
		k, v, _ := strings.Cut(a, "=")
		args[k] = v
	}
	for k, v := range map[string]string{"-prefix": "nats", "-jsz": "all", "-varz": ""} {
		if got, ok := args[k]; !ok || got != v {
			t.Errorf("NATS exporter: %s=%q, want %q (the names the dashboard reads)", k, got, v)
		}
	}
	if port := containerPort(tmpl, "prom-metrics"); args["-port"] != strconv.Itoa(int(port)) {
		t.Errorf("NATS exporter listens on -port=%s, its port prom-metrics is %d", args["-port"], port)
	}
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "http" || u.Hostname() != "localhost" || u.Port() != strconv.Itoa(int(containerPort(tmpl, "monitor"))) {
		t.Errorf("NATS exporter reads %q, want http://localhost:<the NATS container's monitor port>/", target)
	}
	checkContainerHardening(t, "prom-exporter", ex.SecurityContext)
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := ex.Resources.Limits[r]; !ok {
			t.Errorf("NATS exporter: no %s limit", r)
		}
	}
}

// TestDashboardAndAlertsHelmNATS: with NATS from the Helm chart, the
// component adds to overlays/helm-nats (its exporter patch finds no NATS
// StatefulSet and does nothing), and the chart's own exporter, which
// nats-values.yaml turns on, is the pinned version on the port the NATS
// PodMonitor scrapes.
func TestDashboardAndAlertsHelmNATS(t *testing.T) {
	t.Parallel()
	b := buildWith(t, "overlays/helm-nats", "components/monitoring")
	if _, ok := find[*appsv1.StatefulSet](b, "nats"); ok {
		t.Error("the exporter patch made a NATS StatefulSet")
	}
	var natsPM *monitoringv1.PodMonitor
	for _, pm := range all[*monitoringv1.PodMonitor](b) {
		if pm.Spec.Selector.MatchLabels["app.kubernetes.io/name"] == "nats" {
			natsPM = pm
		}
	}
	if natsPM == nil || len(natsPM.Spec.PodMetricsEndpoints) != 1 {
		t.Fatal("no PodMonitor for the NATS pods")
	}

	data, err := os.ReadFile("helm/nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		PromExporter struct {
			Enabled bool `json:"enabled"`
			Image   struct {
				Repository string `json:"repository"`
				Tag        string `json:"tag"`
			} `json:"image"`
			Port       int `json:"port"`
			PodMonitor struct {
				Enabled bool `json:"enabled"`
			} `json:"podMonitor"`
		} `json:"promExporter"`
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	pe := v.PromExporter
	if !pe.Enabled || pe.Image.Tag != natsExporterVersion || (pe.Image.Repository != "" && pe.Image.Repository != natsExporterImage) {
		t.Errorf("nats-values.yaml promExporter %+v: want it enabled, image %s:%s", pe, natsExporterImage, natsExporterVersion)
	}
	if pe.PodMonitor.Enabled {
		t.Error("nats-values.yaml turns on the chart's PodMonitor: components/monitoring has one, and two would scrape NATS twice")
	}
	// The chart names its exporter's port prom-metrics.
	if p := deref(natsPM.Spec.PodMetricsEndpoints[0].Port); p != "prom-metrics" {
		t.Errorf("the NATS PodMonitor scrapes port %q; the chart's exporter serves on prom-metrics", p)
	}
}

// TestDashboardAndAlertsMemoryLimit: the memory panel and alert take the
// memory limit as go_gc_gomemlimit_bytes / 0.9: the worker sets the Go
// runtime's soft limit to 90 % of the memory limit it is given, which
// every overlay sets (checkWorkerMemory, TestWorkerRunsWithManifestEnvironment).
func TestDashboardAndAlertsMemoryLimit(t *testing.T) {
	t.Parallel()
	const limit = 1 << 30
	if got := float64(memlimit.SoftLimit(limit)) / limit; got < 0.8999 || got > 0.9001 {
		t.Fatalf("the soft limit is %.4f of the memory limit; the dashboard and the alert divide by 0.9", got)
	}
	exprs, _ := dashboardQueries(t)
	exprs = append(exprs, ruleQueries(t)...)
	n := 0
	for _, q := range exprs {
		if strings.Contains(q.expr, "go_gc_gomemlimit_bytes") && strings.Contains(q.expr, "/ 0.9") {
			n++
		}
	}
	if n < 2 {
		t.Errorf("%d expressions take the limit as go_gc_gomemlimit_bytes / 0.9, want the panel's and the alert's", n)
	}
}
