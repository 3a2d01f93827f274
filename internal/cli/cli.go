// Package cli holds what Orderly's two binaries share: connection flags,
// environment variables and logging set-up.
package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/orderly-dev/orderly/queue"
)

// ConnFlags are the flags that say how to reach NATS; every subcommand of
// both binaries takes them.
type ConnFlags struct {
	URL, User, Password, Token, NKey, Creds, CA, Cert, Key string
	ConnectTimeout                                         time.Duration
}

// Register adds the flags to fs.
func (f *ConnFlags) Register(fs *pflag.FlagSet, urlHelp string) {
	fs.StringVar(&f.URL, "nats-url", "", urlHelp+" (env NATS_URL; comma-separated for a cluster)")
	fs.StringVar(&f.User, "user", "", "NATS user name")
	fs.StringVar(&f.Password, "password", "", "NATS password")
	fs.StringVar(&f.Token, "token", "", "NATS token")
	fs.StringVar(&f.NKey, "nkey", "", "NATS NKey seed file")
	fs.StringVar(&f.Creds, "creds", "", "NATS credentials file")
	fs.StringVar(&f.CA, "tls-ca", "", "CA certificate file to verify the server")
	fs.StringVar(&f.Cert, "tls-cert", "", "client certificate file")
	fs.StringVar(&f.Key, "tls-key", "", "client key file")
	fs.DurationVar(&f.ConnectTimeout, "connect-timeout", 5*time.Second, "how long to wait for a NATS server")
}

// Config turns the flags into a queue.Config.
func (f *ConnFlags) Config(name string, log *zerolog.Logger) queue.Config {
	var urls []string
	for _, u := range strings.Split(f.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return queue.Config{
		URLs: urls, Name: name,
		User: f.User, Password: f.Password, Token: f.Token,
		NKeySeedFile: f.NKey, CredsFile: f.Creds,
		CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key,
		ConnectTimeout: f.ConnectTimeout,
		Logger:         log,
	}
}

// ApplyEnv sets every flag not given on the command line from its
// environment variable ORDERLY_<FLAG> (dashes as underscores), and
// --nats-url also from NATS_URL. The command line wins over the environment.
func ApplyEnv(fs *pflag.FlagSet, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || err != nil {
			return
		}
		name := "ORDERLY_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		v := getenv(name)
		if v == "" && fl.Name == "nats-url" {
			name, v = "NATS_URL", getenv("NATS_URL")
		}
		if v == "" {
			return
		}
		if e := fs.Set(fl.Name, v); e != nil {
			err = fmt.Errorf("%s=%q: %w", name, v, e)
		}
	})
	return err
}

// UsageError is a mistake in how a command was called: exit code 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError.
func Usagef(format string, a ...any) error { return &UsageError{fmt.Errorf(format, a...)} }

// Logger returns a zerolog logger at level writing to w: JSON, or console
// output when w is a terminal.
func Logger(w io.Writer, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("log level %q: want trace, debug, info, warn or error", level)
	}
	if IsTerminal(w) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// IsTerminal reports whether w is a character device (a terminal).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
