// Package lockcheck holds a vet-style test: no mutex of the module is held
// across a network call. A lock held across a request to the server turns
// a slow or stalled server into a stalled caller of everything else that
// takes the lock (a readiness probe, a metrics scrape, Stop): copy what is
// needed under the lock and do the I/O after, or give the state a single
// owning goroutine.
package lockcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// natsPkgs are the client packages whose calls reach the server.
const natsPkgs = "github.com/nats-io/nats.go"

// netNames are the methods and functions of the NATS client packages that
// send to the server or wait for it: publishing, requests, acknowledgements,
// flushes, pulls, KV and stream/consumer management. Calling one, or a
// function of the module that (transitively) calls one, is a network call.
var netNames = set(
	// core NATS
	"Connect", "Publish", "PublishMsg", "PublishRequest", "Request", "RequestMsg", "RequestWithContext",
	"RequestMsgWithContext", "Respond", "RespondMsg", "Flush", "FlushTimeout", "FlushWithContext", "Drain",
	"RTT",
	// JetStream publishing and messages
	"PublishAsync", "PublishMsgAsync", "Ack", "DoubleAck", "Nak", "NakWithDelay", "InProgress", "Term",
	"TermWithReason",
	// pulls
	"Fetch", "FetchNoWait", "FetchBytes", "Next", "Consume", "Messages",
	// KV
	"KeyValue", "CreateKeyValue", "UpdateKeyValue", "CreateOrUpdateKeyValue", "DeleteKeyValue",
	"Get", "GetRevision", "Put", "PutString", "Create", "Update", "Delete", "Purge", "Keys", "ListKeys",
	"Watch", "WatchAll", "History", "Status",
	// streams and consumers
	"Stream", "CreateStream", "UpdateStream", "CreateOrUpdateStream", "DeleteStream", "StreamNameBySubject",
	"Consumer", "CreateConsumer", "UpdateConsumer", "CreateOrUpdateConsumer", "DeleteConsumer",
	"OrderedConsumer", "PauseConsumer", "ResumeConsumer", "UnpinConsumer", "Unpin", "Info", "AccountInfo",
	"GetMsg", "GetLastMsgForSubject", "DeleteMsg", "SecureDeleteMsg",
)

// localNames are methods of the client packages named like a network call
// that answer from memory.
var localNames = set(
	"Header.Get", "Header.Values", // message headers
	"Conn.Status", "Conn.Stats", // the connection's own state
)

// allowed lists the locks that may be held across a network call, each
// with why: "<function> <lock> <callee>" as the failure message prints
// them. Empty: there is no such case, and a new one needs a reason here.
var allowed = map[string]string{}

// TestLifecycleNoLockAcrossNetworkCall type-checks every package of the
// module and fails for each call that reaches the network (a netNames
// method of nats.go, or a function of the module that calls one, however
// deep) made while a sync.Mutex or RWMutex of the same function may be
// held, or a wait under one for goroutines that make such calls. Function
// literals count as functions of their own; calls through function values
// are not followed.
func TestLifecycleNoLockAcrossNetworkCall(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	c := load(t, root, "./...")
	found := c.check()
	var bad []string
	used := map[string]bool{}
	for _, f := range found {
		if _, ok := allowed[f.key]; ok {
			used[f.key] = true
			continue
		}
		bad = append(bad, f.String())
	}
	for key := range allowed {
		if !used[key] {
			t.Errorf("allowed %q matches nothing any more: remove it", key)
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d locks held across a network call (copy what is needed under the lock and do the I/O after it, or give the state one owning goroutine):\n  %s",
			len(bad), strings.Join(bad, "\n  "))
	}
	if c.functions < 100 {
		t.Errorf("checked only %d functions: the check is not seeing the module", c.functions)
	}
}

