package console

import (
	"fmt"
	"html"
	"html/template"
	"slices"
	"strings"
)

// The workflow's diagram is drawn here, as SVG, from the Mermaid text its
// definition exports (statemachine's Mermaid): no script library in the
// browser (mermaid.min.js is 5.5 MB), nothing to load from elsewhere, and
// the picture is there without JavaScript. It reads the subset of
// stateDiagram-v2 that statemachine writes: "A --> B: label", "[*] --> A"
// (the initial state) and "A --> [*]" (a terminal state). States go in
// columns by their distance from the initial state; edges that skip a
// column run below the columns they skip, edges that go back run above.

// graph is a parsed state diagram.
type graph struct {
	nodes    []string // in order of first appearance
	initial  string
	terminal map[string]bool
	edges    []gedge // one per (from, to), labels in order
}

type gedge struct {
	from, to string
	labels   []string // the event names
	details  []string // the full labels, shown on hover
}

// parseMermaid reads statemachine's stateDiagram-v2 text; false if it is
// not that subset (the page then shows the text as it is).
func parseMermaid(text string) (graph, bool) {
	g := graph{terminal: map[string]bool{}}
	seen := map[string]bool{}
	node := func(n string) {
		if !seen[n] {
			seen[n] = true
			g.nodes = append(g.nodes, n)
		}
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) != "stateDiagram-v2" {
		return graph{}, false
	}
	for _, line := range lines[1:] {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		arrow, label, _ := strings.Cut(line, ":")
		from, to, ok := strings.Cut(arrow, "-->")
		if !ok {
			return graph{}, false
		}
		from, to, label = strings.TrimSpace(from), strings.TrimSpace(to), strings.TrimSpace(label)
		if from == "" || to == "" || strings.ContainsAny(from+to, " \t") {
			return graph{}, false
		}
		switch {
		case from == "[*]" && to == "[*]":
			return graph{}, false
		case from == "[*]":
			node(to)
			g.initial = to
		case to == "[*]":
			node(from)
			g.terminal[from] = true
		default:
			node(from)
			node(to)
			i := slices.IndexFunc(g.edges, func(e gedge) bool { return e.from == from && e.to == to })
			if i < 0 {
				g.edges = append(g.edges, gedge{from: from, to: to})
				i = len(g.edges) - 1
			}
			if label != "" {
				event, _, _ := strings.Cut(label, " ")
				g.edges[i].labels = append(g.edges[i].labels, event)
				g.edges[i].details = append(g.edges[i].details, label)
			}
		}
	}
	if len(g.nodes) == 0 {
		return graph{}, false
	}
	if g.initial == "" {
		g.initial = g.nodes[0]
	}
	return g, true
}

// ranks gives each state its column: the longest path to it from the
// initial state along edges that do not close a cycle.
func (g graph) ranks() map[string]int {
	out := map[string][]string{}
	for _, e := range g.edges {
		if e.from != e.to {
			out[e.from] = append(out[e.from], e.to)
		}
	}
	// Edges into a state on the current depth-first path close a cycle.
	back := map[[2]string]bool{}
	state := map[string]int{} // 1 on the path, 2 done
	var visit func(n string)
	visit = func(n string) {
		state[n] = 1
		for _, m := range out[n] {
			switch state[m] {
			case 0:
				visit(m)
			case 1:
				back[[2]string{n, m}] = true
			}
		}
		state[n] = 2
	}
	visit(g.initial)
	for _, n := range g.nodes {
		if state[n] == 0 {
			visit(n)
		}
	}
	rank := map[string]int{}
	// Longest path by relaxation; the forward edges form a DAG, so
	// len(nodes) rounds suffice.
	for range g.nodes {
		changed := false
		for _, e := range g.edges {
			if e.from == e.to || back[[2]string{e.from, e.to}] {
				continue
			}
			if r := rank[e.from] + 1; r > rank[e.to] {
				rank[e.to] = r
				changed = true
			}
		}
		if !changed {
			break
		}
	}
	return rank
}

// Sizes of the drawing, in pixels, for a 12px monospace font.
const (
	charW     = 7.3
	lineH     = 14
	nodeH     = 34
	nodePad   = 14
	minNodeW  = 80
	minGap    = 56
	slotGap   = 26
	loopH     = 26
	sideMarge = 40
)

func textW(s string) float64 { return float64(len(s)) * charW }

type box struct{ x, y, w, h float64 } // x, y: top left

func (b box) cx() float64 { return b.x + b.w/2 }
func (b box) cy() float64 { return b.y + b.h/2 }

