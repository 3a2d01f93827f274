package cli

import (
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestOrigin(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, ""},
		{[]string{"--nats-url", "nats://a"}, map[string]string{"NATS_URL": "nats://b"}, "--nats-url"},
		{nil, map[string]string{"NATS_URL": "nats://b"}, "NATS_URL"},
		{nil, map[string]string{"NATS_URL": "nats://b", "ORDERLY_NATS_URL": "nats://c"}, "ORDERLY_NATS_URL"},
	} {
		var f ConnFlags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f.Register(fs, "url")
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		if err := ApplyEnv(fs, func(k string) string { return c.env[k] }); err != nil {
			t.Fatal(err)
		}
		if got := Origin(fs, "nats-url"); got != c.want {
			t.Errorf("%v %v: origin %q, want %q", c.args, c.env, got, c.want)
		}
	}
}

func TestVersionFlagIgnoresEnvironment(t *testing.T) {
	t.Parallel()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	v := VersionFlag(fs)
	if err := ApplyEnv(fs, func(k string) string { return map[string]string{"ORDERLY_VERSION": "true"}[k] }); err != nil {
		t.Fatal(err)
	}
	if *v {
		t.Error("ORDERLY_VERSION set --version")
	}
}

func TestConnectTimeoutFlag(t *testing.T) {
	t.Parallel()
	f := ConnFlags{ConnectTimeout: 30 * time.Second}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f.Register(fs, "url")
	if def := fs.Lookup("connect-timeout").DefValue; def != "30s" {
		t.Errorf("default %s, want the preset 30s", def)
	}
	if err := fs.Parse([]string{"--connect-timeout", "0"}); err != nil {
		t.Fatal(err)
	}
	if cfg := f.Config("t", nil); cfg.ConnectTimeout >= 0 {
		t.Errorf("--connect-timeout 0 gives queue.Config.ConnectTimeout %s; want negative (no bound)", cfg.ConnectTimeout)
	}
	f.ConnectTimeout = -time.Second
	if _, ok := f.Validate().(*UsageError); !ok {
		t.Error("a negative --connect-timeout is not a usage error")
	}
}