// TestLockCheckFindsKnownCases runs the check over testdata/bad, whose
// comments say what it must find, so the check cannot pass by seeing
// nothing.
func TestLockCheckFindsKnownCases(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	c := load(t, root, "./internal/lockcheck/testdata/bad")
	var got []string
	for _, f := range c.check() {
		got = append(got, f.key)
	}
	want := []string{
		"bad.deferred s.mu nats.(*Conn).Publish",
		"bad.inBranch s.mu nats.(*Msg).Ack",
		"bad.loop s.mu nats.(*Conn).Flush",
		"bad.throughHelper s.mu bad.send",
		"bad.viaInterface s.mu bad.sender.send",
		"bad.rlocked s.rw jetstream.KeyValue.Put",
		"bad.literal s.mu nats.(*Conn).Publish",
		"bad.waited s.mu sync.(*WaitGroup).Wait",
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("found:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// finding is one call made with a lock held.
type finding struct {
	key   string // "<function> <lock> <callee>"
	pos   token.Position
	chain string // how the callee reaches the network
}

func (f finding) String() string {
	return fmt.Sprintf("%s:%d: %s holds %s across %s", f.pos.Filename, f.pos.Line,
		strings.Fields(f.key)[0], strings.Fields(f.key)[1], f.chain)
}

// checker holds the module's packages, type-checked from source.
type checker struct {
	root      string
	fset      *token.FileSet
	pkgs      []*pkgInfo // the packages to check, dependencies first
	named     []*types.Named
	net       map[*types.Func]string // network functions of the module -> the call that makes them so
	functions int
}

type pkgInfo struct {
	path  string
	check bool // matched by the pattern, not only a dependency
	files []*ast.File
	info  *types.Info
	types *types.Package
}

type listed struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Export     string
	Module     *struct{ Main bool }
	DepOnly    bool
}

// load type-checks the module's packages matching pattern (and those of
// the module they import) from source, and their other dependencies from
// the build cache's export data.
func load(t *testing.T, root, pattern string) *checker {
	t.Helper()
	cmd := exec.Command("go", "list", "-export", "-deps", "-json=ImportPath,Dir,GoFiles,Export,Module,DepOnly", pattern)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	c := &checker{root: root, fset: token.NewFileSet(), net: map[*types.Func]string{}}
	exports := map[string]string{}
	var mine []listed
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
		if p.Module != nil && p.Module.Main {
			mine = append(mine, p)
		}
	}
	gc := importer.ForCompiler(c.fset, "gc", func(path string) (io.ReadCloser, error) {
		if e := exports[path]; e != "" {
			return os.Open(e)
		}
		return nil, fmt.Errorf("no export data for %s", path)
	})
	checked := map[string]*types.Package{}
	imp := importerFunc(func(path string) (*types.Package, error) {
		if p := checked[path]; p != nil {
			return p, nil
		}
		return gc.Import(path)
	})
	for _, lp := range mine { // go list -deps: dependencies first
		p := &pkgInfo{path: lp.ImportPath, info: &types.Info{
			Uses: map[*ast.Ident]types.Object{}, Defs: map[*ast.Ident]types.Object{},
			Selections: map[*ast.SelectorExpr]*types.Selection{}, Types: map[ast.Expr]types.TypeAndValue{},
		}}
		for _, name := range lp.GoFiles {
			f, err := parser.ParseFile(c.fset, filepath.Join(lp.Dir, name), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			p.files = append(p.files, f)
		}
		conf := types.Config{Importer: imp, Error: func(error) {}}
		tp, err := conf.Check(lp.ImportPath, c.fset, p.files, p.info)
		if err != nil {
			t.Fatalf("type-check %s: %v", lp.ImportPath, err)
		}
		p.types = tp
		checked[lp.ImportPath] = tp
		for _, name := range tp.Scope().Names() {
			if tn, ok := tp.Scope().Lookup(name).(*types.TypeName); ok {
				if n, ok := tn.Type().(*types.Named); ok {
					c.named = append(c.named, n)
				}
			}
		}
		p.check = !lp.DepOnly
		c.pkgs = append(c.pkgs, p)
	}
	return c
}

type importerFunc func(string) (*types.Package, error)

func (f importerFunc) Import(path string) (*types.Package, error) { return f(path) }

// check returns every call to a network function made while a mutex of the
// same function is held.
func (c *checker) check() []finding {
	c.findNetwork()
	var out []finding
	for _, p := range c.pkgs {
		if !p.check {
			continue
		}
		for _, f := range p.files {
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				c.functions++
				name := p.types.Name() + "." + fd.Name.Name
				if fd.Recv != nil && len(fd.Recv.List) > 0 {
					name = p.types.Name() + "." + recvName(fd.Recv.List[0].Type) + "." + fd.Name.Name
				}
				out = append(out, c.walkFunc(p, name, fd.Body)...)
				// Function literals run when called or started, not where
				// they are written: each is checked as a function of its own.
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					if fl, ok := n.(*ast.FuncLit); ok {
						out = append(out, c.walkFunc(p, name, fl.Body)...)
					}
					return true
				})
			}
		}
	}
	return out
}

