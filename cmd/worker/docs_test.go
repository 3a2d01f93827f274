package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
)

// docFiles are the Markdown files whose claims the tests below check.
func docFiles(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	return append([]string{"../../README.md"}, docs...)
}

// metricName finds Orderly's metric names in prose: orderly_ at the start
// of a word.
var metricName = regexp.MustCompile(`(?:^|[^A-Za-z0-9_])(orderly_[a-z0-9_]+)`)

// metricNames returns the metric names text names, leaving out patterns
// (orderly_events_.* in a grep, say: a name followed by ( or * or ending
// in _) and NATS resources (notMetric).
func metricNames(text string) []string {
	var out []string
	for _, m := range metricName.FindAllStringSubmatchIndex(text, -1) {
		name, next := text[m[2]:m[3]], text[m[3]:]
		if strings.HasSuffix(name, "_") || strings.HasPrefix(next, "(") || strings.HasPrefix(next, "*") ||
			strings.HasPrefix(next, ".*") || notMetric(name) {
			continue
		}
		out = append(out, name)
	}
	return out
}

// notMetric says whether an orderly_ name in the docs is a NATS resource
// rather than a metric: a bucket (orderly_state_order, ...,
// orderly_workflows) or a partition's consumer (orderly_order_p0).
func notMetric(name string) bool {
	if name == contract.WorkflowsBucket {
		return true
	}
	for _, prefix := range []string{"orderly_state_", "orderly_jobs_", "orderly_members_"} {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return regexp.MustCompile(`^orderly_[a-z0-9]+_p[0-9]+$`).MatchString(name)
}

// servedFamilies returns the metric families of a /metrics body, by name,
// with their types.
func servedFamilies(body string) map[string]string {
	fams := map[string]string{}
	for line := range strings.Lines(body) {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			fams[f[2]] = f[3]
		}
	}
	return fams
}

// family maps a sample name a doc may quote (a histogram's _count, say) to
// its family.
func family(name string, fams map[string]string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && fams[base] == "histogram" {
			return base
		}
	}
	return name
}

