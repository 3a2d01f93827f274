package contractcheck_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/orderly-dev/orderly/contract"
)

// TestWireContractOneHome: the contract's names and values are defined once,
// in package contract. The packages that use them declare none of its
// exported names again (no copy, no alias), define no struct with the JSON
// members of one of contract's (a second definition of the stored state, as
// worker's record was), and spell no error code or
// contract header as a bare string in their code (tests aside; a key of a
// map literal, such as the "duplicate" of enqueue's JSON output, is a name,
// not a code): they take contract's constants.
func TestWireContractOneHome(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	names := map[string]bool{}
	shapes := map[string][]string{} // the JSON member names of contract's structs
	for _, f := range parseDir(t, fset, "../../contract") {
		for _, d := range f.Decls {
			for _, n := range declNames(d) {
				if ast.IsExported(n) {
					names[n] = true
				}
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok {
				if st, ok := ts.Type.(*ast.StructType); ok && ast.IsExported(ts.Name.Name) {
					// Two members (the envelope, an error) are too few to
					// tell a copy from another format, such as enqueue's
					// bulk lines.
					if tags := jsonNames(st); len(tags) >= 4 {
						shapes[ts.Name.Name] = tags
					}
				}
			}
			return true
		})
	}
	values := map[string]string{}
	for _, c := range contract.Codes() {
		values[c] = "an error code"
	}
	for _, h := range []string{contract.HeaderJobID, contract.HeaderTimerKind, contract.HeaderTimerVisit,
		contract.HeaderDLQReason, contract.HeaderDLQSubject, contract.HeaderDLQSequence,
		contract.HeaderDLQDelivered, contract.HeaderDLQAt, contract.HeaderDLQJobID,
		contract.HeaderTraceParent, contract.HeaderTraceState} {
		values[h] = "a header"
	}
	for _, dir := range []string{"internal/queue", "worker", "client", "statemachine", "order", "cmd/worker", "cmd/enqueue", "orderlytest", "internal/cli", "internal/jsapi"} {
		for _, f := range parseDir(t, fset, filepath.Join("../..", dir)) {
			for _, d := range f.Decls {
				for _, n := range declNames(d) {
					if names[n] {
						t.Errorf("%s declares %s, a name of package contract: use contract.%s", dir, n, n)
					}
				}
			}
			keys := map[ast.Node]bool{} // a key of a map literal is a name, not a value
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.KeyValueExpr:
					keys[n.Key] = true
				case *ast.TypeSpec:
					if st, ok := n.Type.(*ast.StructType); ok {
						tags := jsonNames(st)
						for name, shape := range shapes {
							if !slices.ContainsFunc(shape, func(m string) bool { return !slices.Contains(tags, m) }) {
								t.Errorf("%s: %s has every JSON member of contract.%s: a second definition of it; use contract's", fset.Position(n.Pos()), n.Name.Name, name)
							}
						}
					}
					if sel, ok := n.Type.(*ast.SelectorExpr); ok && n.Assign.IsValid() {
						if id, ok := sel.X.(*ast.Ident); ok && id.Name == "contract" {
							t.Errorf("%s: %s aliases contract.%s: use contract's", fset.Position(n.Pos()), n.Name.Name, sel.Sel.Name)
						}
					}
				case *ast.BasicLit:
					if n.Kind == token.STRING && !keys[n] {
						if s, err := strconv.Unquote(n.Value); err == nil {
							if what, ok := values[s]; ok {
								t.Errorf("%s: %q is %s of package contract: use its constant", fset.Position(n.Pos()), s, what)
							}
						}
					}
				}
				return true
			})
		}
	}
}

func parseDir(t *testing.T, fset *token.FileSet, dir string) []*ast.File {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// jsonNames returns the member names a struct's json tags give its fields.
func jsonNames(st *ast.StructType) []string {
	var out []string
	for _, f := range st.Fields.List {
		if f.Tag == nil {
			continue
		}
		tag, err := strconv.Unquote(f.Tag.Value)
		if err != nil {
			continue
		}
		if name, _, _ := strings.Cut(reflect.StructTag(tag).Get("json"), ","); name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// declNames returns the names a top-level declaration declares (methods
// aside: a method may share a name with a function of another package).
func declNames(d ast.Decl) []string {
	var out []string
	switch d := d.(type) {
	case *ast.FuncDecl:
		if d.Recv == nil {
			out = append(out, d.Name.Name)
		}
	case *ast.GenDecl:
		for _, s := range d.Specs {
			switch s := s.(type) {
			case *ast.TypeSpec:
				out = append(out, s.Name.Name)
			case *ast.ValueSpec:
				for _, n := range s.Names {
					out = append(out, n.Name)
				}
			}
		}
	}
	return slices.Clip(out)
}
