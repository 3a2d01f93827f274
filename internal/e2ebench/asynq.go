package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// asynqDir is the asynqbench module's directory, relative to the
// repository's root. It is a module of its own so that Asynq and go-redis
// stay out of the root go.mod: the benchmark builds it and runs it as a
// child process.
const asynqDir = "internal/e2ebench/asynqbench"

// exitNoRedis is asynqbench's exit status when redis-server is not on the
// PATH.
const exitNoRedis = 3

// errNoRedis: the asynq scenario is skipped.
var errNoRedis = errors.New("no redis-server on the PATH (Debian: apt-get install redis-server)")

// asynqResult is asynqbench's one line.
type asynqResult struct {
	Tasks     int     `json:"tasks"`
	ElapsedNS int64   `json:"elapsed_ns"`
	EnqueueNS int64   `json:"enqueue_ns"`
	EPS       float64 `json:"eps"`
	RSS       uint64  `json:"rss"`
	RedisRSS  uint64  `json:"redis_rss"`
	CPUNS     int64   `json:"cpu_ns"`
}

// buildAsynq builds asynqbench into dir with the go command (as go run
// builds this benchmark), from the module's own go.mod.
func buildAsynq(ctx context.Context, dir string) (string, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return "", errNoRedis
	}
	src, err := asynqSource(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "asynqbench")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", src, err, out)
	}
	return bin, nil
}

// asynqSource finds the asynqbench module: beside this file's source, or
// under the root of the module the go command sees from here.
func asynqSource(ctx context.Context) (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		if d := filepath.Join(filepath.Dir(file), "asynqbench"); isFile(filepath.Join(d, "go.mod")) {
			return d, nil
		}
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if gomod := strings.TrimSpace(string(out)); err == nil && gomod != "" && gomod != os.DevNull {
		if d := filepath.Join(filepath.Dir(gomod), asynqDir); isFile(filepath.Join(d, "go.mod")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("asynq: %s not found (run from the repository)", asynqDir)
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// asynq runs asynqbench once: a fresh redis-server, n no-op tasks of size
// bytes enqueued and processed by Asynq.
func (b *bench) asynq(ctx context.Context, bin string, n int) (result, error) {
	cmd := exec.CommandContext(ctx, bin, "-tasks", strconv.Itoa(n), "-size", strconv.Itoa(b.cfg.size),
		"-timeout", b.cfg.timeout.String())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == exitNoRedis {
			return result{}, errNoRedis
		}
		return result{}, fmt.Errorf("asynqbench: %w", err)
	}
	var a asynqResult
	if err := json.Unmarshal(out.Bytes(), &a); err != nil {
		return result{}, fmt.Errorf("asynqbench: its answer %q: %w", out.String(), err)
	}
	if a.Tasks != n {
		return result{}, fmt.Errorf("asynqbench: %d tasks done, want %d", a.Tasks, n)
	}
	return result{eps: a.EPS, elapsed: time.Duration(a.ElapsedNS), rss: a.RSS, serverRSS: a.RedisRSS, cpu: time.Duration(a.CPUNS / int64(n))}, nil
}