// TestOperationsDocMetrics: every metric that README.md and docs/ name is
// served by a real worker's /metrics, and every Orderly metric the worker
// serves is documented in docs/operations.md. The worker runs the order
// workflow on its embedded server, and gets traffic first, so that the
// labelled series exist: an order whose slow call times out (a retry,
// then a failure), a rejected event and a dead-lettered one.
func TestOperationsDocMetrics(t *testing.T) {
	t.Parallel()
	w := runInProcess(t, nil, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--sim-latency", "200ms", "--action-timeout", "20ms", "--action-retries", "1")
	httpAddr, natsAddr := httpAddrOf(t, w.out), natsAddrOf(t, w.out)
	waitHTTP(t, "http://"+httpAddr+"/readyz", 200, 30*time.Second)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"m-1", "start_processing", "--wait"}, "action_failed"},
		{[]string{"m-2", "confirm_payment", "--wait"}, "invalid_transition"},
		{[]string{"m-3", "ship_it", "--wait"}, "unknown_event"},
	} {
		if out, code := enqueue(t, natsAddr, c.args...); code != 1 || !strings.Contains(out, c.want) {
			t.Fatalf("enqueue %v: exit %d, want 1 with %s:\n%s", c.args, code, c.want, out)
		}
	}

	documented := map[string][]string{} // metric -> the docs that name it
	var operations string
	for _, path := range docFiles(t) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(path) == "operations.md" {
			operations = string(data)
		}
		for _, name := range metricNames(string(data)) {
			if !slices.Contains(documented[name], filepath.Base(path)) {
				documented[name] = append(documented[name], filepath.Base(path))
			}
		}
	}
	if len(documented) == 0 || operations == "" {
		t.Fatal("found no metric names in the docs, or no docs/operations.md")
	}

	// Counters and histograms appear with their first event: scrape until
	// every documented family is served, or the deadline.
	var missing, undocumented []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		body := scrapeMetrics(t, "http://"+httpAddr+"/metrics")
		fams := servedFamilies(body)
		missing, undocumented = nil, nil
		for name, docs := range documented {
			if _, ok := fams[family(name, fams)]; !ok {
				missing = append(missing, fmt.Sprintf("%s (named in %s)", name, strings.Join(docs, ", ")))
			}
		}
		for name := range fams {
			if strings.HasPrefix(name, "orderly_") && !containsName(operations, name) {
				undocumented = append(undocumented, name)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	slices.Sort(missing)
	slices.Sort(undocumented)
	for _, m := range missing {
		t.Errorf("the docs name the metric %s, which the worker does not serve: correct the doc", m)
	}
	for _, name := range undocumented {
		t.Errorf("the worker serves %s, which docs/operations.md does not document: add it to the metrics table", name)
	}
}

// containsName says whether text names metric name as a whole word.
func containsName(text, name string) bool {
	return slices.Contains(metricNames(text), name)
}

func scrapeMetrics(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(body)
}

// example is one command of a console block in the docs, with the output
// shown under it and the exit status an `echo $?` after it shows (-1: none).
type example struct {
	doc     string
	line    int
	command string
	output  []string
	exit    int
}

// consoleExamples returns the commands of every ```console block of path.
func consoleExamples(t *testing.T, path string) []example {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		out     []example
		inBlock bool
	)
	for i, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "```console"):
			inBlock = true
		case inBlock && strings.HasPrefix(line, "```"):
			inBlock = false
		case !inBlock:
		case line == "$ echo $?":
			if len(out) > 0 {
				out[len(out)-1].exit = -2 // the next line is the status
			}
		case strings.HasPrefix(line, "$ "):
			out = append(out, example{doc: filepath.Base(path), line: i + 1, command: strings.TrimPrefix(line, "$ "), exit: -1})
		case len(out) > 0 && out[len(out)-1].exit == -2:
			fmt.Sscan(line, &out[len(out)-1].exit)
		case len(out) > 0:
			out[len(out)-1].output = append(out[len(out)-1].output, line)
		}
	}
	return out
}

// splitCommand splits a shell command line into words, honouring single
// and double quotes and dropping a trailing comment; ok is false for
// anything more (pipes, redirections, substitutions, &&).
func splitCommand(line string) (words []string, ok bool) {
	if i := regexp.MustCompile(`\s+#\s`).FindStringIndex(line); i != nil {
		line = line[:i[0]]
	}
	var (
		word    strings.Builder
		quote   rune
		started bool
	)
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			word.WriteRune(r)
		case r == '\'' || r == '"':
			quote, started = r, true
		case r == ' ' || r == '\t':
			if started {
				words = append(words, word.String())
				word.Reset()
				started = false
			}
		case strings.ContainsRune("|&;<>$`()", r):
			return nil, false
		default:
			word.WriteRune(r)
			started = true
		}
	}
	if started {
		words = append(words, word.String())
	}
	return words, quote == 0
}

