// Package gendoc writes the generated parts of Orderly's Markdown docs, so
// that a test can tell when a doc no longer says what the code does: a
// generated part sits between the lines <!-- NAME:begin --> and
// <!-- NAME:end -->, and Section compares it with what the code renders
// now (or rewrites it).
package gendoc

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// ErrStale is returned by Section when a generated part differs from what
// the code renders.
var ErrStale = errors.New("gendoc: generated section is stale")

// Section checks that the part of the file at path between the markers
// of name is want. With update it rewrites that part instead. A missing
// marker is an error either way: the doc must say where the part goes.
func Section(path, name, want string, update bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("gendoc: %w", err)
	}
	text := string(data)
	begin, end := "<!-- "+name+":begin -->\n", "<!-- "+name+":end -->"
	i := strings.Index(text, begin)
	j := strings.Index(text, end)
	if i < 0 || j < i {
		return fmt.Errorf("gendoc: %s: no section between %q and %q", path, strings.TrimSpace(begin), end)
	}
	i += len(begin)
	if text[i:j] == want {
		return nil
	}
	if !update {
		return fmt.Errorf("%w: %s, section %q\nhave:\n%s\nwant:\n%s", ErrStale, path, name, text[i:j], want)
	}
	if err := os.WriteFile(path, []byte(text[:i]+want+text[j:]), 0o644); err != nil {
		return fmt.Errorf("gendoc: %w", err)
	}
	return nil
}

// FlagTable renders the flags of fs as a Markdown table: the flag (with
// its value's name), the environment variables it is also read from
// (envNames; nil: none), its default, and its usage. Flags keep fs's
// order.
func FlagTable(fs *pflag.FlagSet, envNames func(*pflag.Flag) []string) string {
	var b strings.Builder
	b.WriteString("| flag | environment | default | meaning |\n| --- | --- | --- | --- |\n")
	fs.VisitAll(func(fl *pflag.Flag) {
		name, usage := pflag.UnquoteUsage(fl)
		flag := "`--" + fl.Name
		if name != "" {
			flag += " " + name
		}
		flag += "`"
		var env []string
		if envNames != nil {
			for _, n := range envNames(fl) {
				env = append(env, "`"+n+"`")
			}
		}
		def := ""
		if fl.DefValue != "" && !(fl.Value.Type() == "bool" && fl.DefValue == "false") {
			def = "`" + fl.DefValue + "`"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", flag, strings.Join(env, ", "), def, cell(usage))
	})
	return b.String()
}

// cell makes s safe in a table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// Fenced returns s as a fenced code block of the given language.
func Fenced(lang, s string) string {
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return "```" + lang + "\n" + s + "```\n"
}
