package main

import (
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/roles"
	"github.com/orderly-dev/orderly/order"
)

// roleFlags name the embedded server's users besides the worker's own
// (--user, --password): one per role of package roles.
type roleFlags struct {
	producerUser, producerPassword string
	operatorUser, operatorPassword string
}

func (r *roleFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&r.producerUser, "producer-user", "", "embedded server with --user: a user with the producer role (publish events, read statuses and states)")
	fs.StringVar(&r.producerPassword, "producer-password", "", "the producer user's password")
	fs.StringVar(&r.operatorUser, "operator-user", "", "embedded server with --user: a user with the operator role (a producer that may also list and replay dead letters)")
	fs.StringVar(&r.operatorPassword, "operator-password", "", "the operator user's password")
}

// validate refuses half a user, a role user without the worker's own, and
// one name for two roles.
func (r *roleFlags) validate(conn cli.ConnFlags) error {
	seen := map[string]string{conn.User: "--user"}
	for _, u := range []struct{ flag, user, password string }{
		{"--producer-user", r.producerUser, r.producerPassword},
		{"--operator-user", r.operatorUser, r.operatorPassword},
	} {
		switch {
		case u.user == "" && u.password == "":
			continue
		case u.user == "" || u.password == "":
			return cli.Usagef("%s and its password go together", u.flag)
		case conn.User == "" || conn.Password == "":
			return cli.Usagef("%s needs --user and --password, the worker's own user", u.flag)
		case seen[u.user] != "":
			return cli.Usagef("%s %q: the same user as %s", u.flag, u.user, seen[u.user])
		}
		seen[u.user] = u.flag
	}
	return nil
}

// users are the embedded server's users: none without --user (an open
// server); otherwise the worker's own user with the worker role, and the
// producer and operator users given, each with its role. A role without a
// user is logged: nobody can do what it allows.
func (r *roleFlags) users(conn cli.ConnFlags, log zerolog.Logger) ([]embedded.User, error) {
	if conn.User == "" {
		return nil, nil
	}
	var users []embedded.User
	for _, u := range []struct {
		role           roles.Role
		user, password string
		flags, missing string
	}{
		{roles.Worker, conn.User, conn.Password, "", ""},
		{roles.Producer, r.producerUser, r.producerPassword, "--producer-user and --producer-password", "no client but the worker can connect to publish events or read states"},
		{roles.Operator, r.operatorUser, r.operatorPassword, "--operator-user and --operator-password", "nobody can list or replay dead letters"},
	} {
		if u.user == "" {
			log.Warn().Str("role", string(u.role)).Msgf("start-up: the embedded server gives each user only its role's permissions, and no user has this role (%s): %s", u.flags, u.missing)
			continue
		}
		p, err := roles.For(u.role, order.Workflow)
		if err != nil {
			return nil, err
		}
		users = append(users, embedded.User{Name: u.user, Password: u.password, Publish: p.Publish, Subscribe: p.Subscribe})
	}
	return users, nil
}
