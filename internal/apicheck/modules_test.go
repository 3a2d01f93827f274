package apicheck

import (
	"bufio"
	"encoding/json"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// root is the repository's root directory, which holds the root go.mod.
const root = "../.."

// kubernetes are the module path prefixes that only deploy/'s tests need.
var kubernetes = []string{"k8s.io/", "sigs.k8s.io/"}

// goCmd runs the go command in the root module, with its own go.mod.
func goCmd(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// TestModulesRootRequiresNoKubernetes: a service that imports Orderly pulls
// no Kubernetes or kustomize module. They belong to deploy/'s tests, which
// are a module of their own; neither the root go.mod nor the root module's
// dependency graph may name one.
func TestModulesRootRequiresNoKubernetes(t *testing.T) {
	var mod struct {
		Module  struct{ Path string }
		Require []struct{ Path, Version string }
	}
	if err := json.Unmarshal(goCmd(t, "mod", "edit", "-json"), &mod); err != nil {
		t.Fatal(err)
	}
	if mod.Module.Path != "github.com/orderly-dev/orderly" || len(mod.Require) == 0 {
		t.Fatalf("%s/go.mod: module %q with %d requirements: not the root go.mod", root, mod.Module.Path, len(mod.Require))
	}
	for _, r := range mod.Require {
		if isKubernetes(r.Path) {
			t.Errorf("the root go.mod requires %s %s: only deploy/ (its own module) may", r.Path, r.Version)
		}
	}
	graph := strings.Fields(string(goCmd(t, "list", "-m", "-f", "{{.Path}}", "all")))
	for _, path := range graph {
		if isKubernetes(path) {
			t.Errorf("the root module's graph (%d modules) holds %s", len(graph), path)
		}
	}
}

func isKubernetes(path string) bool {
	return slices.ContainsFunc(kubernetes, func(p string) bool { return strings.HasPrefix(path, p) })
}

// modules finds every directory of the repository with a go.mod, as the go
// command sees modules: testdata and directories whose name starts with . or
// _ are ignored.
func modules(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && d.Name() == "go.mod" {
			dir, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			dirs = append(dirs, dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(dirs)
	return dirs
}

// TestModulesMakeTestRunsEveryModule: the README's test command, make test,
// runs go test -race in every module of the repository, and fails when any
// module's tests fail; make vet vets every module; CI runs both. The go
// command is replaced by a script that records where it ran, so nothing is
// compiled.
func TestModulesMakeTestRunsEveryModule(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make test is the README's test command, and there is no make: %v", err)
	}
	mods := modules(t)
	if !slices.Contains(mods, ".") || !slices.Contains(mods, "deploy") {
		t.Fatalf("modules found: %v, want the root and deploy at least", mods)
	}

	// The fake go prints its directory and arguments, and fails in the
	// directory named by FAIL_IN.
	fake := filepath.Join(t.TempDir(), "go")
	script := "#!/bin/sh\necho \"fakego: $PWD: $*\"\n[ \"$PWD\" != \"$FAIL_IN\" ]\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		t.Fatal(err)
	}
	runMake := func(target, failIn string) (ran map[string]string, failed bool) {
		t.Helper()
		cmd := exec.Command("make", "-s", target, "GO="+fake)
		cmd.Dir = root
		// A make running this test must not lend its jobserver or flags.
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=")
		})
		cmd.Env = append(cmd.Env, "FAIL_IN="+failIn)
		out, err := cmd.CombinedOutput()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatalf("make %s: %v", target, err)
		}
		ran = map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			dir, args, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "fakego: "), ": ")
			if !ok || !strings.HasPrefix(sc.Text(), "fakego: ") {
				continue
			}
			rel, err := filepath.Rel(abs, dir)
			if err != nil {
				t.Fatalf("make %s ran go in %s: %v", target, dir, err)
			}
			ran[rel] = args
		}
		t.Logf("make %s (failing in %q): %v, go ran in %v\n%s", target, failIn, err, ran, out)
		return ran, err != nil
	}

	ran, failed := runMake("test", "")
	for _, m := range mods {
		args, ok := ran[m]
		if !ok {
			t.Errorf("make test does not run the tests of module %s (it ran go in %v)", m, slices.Sorted(maps.Keys(ran)))
			continue
		}
		if f := strings.Fields(args); len(f) == 0 || f[0] != "test" || !slices.Contains(f, "-race") || !slices.Contains(f, "./...") {
			t.Errorf("make test runs go %s in module %s, want go test -race ... ./...", args, m)
		}
	}
	if failed {
		t.Error("make test failed when every module's tests passed")
	}

	// A failing module fails make test, and the other modules still run.
	ran, failed = runMake("test", filepath.Join(abs, mods[0]))
	if !failed {
		t.Errorf("make test succeeded when the tests of module %s failed", mods[0])
	}
	if len(ran) != len(mods) {
		t.Errorf("with module %s failing, make test ran go in %v, want every module %v", mods[0], slices.Sorted(maps.Keys(ran)), mods)
	}

	ran, failed = runMake("vet", "")
	for _, m := range mods {
		if args := ran[m]; !strings.HasPrefix(args, "vet ") {
			t.Errorf("make vet runs %q in module %s, want go vet", args, m)
		}
	}
	if failed {
		t.Error("make vet failed when every module vets clean")
	}

	// CI runs both targets.
	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"vet", "test"} {
		if !regexp.MustCompile(`(?m)^[^#\n]*\bmake\b[^#\n]*\s` + target + `\s*$`).Match(ci) {
			t.Errorf(".ci/run does not run make %s", target)
		}
	}
}
