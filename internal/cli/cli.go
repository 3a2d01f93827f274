// Package cli holds what Orderly's two binaries share: connection flags,
// environment variables and logging set-up.
package cli

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/orderly-dev/orderly/internal/buildinfo"
	"github.com/orderly-dev/orderly/internal/queue"
)

// Credentials say who a connection is: a user and password, a token, an
// NKey seed file or a credentials file.
type Credentials struct {
	User, Password, Token, NKey, Creds string
}

// credential is one flag of Credentials.
type credential struct {
	name string
	v    *string
	help string
}

func (c *Credentials) flags() []credential {
	return []credential{
		{"user", &c.User, "NATS user name"},
		{"password", &c.Password, "NATS password"},
		{"token", &c.Token, "NATS token"},
		{"nkey", &c.NKey, "NATS NKey seed file"},
		{"creds", &c.Creds, "NATS credentials file (read again on each reconnect)"},
	}
}

// Register adds the flags of the credentials named (user, password, token,
// nkey, creds; none named: all of them) to fs as --<prefix><name>, each
// with its help after whose: the credentials of a second connection beside
// ConnFlags' (--console-user, ...).
func (c *Credentials) Register(fs *pflag.FlagSet, prefix, whose string, names ...string) {
	for _, f := range c.flags() {
		if len(names) > 0 && !slices.Contains(names, f.name) {
			continue
		}
		help := f.help
		if whose != "" {
			help = whose + ": " + help
		}
		fs.StringVar(f.v, prefix+f.name, "", help)
	}
}

// Given reports whether any credential is set.
func (c Credentials) Given() bool { return c != Credentials{} }

// Validate returns a *UsageError for credentials that cannot work: a user
// without a password or the reverse, or two ways of saying who the
// connection is. prefix is that of Register.
func (c Credentials) Validate(prefix string) error {
	if (c.User == "") != (c.Password == "") {
		return Usagef("--%suser and --%spassword go together", prefix, prefix)
	}
	var given []string
	for _, f := range c.flags() {
		if *f.v != "" && f.name != "password" {
			given = append(given, "--"+prefix+f.name)
		}
	}
	if len(given) > 1 {
		return Usagef("%s: give one way to authenticate", strings.Join(given, " and "))
	}
	return nil
}

// ConnFlags are the flags that say how to reach NATS; every subcommand of
// both binaries takes them.
type ConnFlags struct {
	URL string
	Credentials
	CA, Cert, Key string
	// ConnectTimeout is how long to wait for a server at start; 0: wait
	// until interrupted. A value set before Register is the flag's
	// default; none: DefaultConnectTimeout.
	ConnectTimeout time.Duration
}

// DefaultConnectTimeout is --connect-timeout's default unless the binary
// sets its own.
const DefaultConnectTimeout = 5 * time.Second

// Register adds the flags to fs.
func (f *ConnFlags) Register(fs *pflag.FlagSet, urlHelp string) {
	fs.StringVar(&f.URL, "nats-url", "", urlHelp+" (env NATS_URL; comma-separated for a cluster)")
	f.Credentials.Register(fs, "", "")
	fs.StringVar(&f.CA, "tls-ca", "", "CA certificate file to verify the server")
	fs.StringVar(&f.Cert, "tls-cert", "", "client certificate file")
	fs.StringVar(&f.Key, "tls-key", "", "client key file")
	def := f.ConnectTimeout
	if def <= 0 {
		def = DefaultConnectTimeout
	}
	fs.DurationVar(&f.ConnectTimeout, "connect-timeout", def, "how long to wait for a NATS server at start, retrying, before giving up (0: wait until interrupted); wrong credentials or TLS fail at once")
}

// Validate returns a *UsageError for a flag value that cannot work.
func (f *ConnFlags) Validate() error {
	if f.ConnectTimeout < 0 {
		return Usagef("--connect-timeout %s: want 0 (wait until interrupted) or more", f.ConnectTimeout)
	}
	return nil
}

// Config turns the flags into a queue.Config.
func (f *ConnFlags) Config(name string, log *zerolog.Logger) queue.Config {
	var urls []string
	for _, u := range strings.Split(f.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	timeout := f.ConnectTimeout
	if timeout == 0 {
		timeout = -1 // queue: no bound but the context
	}
	return queue.Config{
		URLs: urls, Name: name,
		User: f.User, Password: f.Password, Token: f.Token,
		NKeySeedFile: f.NKey, CredsFile: f.Creds,
		CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key,
		ConnectTimeout: timeout,
		Logger:         log,
	}
}

// As returns the flags with the credentials c instead of their own: a
// second connection to the same servers (URLs, TLS, connect timeout) as
// another user.
func (f ConnFlags) As(c Credentials) ConnFlags {
	f.Credentials = c
	return f
}

// NoEnv is the annotation of a flag that ApplyEnv leaves alone (--version:
// an ORDERLY_VERSION set for another purpose must not turn a worker into a
// version printer).
const NoEnv = "orderly/noenv"

// fromEnv is the annotation in which ApplyEnv records the variable a flag
// was set from.
const fromEnv = "orderly/env"

// EnvNames are the environment variables ApplyEnv reads for fl, the first
// one set winning: ORDERLY_<FLAG> (dashes as underscores) and, for
// --nats-url, NATS_URL; none for a flag annotated NoEnv. The generated
// docs/configuration.md lists them from here.
func EnvNames(fl *pflag.Flag) []string {
	if fl.Annotations[NoEnv] != nil {
		return nil
	}
	names := []string{"ORDERLY_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))}
	if fl.Name == "nats-url" {
		names = append(names, "NATS_URL")
	}
	return names
}

// ApplyEnv sets every flag not given on the command line from its
// environment variables (EnvNames): ORDERLY_<FLAG>, and --nats-url also
// NATS_URL. The command line wins over the environment. Origin says
// afterwards where a flag's value came from.
func ApplyEnv(fs *pflag.FlagSet, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || err != nil {
			return
		}
		for _, name := range EnvNames(fl) {
			v := getenv(name)
			if v == "" {
				continue
			}
			if e := fs.Set(fl.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
				return
			}
			_ = fs.SetAnnotation(fl.Name, fromEnv, []string{name})
			return
		}
	})
	return err
}

// Origin says where flag name's value came from after ApplyEnv: "--name"
// (the command line), the environment variable's name, or "" (the
// default).
func Origin(fs *pflag.FlagSet, name string) string {
	fl := fs.Lookup(name)
	switch {
	case fl == nil || !fl.Changed:
		return ""
	case fl.Annotations[fromEnv] != nil:
		return fl.Annotations[fromEnv][0]
	}
	return "--" + name
}

// VersionFlag adds --version to fs (never read from the environment).
func VersionFlag(fs *pflag.FlagSet) *bool {
	v := fs.Bool("version", false, "print the version, VCS revision and Go version, and exit")
	_ = fs.SetAnnotation("version", NoEnv, []string{"true"})
	return v
}

// PrintVersion writes the line --version prints: the program's name and
// its build (see buildinfo).
func PrintVersion(w io.Writer, program string) {
	fmt.Fprintln(w, program, buildinfo.Get())
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
