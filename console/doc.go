// Package console is Orderly's web console: the pages a worker serves at /
// on its --http address for the people who run it.
//
// It shows, per workflow, the lag, the events stored and handled per
// second, the dead letters, the replicas and the partitions each is
// assigned, and the state diagram drawn from the definition; a page per
// key with its state, data, pending slow work, delayed events and a
// timeline of its statuses that grows as they are published; the dead
// letters, each with a replay button; the recurring schedules. Live parts
// are server-sent event streams, bounded in number and in what each holds
// for a slow browser, and all ended by Close.
//
// Write actions (send an event, replay a dead letter, cancel a delayed
// event, add or remove a schedule) need Config.Token, or, with no token
// set, a request that arrived on a loopback address; every write form
// carries a CSRF key. Everything a producer chose (keys, data, event names,
// reasons) is escaped by html/template or set as text by the page's script,
// and pages forbid inline script.
//
// The console acts through Config.Client, whose NATS user needs the
// operator role where the server enforces the permission roles; the
// streams' figures it reads through Config.Streams, a client on the
// worker's own connection. Given Config.Refusals, fed by the connection's error handler,
// a page says at once and plainly what the server refused its user.
//
// The pages, style sheet and script are embedded (no build step, nothing
// loaded from elsewhere); the diagram is SVG drawn here.
//
//	refusals := console.NewRefusals()
//	// opnc: a connection as an operator, with
//	// nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { refusals.Note(err) })
//	cl, err := client.New(opnc, client.Config{})
//	wcl, err := client.New(nc, client.Config{}) // on the worker's connection
//	...
//	c, err := console.New(console.Config{
//		Client:    cl,
//		Streams:   wcl,
//		Refusals:  refusals,
//		Runtime:   w, // the *worker.Worker
//		Workflows: []console.Workflow{console.WorkflowOf(machine)},
//		Token:     os.Getenv("ORDERLY_CONSOLE_TOKEN"),
//	})
//	...
//	defer c.Close()
//	http.Handle("/", c)
package console