func recvName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return recvName(e.X)
	case *ast.IndexExpr:
		return recvName(e.X)
	case *ast.IndexListExpr:
		return recvName(e.X)
	case *ast.Ident:
		return e.Name
	}
	return "?"
}

// callee is the function or method a call expression calls statically, or
// the interface method it calls; nil for calls of function values.
func callee(info *types.Info, call *ast.CallExpr) *types.Func {
	fun := ast.Unparen(call.Fun)
	switch f := fun.(type) {
	case *ast.IndexExpr: // generic instantiation
		fun = f.X
	case *ast.IndexListExpr:
		fun = f.X
	}
	var id *ast.Ident
	switch f := fun.(type) {
	case *ast.Ident:
		id = f
	case *ast.SelectorExpr:
		id = f.Sel
	default:
		return nil
	}
	fn, _ := info.Uses[id].(*types.Func)
	if fn == nil {
		return nil
	}
	return fn.Origin()
}

// calls lists the calls a body makes where it stands: not those of the
// function literals it holds, nor those it starts with go.
func calls(body ast.Node, visit func(*ast.CallExpr)) {
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncLit, *ast.GoStmt:
			return false
		case *ast.CallExpr:
			visit(n)
		}
		return true
	})
}

// findNetwork computes the module's functions that reach the network: those
// that call a network function, directly or through another function of
// the module (interface methods through the module's types that implement
// them), to a fixed point.
func (c *checker) findNetwork() {
	type decl struct {
		fn   *types.Func
		body *ast.BlockStmt
		p    *pkgInfo
	}
	var decls []decl
	for _, p := range c.pkgs {
		for _, f := range p.files {
			for _, d := range f.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
					if fn, ok := p.info.Defs[fd.Name].(*types.Func); ok {
						decls = append(decls, decl{fn, fd.Body, p})
					}
				}
			}
		}
	}
	for changed := true; changed; {
		changed = false
		for _, d := range decls {
			if _, ok := c.net[d.fn]; ok {
				continue
			}
			calls(d.body, func(call *ast.CallExpr) {
				if _, ok := c.net[d.fn]; ok {
					return
				}
				if fn := callee(d.p.info, call); fn != nil {
					if why, ok := c.isNetwork(fn); ok {
						c.net[d.fn] = shortName(fn) + why
						changed = true
					}
				}
			})
		}
	}
}

// isNetwork reports whether calling fn reaches the network, and how.
func (c *checker) isNetwork(fn *types.Func) (string, bool) {
	if fn.Pkg() == nil {
		return "", false
	}
	if strings.HasPrefix(fn.Pkg().Path(), natsPkgs) {
		if !netNames[fn.Name()] {
			return "", false
		}
		if recv := recvType(fn); recv != "" && localNames[recv+"."+fn.Name()] {
			return "", false
		}
		return "", true
	}
	if why, ok := c.net[fn]; ok {
		return " -> " + why, true
	}
	// A method of an interface of the module: network if one of the
	// module's types implementing the interface does it on the network.
	sig := fn.Signature()
	if sig.Recv() == nil {
		return "", false
	}
	iface, ok := sig.Recv().Type().Underlying().(*types.Interface)
	if !ok {
		return "", false
	}
	for _, n := range c.named {
		if _, isIface := n.Underlying().(*types.Interface); isIface {
			continue
		}
		for _, t := range []types.Type{n, types.NewPointer(n)} {
			if !types.Implements(t, iface) {
				continue
			}
			obj, _, _ := types.LookupFieldOrMethod(t, true, fn.Pkg(), fn.Name())
			if m, ok := obj.(*types.Func); ok {
				if why, ok := c.net[m.Origin()]; ok {
					return " (" + shortName(m) + ") -> " + why, true
				}
			}
		}
	}
	return "", false
}

func recvType(fn *types.Func) string {
	recv := fn.Signature().Recv()
	if recv == nil {
		return ""
	}
	t := recv.Type()
	if p, ok := t.(*types.Pointer); ok {
		t = p.Elem()
	}
	if n, ok := t.(*types.Named); ok {
		return n.Obj().Name()
	}
	return ""
}

