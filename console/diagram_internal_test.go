package console

import (
	"strings"
	"testing"
)

// TestWebConsoleDiagram: the overview's diagram is drawn from the
// definition's Mermaid text: every state once, the initial and terminal
// ones marked, every edge labelled with its event, and any text escaped.
func TestWebConsoleDiagram(t *testing.T) {
	t.Parallel()
	const text = `stateDiagram-v2
    [*] --> idle
    idle --> busy: go / work
    busy --> busy: tick (every 5s)
    busy --> idle: back
    busy --> done: finish (work ok)
    idle --> done: skip
    done --> [*]
`
	g, ok := parseMermaid(text)
	if !ok {
		t.Fatal("not read")
	}
	if g.initial != "idle" || !g.terminal["done"] || len(g.nodes) != 3 {
		t.Fatalf("parsed %+v", g)
	}
	r := g.ranks()
	if r["idle"] != 0 || r["busy"] != 1 || r["done"] != 2 {
		t.Fatalf("ranks %v", r)
	}
	svg := string(svgOf(g, "w"))
	for _, want := range []string{`data-state="idle"`, `class="state initial"`, `class="state terminal"`, ">go<", ">tick<", ">back<", ">skip<", "go / work", `class="edge back"`} {
		if !strings.Contains(svg, want) {
			t.Errorf("svg lacks %q", want)
		}
	}
	if n := strings.Count(svg, "<g class=\"state"); n != 3 {
		t.Errorf("%d states drawn, want 3", n)
	}

	hostile, ok := parseMermaid("stateDiagram-v2\n    [*] --> a\n    a --> b: <script>alert(1)</script>\n")
	if !ok {
		t.Fatal("not read")
	}
	if s := string(svgOf(hostile, `x"><script>`)); strings.Contains(s, "<script>") {
		t.Fatalf("unescaped: %s", s)
	}
	for _, bad := range []string{"", "graph LR\n a --> b", "stateDiagram-v2\n a -> b", "stateDiagram-v2\n [*] --> [*]"} {
		if _, ok := parseMermaid(bad); ok {
			t.Errorf("%q read as a state diagram", bad)
		}
	}
}
