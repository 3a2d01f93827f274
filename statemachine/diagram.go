package statemachine

import (
	"fmt"
	"strings"
)

// Mermaid renders the machine as a Mermaid stateDiagram-v2. Edge labels are
// the event, then "(after D)" for a timeout, "(every D)" for a periodic
// event, "(action ok)" or "(action failed)" for an action's outcome,
// "[guarded]" when a guard may refuse, and "/ a, b" for the actions the
// transition starts.
func (m *Machine[D]) Mermaid() string {
	var b strings.Builder
	b.WriteString("stateDiagram-v2\n")
	fmt.Fprintf(&b, "    [*] --> %s\n", m.initial)
	for _, i := range m.order {
		t := &m.trans[i]
		fmt.Fprintf(&b, "    %s --> %s: %s\n", t.From, t.To, m.label(t))
	}
	for _, s := range m.states {
		if s.Terminal {
			fmt.Fprintf(&b, "    %s --> [*]\n", s.Name)
		}
	}
	return b.String()
}

// DOT renders the machine as a Graphviz digraph with the same labels as
// Mermaid; terminal states are drawn with a double border.
func (m *Machine[D]) DOT() string {
	var b strings.Builder
	fmt.Fprintf(&b, "digraph %s {\n", dotID(m.name))
	b.WriteString("    rankdir=LR;\n    node [shape=box, style=rounded];\n")
	b.WriteString("    __start [shape=point, label=\"\"];\n")
	fmt.Fprintf(&b, "    __start -> %s;\n", dotID(string(m.initial)))
	for _, s := range m.states {
		if s.Terminal {
			fmt.Fprintf(&b, "    %s [peripheries=2];\n", dotID(string(s.Name)))
		} else {
			fmt.Fprintf(&b, "    %s;\n", dotID(string(s.Name)))
		}
	}
	for _, i := range m.order {
		t := &m.trans[i]
		fmt.Fprintf(&b, "    %s -> %s [label=%s];\n", dotID(string(t.From)), dotID(string(t.To)), dotID(m.label(t)))
	}
	b.WriteString("}\n")
	return b.String()
}

func (m *Machine[D]) label(t *compiled[D]) string {
	l := string(t.On)
	from := &m.states[m.stateAt[t.From]]
	if to := from.Timeout; to != nil && to.Event == t.On {
		l += fmt.Sprintf(" (after %v)", to.After)
	}
	for _, p := range from.Every {
		if p.Event == t.On {
			l += fmt.Sprintf(" (every %v)", p.Interval)
		}
	}
	for _, a := range m.actions {
		switch t.On {
		case a.OnSuccess:
			l += " (" + a.Name + " ok)"
		case a.OnFailure:
			l += " (" + a.Name + " failed)"
		}
	}
	if t.Guard != nil {
		l += " [guarded]"
	}
	if len(t.Actions) > 0 {
		l += " / " + strings.Join(t.Actions, ", ")
	}
	return l
}

var dotEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func dotID(s string) string { return `"` + dotEscaper.Replace(s) + `"` }
