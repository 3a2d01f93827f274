package soak

import (
	"flag"
	"fmt"
	"io"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerCommand is the argument that makes the soak binary a nats-server:
// `soak nats-server -c FILE`, nats-server's own main on the version this
// module requires, for machines with no nats-server of that version.
const ServerCommand = "nats-server"

// RunServer runs a nats-server as nats-server's main does, until it shuts
// down (on SIGTERM, SIGINT or SIGKILL; SIGHUP reloads its configuration).
func RunServer(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(ServerCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts, err := server.ConfigureOptions(fs, args, server.PrintServerAndExit, fs.Usage, server.PrintTLSHelpAndDie)
	if err != nil {
		return fmt.Errorf("nats-server: %w", err)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("nats-server: %w", err)
	}
	s.ConfigureLogger()
	if err := server.Run(s); err != nil {
		return fmt.Errorf("nats-server: %w", err)
	}
	s.WaitForShutdown()
	return nil
}