// shortName is fn as findings name it: "nats.(*Conn).Publish",
// "jetstream.KeyValue.Put", "worker.sleep".
func shortName(fn *types.Func) string {
	name := fn.Pkg().Name() + "."
	if recv := fn.Signature().Recv(); recv != nil {
		if _, ptr := recv.Type().(*types.Pointer); ptr {
			name += "(*" + recvType(fn) + ")."
		} else {
			name += recvType(fn) + "."
		}
	}
	return name + fn.Name()
}

// lockCall reports the mutex a call locks or unlocks: its receiver as
// written, and whether it locks.
func lockCall(info *types.Info, call *ast.CallExpr) (mu string, lock, ok bool) {
	sel, isSel := ast.Unparen(call.Fun).(*ast.SelectorExpr)
	if !isSel {
		return "", false, false
	}
	fn, _ := info.Uses[sel.Sel].(*types.Func)
	if fn == nil || fn.Pkg() == nil || fn.Pkg().Path() != "sync" {
		return "", false, false
	}
	switch recvType(fn) {
	case "Mutex", "RWMutex":
	default:
		return "", false, false
	}
	switch fn.Name() {
	case "Lock", "RLock":
		return types.ExprString(sel.X), true, true
	case "Unlock", "RUnlock":
		return types.ExprString(sel.X), false, true
	}
	return "", false, false
}

