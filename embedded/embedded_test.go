package embedded

import (
	"bytes"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// TestDataDirLocked: a second server on a store in use fails at once and
// says why; the lock goes with the first server.
func TestDataDirLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := start(t, Config{Listen: "127.0.0.1:-1", DataDir: dir})
	began := time.Now()
	_, err := Start(Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if !errors.Is(err, ErrDataDirLocked) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "pid ") {
		t.Fatalf("second server on %s: %v; want ErrDataDirLocked naming the dir and the holder", dir, err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("refused after %s; want at once", d)
	}
	first.Shutdown()
	start(t, Config{Listen: "127.0.0.1:-1", DataDir: dir})
}

// TestPortInUse: a taken port is reported at once, with its cause.
func TestPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	began := time.Now()
	_, err = Start(Config{Listen: ln.Addr().String(), DataDir: t.TempDir()})
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("start on a taken port: %v", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("reported after %s; want at once", d)
	}
}

// TestPortZeroPicksAFreePort: port 0 means any free port, as in Go, not
// nats-server's default 4222.
func TestPortZeroPicksAFreePort(t *testing.T) {
	t.Parallel()
	s := start(t, Config{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	u, err := url.Parse(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	if u.Port() == "0" || u.Port() == "4222" {
		t.Fatalf("listening on %s", u.Host)
	}
}

// TestOpenListenWarning: a server on an address other machines can reach,
// without credentials, warns; one on loopback, or with credentials, does
// not. (192.0.2.1 is a documentation address: the start fails after the
// warning, so no test server is ever open to the network.)
func TestOpenListenWarning(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		listen, user string
		warn         bool
	}{
		{"192.0.2.1:4222", "", true},
		{"192.0.2.1:4222", "orderly", false},
		{"127.0.0.1:-1", "", false},
	} {
		var out syncBuffer
		log := zerolog.New(&out).Level(zerolog.InfoLevel)
		cfg := Config{Listen: c.listen, DataDir: t.TempDir(), Logger: &log}
		if c.user != "" {
			cfg.User, cfg.Password = c.user, "secret"
		}
		if s, err := Start(cfg); err == nil {
			s.Shutdown()
		}
		if got := strings.Contains(out.String(), "open to the network without authentication"); got != c.warn {
			t.Errorf("%s user %q: warned %v, want %v\n%s", c.listen, c.user, got, c.warn, out.String())
		}
	}
	for host, want := range map[string]bool{"127.0.0.1": true, "::1": true, "localhost": true, "0.0.0.0": false, "::": false, "10.0.0.1": false, "example.com": false} {
		if loopback(host) != want {
			t.Errorf("loopback(%q) = %v", host, !want)
		}
	}
}

// syncBuffer is a bytes.Buffer for concurrent writers: the server logs
// from its own goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestParseListen(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"nonsense", "127.0.0.1:99999", "127.0.0.1:-2", ":abc", "127.0.0.1"} {
		if _, _, err := ParseListen(bad); err == nil {
			t.Errorf("ParseListen(%q) accepted", bad)
		}
	}
	if h, p, err := ParseListen(":4222"); err != nil || h != "127.0.0.1" || p != 4222 {
		t.Errorf(":4222 -> %s %d %v", h, p, err)
	}
}
