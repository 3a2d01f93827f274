// Package buildinfo says which build of Orderly is running: its module
// version, VCS revision and Go version, from the binary's build information,
// or from the linker when a build sets them:
//
//	go build -ldflags "-X github.com/orderly-dev/orderly/internal/buildinfo.version=v1.2.3 \
//	    -X github.com/orderly-dev/orderly/internal/buildinfo.revision=$(git rev-parse HEAD)"
//
// The Makefile's build target and the Dockerfile do so: a Docker build has
// no .git, so the toolchain cannot stamp the revision itself.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Module is Orderly's module path.
const Module = "github.com/orderly-dev/orderly"

// Set by -ldflags -X; empty means "from the build information".
var version, revision string

// Info names a build.
type Info struct {
	// Version is Orderly's module version: a tag (v1.2.3), a pseudo-version,
	// or "(devel)" for a build of a working tree without a tag.
	Version string
	// Revision is the VCS revision the binary was built from, with
	// "+dirty" when the working tree had changes; "unknown" when the build
	// recorded none (go run, a build outside the repository).
	Revision string
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string
}

// Get returns the running binary's build: the linker's values first, then
// the build information's.
func Get() Info {
	i := Info{Version: "(devel)", Revision: "unknown", GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		i.GoVersion = bi.GoVersion
		if bi.Main.Path == Module {
			if bi.Main.Version != "" {
				i.Version = bi.Main.Version
			}
			var rev string
			var dirty bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					dirty = s.Value == "true"
				}
			}
			if rev != "" {
				i.Revision = rev
				if dirty {
					i.Revision += "+dirty"
				}
			}
		} else {
			// Orderly as a library of another program: its version is a
			// dependency's; the revision recorded is the program's.
			for _, d := range bi.Deps {
				if d.Path == Module {
					i.Version = d.Version
				}
			}
		}
	}
	if version != "" {
		i.Version = version
	}
	if revision != "" {
		i.Revision = revision
	}
	return i
}

// String is the one line `--version` prints after the program's name.
func (i Info) String() string {
	return fmt.Sprintf("%s (revision %s, %s)", i.Version, i.Revision, i.GoVersion)
}