// svgOf draws g; id makes the SVG's internal ids unique on the page.
// Every text is escaped.
func svgOf(g graph, id string) template.HTML {
	rank := g.ranks()
	cols := 0
	for _, n := range g.nodes {
		cols = max(cols, rank[n]+1)
	}
	column := make([][]string, cols)
	for _, n := range g.nodes {
		column[rank[n]] = append(column[rank[n]], n)
	}
	// Edges that skip columns run below them, into their target's bottom:
	// such targets go last in their column, so the edge meets no other
	// state on its way up.
	fromBelow := map[string]bool{}
	for _, e := range g.edges {
		if rank[e.to] > rank[e.from]+1 {
			fromBelow[e.to] = true
		}
	}
	for _, ns := range column {
		slices.SortStableFunc(ns, func(a, b string) int {
			switch {
			case fromBelow[a] == fromBelow[b]:
				return 0
			case fromBelow[b]:
				return -1
			}
			return 1
		})
	}
	selfLabels, selfDetails := map[string][]string{}, map[string][]string{}
	for _, e := range g.edges {
		if e.from == e.to {
			selfLabels[e.from] = append(selfLabels[e.from], e.labels...)
			selfDetails[e.from] = append(selfDetails[e.from], e.details...)
		}
	}
	// The space a node needs above it: its loop and the loop's labels.
	above := func(n string) float64 {
		if len(selfLabels[n]) == 0 {
			return 8
		}
		return loopH + float64(len(selfLabels[n]))*lineH + 4
	}
	width := func(n string) float64 {
		w := max(minNodeW, textW(n)+2*nodePad)
		for _, l := range selfLabels[n] {
			w = max(w, textW(l)+8)
		}
		return w
	}
	// Column widths, and gaps wide enough for the labels of the edges
	// leaving each column.
	colW := make([]float64, cols)
	for r, ns := range column {
		for _, n := range ns {
			colW[r] = max(colW[r], width(n))
		}
	}
	gap := make([]float64, cols)
	for r := range gap {
		gap[r] = minGap
	}
	for _, e := range g.edges {
		if rank[e.to] == rank[e.from]+1 {
			for _, l := range e.labels {
				gap[rank[e.from]] = max(gap[rank[e.from]], textW(l)+24)
			}
		}
	}
	// Heights: each column's stack, centred on the tallest.
	colH := make([]float64, cols)
	for r, ns := range column {
		for i, n := range ns {
			if i > 0 {
				colH[r] += slotGap
			}
			colH[r] += above(n) + nodeH
		}
	}
	top := 10.0
	// Back edges arc above everything: room for them and their labels.
	var backs, longs []gedge
	for _, e := range g.edges {
		switch {
		case e.from == e.to:
		case rank[e.to] <= rank[e.from]:
			backs = append(backs, e)
		case rank[e.to] > rank[e.from]+1:
			longs = append(longs, e)
		}
	}
	for _, e := range backs {
		top += 18 + float64(len(e.labels))*lineH
	}
	tallest := slices.Max(colH)
	boxes := map[string]box{}
	x := float64(sideMarge)
	for r, ns := range column {
		y := top + (tallest-colH[r])/2
		for _, n := range ns {
			y += above(n)
			w := width(n)
			boxes[n] = box{x: x + (colW[r]-w)/2, y: y, w: w, h: nodeH}
			y += nodeH + slotGap
		}
		x += colW[r] + gap[r]
	}
	totalW := x - gap[cols-1] + sideMarge
	bottom := top + tallest + 12

	var b strings.Builder
	arrow := "arrow-" + id
	esc := html.EscapeString
	line := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	group := func(from, to string, details []string) {
		line(`<g class="tr"><title>%s</title>`, esc(from+" → "+to+": "+strings.Join(details, "; ")))
	}
	label := func(x, y float64, anchor string, lines []string) {
		for i, l := range lines {
			line(`<text x="%.1f" y="%.1f" text-anchor="%s" class="el">%s</text>`, x, y+float64(i)*lineH, anchor, esc(l))
		}
	}
	// The long edges' bus below the columns, one lane each.
	busY := bottom
	for _, e := range longs {
		busY += 8 + float64(len(e.labels))*lineH
	}
	height := busY + 12
	line(`<svg xmlns="http://www.w3.org/2000/svg" class="diagram" viewBox="0 0 %.0f %.0f" width="%.0f" role="img" aria-label="state diagram of %s">`,
		totalW, height, totalW, esc(id))
	line(`<defs><marker id="%s" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="ah"/></marker></defs>`, esc(arrow))
	// The initial state's dot.
	if ib, ok := boxes[g.initial]; ok {
		line(`<circle cx="%.1f" cy="%.1f" r="6" class="start"/>`, ib.x-26, ib.cy())
		line(`<path d="M%.1f,%.1f L%.1f,%.1f" class="edge" marker-end="url(#%s)"/>`, ib.x-20, ib.cy(), ib.x-2, ib.cy(), esc(arrow))
	}
	// Edges to the next column: a curve, labels at its middle.
	for _, e := range g.edges {
		fb, tb := boxes[e.from], boxes[e.to]
		if rank[e.to] != rank[e.from]+1 {
			continue
		}
		group(e.from, e.to, e.details)
		x1, y1, x2, y2 := fb.x+fb.w, fb.cy(), tb.x, tb.cy()
		mx := (x1 + x2) / 2
		line(`<path d="M%.1f,%.1f C%.1f,%.1f %.1f,%.1f %.1f,%.1f" class="edge" marker-end="url(#%s)"/>`, x1, y1, mx, y1, mx, y2, x2-2, y2, esc(arrow))
		ly := (y1+y2)/2 - 5 - float64(len(e.labels)-1)*lineH/2
		label(mx, ly, "middle", e.labels)
		line(`</g>`)
	}
	// Edges that skip columns: down to their lane, along it, up again.
	lane := bottom
	for _, e := range longs {
		fb, tb := boxes[e.from], boxes[e.to]
		lane += 8 + float64(len(e.labels))*lineH
		group(e.from, e.to, e.details)
		x1, y1 := fb.cx(), fb.y+fb.h
		x2, y2 := tb.cx(), tb.y+tb.h
		line(`<path d="M%.1f,%.1f C%.1f,%.1f %.1f,%.1f %.1f,%.1f L%.1f,%.1f C%.1f,%.1f %.1f,%.1f %.1f,%.1f" class="edge" marker-end="url(#%s)"/>`,
			x1, y1, x1, lane, x1, lane, x1+20, lane, x2-20, lane, x2, lane, x2, lane, x2, y2+2, esc(arrow))
		label((x1+x2)/2, lane-4-float64(len(e.labels)-1)*lineH, "middle", e.labels)
		line(`</g>`)
	}
	// Edges back (or within a column): up to a lane above, along, down.
	lane = 10
	for _, e := range backs {
		fb, tb := boxes[e.from], boxes[e.to]
		lane += float64(len(e.labels)) * lineH
		y := lane + 4
		group(e.from, e.to, e.details)
		x1, x2 := fb.cx(), tb.cx()
		if x1 == x2 {
			x1, x2 = fb.x+fb.w-10, tb.x+tb.w-10
		}
		line(`<path d="M%.1f,%.1f C%.1f,%.1f %.1f,%.1f %.1f,%.1f L%.1f,%.1f C%.1f,%.1f %.1f,%.1f %.1f,%.1f" class="edge back" marker-end="url(#%s)"/>`,
			x1, fb.y-above(e.from)+8, x1, y, x1, y, x1-20, y, x2+20, y, x2, y, x2, y, x2, tb.y-2, esc(arrow))
		label((x1+x2)/2, lane, "middle", e.labels)
		line(`</g>`)
		lane += 18
	}
	// States, with their loops.
	for _, n := range g.nodes {
		nb := boxes[n]
		if ls := selfLabels[n]; len(ls) > 0 {
			group(n, n, selfDetails[n])
			x1, x2, y := nb.cx()-14, nb.cx()+14, nb.y
			line(`<path d="M%.1f,%.1f C%.1f,%.1f %.1f,%.1f %.1f,%.1f" class="edge" marker-end="url(#%s)"/>`,
				x1, y, x1-10, y-loopH, x2+10, y-loopH, x2, y-2, esc(arrow))
			label(nb.cx(), y-loopH-4-float64(len(ls)-1)*lineH, "middle", ls)
			line(`</g>`)
		}
		class := "state"
		if g.terminal[n] {
			class += " terminal"
		}
		if n == g.initial {
			class += " initial"
		}
		line(`<g class="%s" data-state="%s"><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="8"/>`, class, esc(n), nb.x, nb.y, nb.w, nb.h)
		if g.terminal[n] {
			line(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="6" class="inner"/>`, nb.x+3, nb.y+3, nb.w-6, nb.h-6)
		}
		line(`<text x="%.1f" y="%.1f" text-anchor="middle" class="sl">%s</text></g>`, nb.cx(), nb.cy()+4, esc(n))
	}
	b.WriteString("</svg>")
	// Every text in it went through html.EscapeString.
	return template.HTML(b.String())
}
