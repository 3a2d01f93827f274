package worker

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestBrokerAdapterHeldThroughInterfaces: the runtime holds the JetStream
// adapter only through the small interfaces it declares where it uses
// them: no field of a worker type is one of the adapter's handles
// (*queue.Conn, *queue.Bucket, *queue.Jobs), whose every method would then
// be within reach.
func TestBrokerAdapterHeldThroughInterfaces(t *testing.T) {
	handles := map[string]bool{"Conn": true, "Bucket": true, "Jobs": true}
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			st, ok := n.(*ast.StructType)
			if !ok {
				return true
			}
			for _, fld := range st.Fields.List {
				ast.Inspect(fld.Type, func(n ast.Node) bool {
					if sel, ok := n.(*ast.SelectorExpr); ok {
						if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "queue" && handles[sel.Sel.Name] {
							t.Errorf("%s: a field of type queue.%s; hold it through an interface declared where it is used", fset.Position(fld.Pos()), sel.Sel.Name)
						}
					}
					return true
				})
			}
			return true
		})
	}
}
