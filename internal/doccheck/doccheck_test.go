// Package doccheck holds tests that keep README.md and docs/ true where no
// binary is needed: the README's length and docs/design.md's package list.
// The tests that need the commands sit beside them: the generated
// configuration reference (TestConfigurationDocIsCurrent in cmd/worker and
// cmd/enqueue), the metrics of docs/operations.md (TestOperationsDocMetrics
// in cmd/worker) and the console examples (TestDocsConsoleExamples and
// TestDocsQueueFullExample in cmd/worker).
package doccheck

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// root is the repository's root, from this package's directory.
const root = "../.."

// module is the root module's path.
const module = "github.com/orderly-dev/orderly"

// maxReadmeLines bounds README.md: what Orderly is and why, the two
// commands, a five-minute tour and where to go next. The rest belongs in
// docs/.
const maxReadmeLines = 250

func TestReadmeIsShort(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte("\n")); n > maxReadmeLines {
		t.Errorf("README.md has %d lines, more than %d: move reference material to docs/ and link to it", n, maxReadmeLines)
	}
}

// TestReadmeLinksResolve: every relative link of README.md and docs/*.md
// names a file that exists, and every #anchor a heading of that file.
func TestReadmeLinksResolve(t *testing.T) {
	t.Parallel()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, doc := range append([]string{filepath.Join(root, "README.md")}, docs...) {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(data), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			path := doc
			if file != "" {
				path = filepath.Join(filepath.Dir(doc), file)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: link %q: %v", rel(doc), target, err)
				continue
			}
			if anchor == "" {
				continue
			}
			if !slices.Contains(anchors(t, path), anchor) {
				t.Errorf("%s: link %q: %s has no heading with anchor #%s", rel(doc), target, rel(path), anchor)
			}
		}
	}
}

// anchors returns the GitHub anchors of the headings of the Markdown file
// at path.
func anchors(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fenced := false
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if fenced || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(h) {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		out = append(out, b.String())
	}
	return out
}

func rel(path string) string {
	r, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return r
}

// row is one package of docs/design.md's table.
type row struct {
	pkg     string
	planned bool
	imports map[string]string // import -> "", "planned" or "going"
	index   int               // rows are layers: 0 is the top
}

// designRows parses the table between the packages markers of
// docs/design.md.
func designRows(t *testing.T) []row {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "docs", "design.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "<!-- packages:begin -->\n")
	table, _, ok2 := strings.Cut(rest, "<!-- packages:end -->")
	if !ok || !ok2 {
		t.Fatal("docs/design.md: no package table between <!-- packages:begin --> and <!-- packages:end -->")
	}
	name := regexp.MustCompile("`([a-z0-9_/]+)`( \\((planned|going)\\))?")
	var rows []row
	for line := range strings.Lines(table) {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) != 3 || strings.Contains(cells[0], "---") || strings.TrimSpace(cells[0]) == "package" {
			continue
		}
		m := name.FindStringSubmatch(cells[0])
		if m == nil {
			t.Fatalf("docs/design.md: package table row without a `package`: %s", line)
		}
		r := row{pkg: m[1], planned: m[3] == "planned", imports: map[string]string{}, index: len(rows)}
		for _, im := range name.FindAllStringSubmatch(cells[2], -1) {
			r.imports[im[1]] = im[3]
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		t.Fatal("docs/design.md: the package table is empty")
	}
	return rows
}

// goPackage is what go list says of one package.
type goPackage struct {
	ImportPath string
	Imports    []string
}

// goList returns the root module's packages, by path relative to the
// module, with their non-test imports of the module's packages.
func goList(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p goPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		var imports []string
		for _, im := range p.Imports {
			if rest, ok := strings.CutPrefix(im, module+"/"); ok {
				imports = append(imports, rest)
			}
		}
		pkgs[strings.TrimPrefix(p.ImportPath, module+"/")] = imports
	}
	return pkgs
}

// TestDesignPackages: docs/design.md's package table is the module's real
// package graph. Every package is listed (a new one: add its row), every
// listed package exists (unless planned, or a module of its own), every
// import is in its package's row, every import listed exists (unless
// planned or going), and every import points to a row below its
// importer's: the rows are layers. The runtime imports no workflow.
func TestDesignPackages(t *testing.T) {
	t.Parallel()
	rows := designRows(t)
	real := goList(t)
	byPkg := map[string]row{}
	for _, r := range rows {
		if _, dup := byPkg[r.pkg]; dup {
			t.Errorf("docs/design.md lists %s twice", r.pkg)
		}
		byPkg[r.pkg] = r
	}
	const fix = "; update the package table of docs/design.md"
	for pkg := range real {
		if _, ok := byPkg[pkg]; !ok {
			t.Errorf("package %s is not in docs/design.md: add a row (one sentence of responsibility, its imports) below every package that imports it%s", pkg, fix)
		}
	}
	for _, r := range rows {
		imports, exists := real[r.pkg]
		if !exists {
			if _, err := os.Stat(filepath.Join(root, r.pkg, "go.mod")); err == nil {
				continue // a module of its own (deploy)
			}
			if !r.planned {
				t.Errorf("docs/design.md lists %s, which does not exist: remove its row, or mark it (planned)%s", r.pkg, fix)
			}
			continue
		}
		for _, im := range imports {
			to, listed := byPkg[im]
			if _, inRow := r.imports[im]; !inRow {
				t.Errorf("%s imports %s, which its row in docs/design.md does not list%s", r.pkg, im, fix)
			}
			if listed && to.index <= r.index {
				t.Errorf("%s imports %s, which docs/design.md lists above it (or beside it): the rows are layers, and an import must point down; move the rows, or remove the import", r.pkg, im)
			}
		}
		for im, mark := range r.imports {
			if mark == "" && !slices.Contains(imports, im) {
				t.Errorf("docs/design.md says %s imports %s, but it does not: remove it from the row, or mark it (planned)%s", r.pkg, im, fix)
			}
		}
	}
	for _, im := range real["worker"] {
		if im == "order" || strings.HasPrefix(im, "examples/") {
			t.Errorf("the runtime (worker) imports the workflow %s: it must run any workflow and depend on none", im)
		}
	}
}