// TestDocsConsoleExamples: the usage lines and error messages that README.md
// and docs/ show under `enqueue` and `worker` commands are what the real
// binaries print, with the exit status shown. An example is checked when
// its output shows an error or usage line and the command fails without a
// NATS server (every flag and argument error does); one that needs a
// server (a rejected job, a full queue) is left to the end-to-end tests.
func TestDocsConsoleExamples(t *testing.T) {
	t.Parallel()
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	programs := map[string]string{
		"enqueue": "enqueue", "bin/enqueue": "enqueue", "go run ./cmd/enqueue": "enqueue",
		"worker": "worker", "bin/worker": "worker", "go run ./cmd/worker": "worker",
	}
	checked := 0
	for _, path := range docFiles(t) {
		for _, ex := range consoleExamples(t, path) {
			shows := slices.ContainsFunc(ex.output, func(l string) bool {
				return strings.HasPrefix(l, "enqueue: ") || strings.HasPrefix(l, "worker: ") || strings.HasPrefix(l, "usage: ")
			})
			if !shows {
				continue
			}
			words, ok := splitCommand(ex.command)
			if !ok || len(words) == 0 {
				continue
			}
			var program string
			var args []string
			for prefix, p := range programs {
				pw := strings.Fields(prefix)
				if len(words) >= len(pw) && slices.Equal(words[:len(pw)], pw) {
					program, args = p, words[len(pw):]
				}
			}
			if program == "" {
				continue
			}
			where := fmt.Sprintf("%s:%d: $ %s", ex.doc, ex.line, ex.command)
			got, code := runExample(t, filepath.Join(dir, program), args)
			if strings.Contains(got, "no NATS server reachable") && !strings.Contains(strings.Join(ex.output, "\n"), "no NATS server reachable") {
				t.Logf("%s: needs a NATS server; not checked here", where)
				continue
			}
			checked++
			want := strings.Join(ex.output, "\n")
			if strings.TrimRight(got, "\n") != want {
				t.Errorf("%s\nthe doc shows:\n%s\nthe binary prints:\n%s", where, want, got)
			}
			if ex.exit >= 0 && code != ex.exit {
				t.Errorf("%s: the doc shows exit status %d, the binary exits %d", where, ex.exit, code)
			}
		}
	}
	if checked < 3 {
		t.Errorf("checked only %d examples: the docs' console blocks or this test's parser changed", checked)
	}
}

// runExample runs a documented command against no NATS server (a dead
// address refuses at once), so that nothing it does can reach a real one: a
// worker that should have refused its flags fails to connect instead of
// starting.
func runExample(t *testing.T, bin string, args []string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"NATS_URL=nats://" + natstest.DeadAddr(t), "ORDERLY_CONNECT_TIMEOUT=1ms", "ORDERLY_HTTP=127.0.0.1:0"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %v: still running after 30s:\n%s", bin, args, out.String())
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return out.String(), 0
}

// TestDocsQueueFullExample: the "queue full" error that docs/operations.md
// shows is what enqueue prints when a worker's queue is full. It needs a
// server, so it is checked here with a worker run as the doc says
// (--queue-limit 3, slow work holding the key's later events in the
// stream).
func TestDocsQueueFullExample(t *testing.T) {
	t.Parallel()
	var ex *example
	for _, path := range docFiles(t) {
		for _, e := range consoleExamples(t, path) {
			if strings.Contains(strings.Join(e.output, "\n"), "queue full") {
				ex = &e
			}
		}
	}
	if ex == nil {
		t.Fatal("no console example shows \"queue full\" any more: remove this test, or restore the example")
	}
	words, ok := splitCommand(ex.command)
	if !ok || len(words) < 3 || words[0] != "enqueue" {
		t.Fatalf("%s:%d: want an enqueue KEY EVENT command, got %q", ex.doc, ex.line, ex.command)
	}
	w := runInProcess(t, nil, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--queue-limit", "3", "--sim-latency", "5s")
	httpAddr, natsAddr := httpAddrOf(t, w.out), natsAddrOf(t, w.out)
	waitHTTP(t, "http://"+httpAddr+"/readyz", 200, 30*time.Second)
	// Each event waits in the stream behind the key's slow work: the
	// queue fills after a few.
	var seen []string
	for i := range 10 {
		out, code := enqueue(t, natsAddr, words[1:]...)
		if code == 0 {
			seen = append(seen, fmt.Sprintf("%d: stored", i+1))
			continue
		}
		want := strings.Join(ex.output, "\n")
		if strings.TrimRight(out, "\n") != want {
			t.Errorf("%s:%d: the doc shows:\n%s\nenqueue printed:\n%s", ex.doc, ex.line, want, out)
		}
		if ex.exit >= 0 && code != ex.exit {
			t.Errorf("%s:%d: the doc shows exit status %d, enqueue exits %d", ex.doc, ex.line, ex.exit, code)
		}
		return
	}
	t.Fatalf("the queue never filled: %v", seen)
}
