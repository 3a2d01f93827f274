// Package apicheck holds tests of the public API as a whole: that go doc
// reads as a manual, and that NATS types stay behind it.
package apicheck

import (
	"fmt"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// packages are checked: every exported name has a doc comment, and no
// exported name mentions a NATS type (but see natsAllowed).
var packages = []string{"statemachine", "worker", "client", "console", "orderlytest", "embedded", "examples/review"}

// natsAllowed are the exported names that mention NATS types on purpose,
// by package: the producer client and the worker are built on a service's
// own *nats.Conn (New, Connect's options, Conn). The JetStream adapter,
// internal/queue, is not public API.
var natsAllowed = map[string][]string{
	"client": {"func New", "func Connect", "func Conn"},
	"worker": {"func New"},
}

const natsModules = "github.com/nats-io/"

// pkg is one package's non-test files, parsed with comments.
type pkg struct {
	dir   string
	fset  *token.FileSet
	files []*ast.File
}

func load(t *testing.T, dir string) pkg {
	t.Helper()
	p := pkg{dir: dir, fset: token.NewFileSet()}
	names, err := filepath.Glob(filepath.Join("..", "..", dir, "*.go"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no Go files in %s: %v", dir, err)
	}
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(p.fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		p.files = append(p.files, f)
	}
	return p
}

func (p pkg) pos(n ast.Node) string {
	at := p.fset.Position(n.Pos())
	return fmt.Sprintf("%s/%s:%d", p.dir, filepath.Base(at.Filename), at.Line)
}

// TestExportedNamesAreDocumented fails for every exported type, function,
// method, constant, variable, struct field and interface method without a
// doc comment: go doc must read as a manual. A group's comment documents
// the constants and variables of the group; a field's trailing comment
// documents it.
func TestExportedNamesAreDocumented(t *testing.T) {
	t.Parallel()
	var missing []string
	for _, dir := range packages {
		p := load(t, dir)
		missing = append(missing, p.undocumented(t)...)
	}
	if len(missing) > 0 {
		t.Errorf("%d exported names have no doc comment:\n  %s", len(missing), strings.Join(missing, "\n  "))
	}
}

func (p pkg) undocumented(t *testing.T) []string {
	d, err := doc.NewFromFiles(p.fset, p.files, "github.com/orderly-dev/orderly/"+p.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	miss := func(n ast.Node, what string) { out = append(out, p.pos(n)+": "+what) }
	if d.Doc == "" {
		out = append(out, p.dir+": package comment")
	}
	values := func(vs []*doc.Value) {
		for _, v := range vs {
			if v.Doc != "" {
				continue
			}
			for _, s := range v.Decl.Specs {
				s := s.(*ast.ValueSpec)
				for _, n := range s.Names {
					if n.IsExported() && s.Doc == nil && s.Comment == nil {
						miss(n, v.Decl.Tok.String()+" "+n.Name)
					}
				}
			}
		}
	}
	funcs := func(fs []*doc.Func) {
		for _, f := range fs {
			if f.Doc == "" {
				name := f.Name
				if f.Recv != "" {
					name = "(" + f.Recv + ")." + name
				}
				miss(f.Decl, "func "+name)
			}
		}
	}
	values(d.Consts)
	values(d.Vars)
	funcs(d.Funcs)
	for _, ty := range d.Types {
		if ty.Doc == "" {
			miss(ty.Decl, "type "+ty.Name)
		}
		values(ty.Consts)
		values(ty.Vars)
		funcs(ty.Funcs)
		funcs(ty.Methods)
		for _, s := range ty.Decl.Specs {
			ts := s.(*ast.TypeSpec)
			if ts.Name.Name != ty.Name {
				continue
			}
			var fields *ast.FieldList
			var kind string
			switch x := ts.Type.(type) {
			case *ast.StructType:
				fields, kind = x.Fields, "field"
			case *ast.InterfaceType:
				fields, kind = x.Methods, "method"
			default:
				continue
			}
			for _, f := range fields.List {
				if f.Doc != nil || f.Comment != nil {
					continue
				}
				for _, name := range fieldNames(f) {
					if ast.IsExported(name) {
						miss(f, kind+" "+ty.Name+"."+name)
					}
				}
			}
		}
	}
	return out
}

// fieldNames returns a field's names; an embedded field's is its type's.
func fieldNames(f *ast.Field) []string {
	if len(f.Names) > 0 {
		var out []string
		for _, n := range f.Names {
			out = append(out, n.Name)
		}
		return out
	}
	typ := f.Type
	if s, ok := typ.(*ast.StarExpr); ok {
		typ = s.X
	}
	switch x := typ.(type) {
	case *ast.Ident:
		return []string{x.Name}
	case *ast.SelectorExpr:
		return []string{x.Sel.Name}
	}
	return nil
}

// TestNoNATSTypeInTheAPI fails for every exported function or method whose
// signature, exported type whose definition, and exported struct field or
// variable whose type mentions a type from a github.com/nats-io module:
// JetStream stays behind the API.
func TestNoNATSTypeInTheAPI(t *testing.T) {
	t.Parallel()
	var leaks []string
	for _, dir := range packages {
		p := load(t, dir)
		for _, f := range p.files {
			for _, l := range p.natsLeaks(f) {
				if !slices.ContainsFunc(natsAllowed[dir], func(what string) bool { return strings.Contains(l, ": "+what+" mentions ") }) {
					leaks = append(leaks, l)
				}
			}
		}
	}
	if len(leaks) > 0 {
		t.Errorf("%d exported names mention NATS types:\n  %s", len(leaks), strings.Join(leaks, "\n  "))
	}
}

func (p pkg) natsLeaks(f *ast.File) []string {
	nats := map[string]string{} // local import name -> path, for NATS imports
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if !strings.HasPrefix(path, natsModules) {
			continue
		}
		// nats.go's package is nats.
		name := strings.TrimSuffix(path[strings.LastIndexByte(path, '/')+1:], ".go")
		if strings.HasPrefix(name, "v") && strings.Count(path, "/") > 2 { // .../nats-server/v2
			name = strings.TrimSuffix(path, "/"+name)
			name = name[strings.LastIndexByte(name, '/')+1:]
		}
		if imp.Name != nil {
			name = imp.Name.Name
		}
		nats[name] = path
	}
	if len(nats) == 0 {
		return nil
	}
	var out []string
	check := func(what string, n ast.Node) {
		if used := natsRefs(n, nats); len(used) > 0 {
			out = append(out, fmt.Sprintf("%s: %s mentions %s", p.pos(n), what, strings.Join(used, ", ")))
		}
	}
	for _, decl := range f.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			if !d.Name.IsExported() || (d.Recv != nil && !exportedRecv(d.Recv)) {
				continue
			}
			check("func "+d.Name.Name, d.Type)
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					if !s.Name.IsExported() {
						continue
					}
					if st, ok := s.Type.(*ast.StructType); ok {
						for _, fld := range st.Fields.List {
							for _, name := range fieldNames(fld) {
								if ast.IsExported(name) {
									check("field "+s.Name.Name+"."+name, fld.Type)
								}
							}
						}
						continue
					}
					check("type "+s.Name.Name, s.Type)
				case *ast.ValueSpec:
					for _, n := range s.Names {
						if n.IsExported() && s.Type != nil {
							check(d.Tok.String()+" "+n.Name, s.Type)
						}
					}
				}
			}
		}
	}
	return out
}