// waitGroupCall reports the sync.WaitGroup, as written, whose method
// method the call calls.
func waitGroupCall(info *types.Info, call *ast.CallExpr, method string) (string, bool) {
	sel, ok := ast.Unparen(call.Fun).(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != method {
		return "", false
	}
	fn, _ := info.Uses[sel.Sel].(*types.Func)
	if fn == nil || fn.Pkg() == nil || fn.Pkg().Path() != "sync" || recvType(fn) != "WaitGroup" {
		return "", false
	}
	return types.ExprString(sel.X), true
}

// walker follows which mutexes may be held, statement by statement, in
// one function body. A branch that ends the block (return, break,
// continue, goto, panic) does not carry its locks past the branch; after
// branches that fall through, a lock held on any of them is held.
type walker struct {
	c     *checker
	p     *pkgInfo
	fname string
	out   []finding
	seen  map[string]bool // loops are walked twice: report each call once
	// waits maps a sync.WaitGroup, as written, to the network call of a
	// function literal its Go method started in this body: its Wait waits
	// for that call.
	waits map[string]string
}

type held map[string]bool

func (h held) clone() held { return maps.Clone(h) }

func union(hs ...held) held {
	n := held{}
	for _, h := range hs {
		for k := range h {
			n[k] = true
		}
	}
	return n
}

func (c *checker) walkFunc(p *pkgInfo, fname string, body *ast.BlockStmt) []finding {
	w := &walker{c: c, p: p, fname: fname, seen: map[string]bool{}, waits: map[string]string{}}
	calls(body, func(call *ast.CallExpr) {
		wg, ok := waitGroupCall(p.info, call, "Go")
		if !ok || len(call.Args) != 1 {
			return
		}
		if lit, ok := call.Args[0].(*ast.FuncLit); ok {
			calls(lit.Body, func(inner *ast.CallExpr) {
				if fn := callee(p.info, inner); fn != nil && w.waits[wg] == "" {
					if why, ok := c.isNetwork(fn); ok {
						w.waits[wg] = shortName(fn) + why
					}
				}
			})
		}
	})
	w.block(body.List, held{})
	return w.out
}

// block walks stmts from h; it returns the locks held after them, and
// whether they always end the enclosing block early.
func (w *walker) block(stmts []ast.Stmt, h held) (held, bool) {
	for _, s := range stmts {
		var ends bool
		h, ends = w.stmt(s, h)
		if ends {
			return h, true
		}
	}
	return h, false
}

func (w *walker) stmt(s ast.Stmt, h held) (held, bool) {
	switch s := s.(type) {
	case *ast.BlockStmt:
		return w.block(s.List, h)
	case *ast.LabeledStmt:
		return w.stmt(s.Stmt, h)
	case *ast.ReturnStmt:
		w.exprs(h, s)
		return h, true
	case *ast.BranchStmt:
		return h, true
	case *ast.GoStmt:
		return h, false
	case *ast.DeferStmt:
		// A deferred unlock keeps the lock to the end: nothing to undo.
		if _, _, ok := lockCall(w.p.info, s.Call); ok {
			return h, false
		}
		w.exprs(h, s.Call) // runs at the end, with the locks held then: approximated by now
		return h, false
	case *ast.ExprStmt:
		if call, ok := ast.Unparen(s.X).(*ast.CallExpr); ok {
			if mu, lock, ok := lockCall(w.p.info, call); ok {
				h = h.clone()
				if lock {
					h[mu] = true
				} else {
					delete(h, mu)
				}
				return h, false
			}
			if id, ok := ast.Unparen(call.Fun).(*ast.Ident); ok && id.Name == "panic" {
				return h, true
			}
		}
		w.exprs(h, s)
		return h, false
	case *ast.IfStmt:
		if s.Init != nil {
			h, _ = w.stmt(s.Init, h)
		}
		w.exprs(h, s.Cond)
		thenH, thenEnds := w.block(s.Body.List, h.clone())
		elseH, elseEnds := h, false
		if s.Else != nil {
			elseH, elseEnds = w.stmt(s.Else, h.clone())
		}
		switch {
		case thenEnds && elseEnds:
			return h, true
		case thenEnds:
			return elseH, false
		case elseEnds:
			return thenH, false
		}
		return union(thenH, elseH), false
	case *ast.ForStmt:
		if s.Init != nil {
			h, _ = w.stmt(s.Init, h)
		}
		w.exprs(h, s.Cond)
		bodyH, _ := w.block(s.Body.List, h.clone())
		if s.Post != nil {
			w.stmt(s.Post, bodyH)
		}
		// A second time round, with what the first left held.
		again := union(h, bodyH)
		bodyH, _ = w.block(s.Body.List, again)
		return union(again, bodyH), false
	case *ast.RangeStmt:
		w.exprs(h, s.X)
		bodyH, _ := w.block(s.Body.List, h.clone())
		again := union(h, bodyH)
		bodyH, _ = w.block(s.Body.List, again)
		return union(again, bodyH), false
	case *ast.SwitchStmt:
		if s.Init != nil {
			h, _ = w.stmt(s.Init, h)
		}
		w.exprs(h, s.Tag)
		return w.clauses(s.Body, h, true)
	case *ast.TypeSwitchStmt:
		if s.Init != nil {
			h, _ = w.stmt(s.Init, h)
		}
		w.exprs(h, s.Assign)
		return w.clauses(s.Body, h, true)
	case *ast.SelectStmt:
		return w.clauses(s.Body, h, false)
	default:
		w.exprs(h, s)
		return h, false
	}
}

// clauses walks the clauses of a switch or select from h.
func (w *walker) clauses(body *ast.BlockStmt, h held, isSwitch bool) (held, bool) {
	var after []held
	hasDefault := false
	for _, cl := range body.List {
		var stmts []ast.Stmt
		ch := h.clone()
		switch cl := cl.(type) {
		case *ast.CaseClause:
			for _, e := range cl.List {
				w.exprs(h, e)
			}
			hasDefault = hasDefault || cl.List == nil
			stmts = cl.Body
		case *ast.CommClause:
			if cl.Comm != nil {
				ch, _ = w.stmt(cl.Comm, ch)
			} else {
				hasDefault = true
			}
			stmts = cl.Body
		}
		if out, ends := w.block(stmts, ch); !ends {
			after = append(after, out)
		}
	}
	if isSwitch && !hasDefault {
		after = append(after, h)
	}
	if len(after) == 0 {
		return h, true
	}
	return union(after...), false
}

// exprs records the network calls n makes while h is held.
func (w *walker) exprs(h held, n ast.Node) {
	if n == nil || len(h) == 0 {
		return
	}
	calls(n, func(call *ast.CallExpr) {
		fn := callee(w.p.info, call)
		if fn == nil {
			return
		}
		why, ok := w.c.isNetwork(fn)
		if wg, isWait := waitGroupCall(w.p.info, call, "Wait"); isWait && w.waits[wg] != "" {
			why, ok = " for "+w.waits[wg], true
		}
		if !ok {
			return
		}
		for _, mu := range slices.Sorted(maps.Keys(h)) {
			pos := w.c.fset.Position(call.Pos())
			if rel, err := filepath.Rel(w.c.root, pos.Filename); err == nil {
				pos.Filename = rel
			}
			f := finding{key: w.fname + " " + mu + " " + shortName(fn), pos: pos, chain: shortName(fn) + why}
			if id := f.String(); !w.seen[id] {
				w.seen[id] = true
				w.out = append(w.out, f)
			}
		}
	})
}

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}