// exportedRecv reports whether a method's receiver type (T, *T, T[D]) is
// exported.
func exportedRecv(recv *ast.FieldList) bool {
	typ := recv.List[0].Type
	if s, ok := typ.(*ast.StarExpr); ok {
		typ = s.X
	}
	switch x := typ.(type) {
	case *ast.IndexExpr:
		typ = x.X
	case *ast.IndexListExpr:
		typ = x.X
	}
	id, ok := typ.(*ast.Ident)
	return ok && id.IsExported()
}

// natsRefs lists the qualified identifiers in n that name something of a
// NATS package.
func natsRefs(n ast.Node, nats map[string]string) []string {
	var out []string
	ast.Inspect(n, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok && nats[id.Name] != "" {
				ref := nats[id.Name] + "." + sel.Sel.Name
				if !slices.Contains(out, ref) {
					out = append(out, ref)
				}
			}
		}
		return true
	})
	return out
}

func TestMain(m *testing.M) {
	// The checks read the sources relative to this directory.
	if _, err := os.Stat(filepath.Join("..", "..", "go.mod")); err != nil {
		fmt.Fprintln(os.Stderr, "apicheck: run from internal/apicheck:", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// TestChecksFindWhatTheyLookFor runs both checks on a package written to
// break them, so that their passing on the real ones means something.
func TestChecksFindWhatTheyLookFor(t *testing.T) {
	t.Parallel()
	const src = `// Package bad breaks the rules.
package bad

import (
	js "github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats-server/v2/server"
)

// Conn is documented.
type Conn struct {
	Stream js.Stream // documented, but a leak
	inner  server.Options
	Plain  int
}

type Undocumented int

// Open leaks through its result.
func Open() (*server.Server, error) { return nil, nil }

// Consume leaks through a parameter of a function parameter.
func (c *Conn) Consume(h func(js.Msg)) {}

func (c *Conn) private(m js.Msg) {}

func Exported() {}

// Alias leaks.
type Alias = js.PubAck
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "bad.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	p := pkg{dir: "bad", fset: fset, files: []*ast.File{f}}
	leaks := strings.Join(p.natsLeaks(f), "\n")
	for _, want := range []string{"field Conn.Stream", "func Open", "func Consume", "type Alias"} {
		if !strings.Contains(leaks, want) {
			t.Errorf("leak %q not found in:\n%s", want, leaks)
		}
	}
	if strings.Contains(leaks, "private") || strings.Contains(leaks, "inner") {
		t.Errorf("unexported names reported:\n%s", leaks)
	}
	missing := strings.Join(p.undocumented(t), "\n")
	for _, want := range []string{"type Undocumented", "func Exported", "field Conn.Plain"} {
		if !strings.Contains(missing, want) {
			t.Errorf("undocumented %q not found in:\n%s", want, missing)
		}
	}
	if strings.Contains(missing, "Conn.Stream") || strings.Contains(missing, "func Open") {
		t.Errorf("documented names reported:\n%s", missing)
	}
}
