// Package roles is Orderly's least-privilege permission model for NATS: the
// subjects each kind of client may publish and subscribe to, for one
// workflow. It is the one place the lists live. The embedded server
// (cmd/worker) is configured from it; the NATS configuration of deploy/k8s
// and the "Permissions" section of docs/operations.md are checked against it by tests,
// so they cannot drift.
//
// Three roles:
//
//   - Producer publishes events and reads statuses, states and job id
//     claims (and, for a duplicate, the stored original): everything
//     enqueue needs to publish (with or without --wait) and for status and
//     watch. It schedules delayed events and recurring schedules, cancels
//     and removes them, and writes the records of delayed events that
//     cancels and workers meet at (job bucket keys "sched.*"). It cannot
//     write a timer, a status, a state, a job claim or a dead letter, nor
//     publish what a schedule fires.
//   - Operator is a producer that may also list and replay dead letters.
//     Producers read the inventory (counts and lists of keys by state,
//     how many dead letters wait) and the workflows' descriptions.
//   - Worker is what the worker runtime needs, and no more: it provisions and
//     reads its workflow's streams, consumer and buckets, writes states,
//     statuses, timers and dead letters, but publishes no event, and
//     writes nothing where a schedule fires.
//
// Producers and operators receive replies on _INBOX.>, the NATS default.
// The worker receives its replies and its pulled events under its own
// prefix, WorkerInbox, so that no producer can read them, and the
// announcements of new leaders of its partitions' consumers.
//
// A stream, bucket or JetStream call added to package queue needs its
// subjects here too: the TestForgery tests of cmd/enqueue run the order
// workflow and enqueue with these lists alone, and fail on any permissions
// violation.
package roles

import (
	"fmt"
	"strings"
)

// Role names a set of permissions.
type Role string

// The roles.
const (
	Producer Role = "producer" // publish events, read statuses and states
	Operator Role = "operator" // a producer that also lists and replays dead letters
	Worker   Role = "worker"   // what the worker runtime needs
)

// All lists the roles.
func All() []Role { return []Role{Producer, Operator, Worker} }

// WorkerInbox is the inbox prefix of the worker's connections
// (queue.Config.InboxPrefix): the Worker role may subscribe to nothing else.
const WorkerInbox = "_INBOX_orderly_worker"

// Permissions are the subjects a role may publish and subscribe to, NATS
// wildcards allowed; everything else is refused by the server.
type Permissions struct {
	Publish, Subscribe []string
}

// For returns role's permissions for workflow (a valid workflow name).
func For(role Role, workflow string) (Permissions, error) {
	if workflow == "" || strings.ContainsAny(workflow, ".*> \t") {
		return Permissions{}, fmt.Errorf("roles: bad workflow name %q", workflow)
	}
	n := names(workflow)
	producer := Permissions{
		Publish: []string{
			"orderly.events." + workflow + ".*",
			api + "STREAM.INFO." + n.state,
			api + "DIRECT.GET." + n.state + ".>",
			// A job id's claim, and the original of a duplicate the
			// stream found: refusing a reused id before storing it; the
			// claims of many ids at once (PublishAsync's look-ups).
			api + "DIRECT.GET." + n.jobs + ".>",
			api + "DIRECT.GET." + n.jobs,
			api + "STREAM.MSG.GET." + n.events,
			// Delayed events (at.<key>.<jobkey>) and recurring schedules
			// (every.<name>), not what they fire (fired.>): the server
			// writes that.
			"orderly.schedules." + workflow + ".at.*.*",
			"orderly.schedules." + workflow + ".every.*",
			// The record of a delayed event: scheduled, then cancelled.
			"$KV." + n.jobsBucket + ".sched.*",
			// Finding a schedule, deleting it (cancel, schedule rm), and
			// listing them through a short-lived consumer.
			api + "STREAM.MSG.GET." + n.schedules,
			api + "STREAM.MSG.DELETE." + n.schedules,
			api + "CONSUMER.CREATE." + n.schedules + ".>",
			api + "CONSUMER.MSG.NEXT." + n.schedules + ".*",
			api + "CONSUMER.DELETE." + n.schedules + ".*",
			// The status history (enqueue history, watch, --wait): where
			// the stream ends, and short-lived ordered consumers.
			api + "STREAM.INFO." + n.history,
			api + "CONSUMER.CREATE." + n.history + ".>",
			api + "CONSUMER.MSG.NEXT." + n.history + ".*",
			api + "CONSUMER.DELETE." + n.history + ".*",
			// The inventory (enqueue stats, keys, stuck): counts and
			// lists, and the workflows' descriptions.
			api + "DIRECT.GET." + n.index,
			api + "DIRECT.GET." + n.index + ".>",
			api + "DIRECT.GET." + workflowsStream,
			api + "DIRECT.GET." + workflowsStream + ".$KV." + workflowsBucket + "." + workflow,
			// How many dead letters wait (enqueue stats), not what they are.
			api + "STREAM.INFO." + n.dlq,
		},
		Subscribe: []string{
			"orderly.status." + workflow + ".>", // > as well as *: nats sub 'orderly.status.order.>'
			"_INBOX.>",
		},
	}
	switch role {
	case Producer:
		return producer, nil
	case Operator:
		op := producer
		op.Publish = append(op.Publish[:len(op.Publish):len(op.Publish)],
			api+"STREAM.MSG.GET."+n.dlq,
			api+"STREAM.MSG.DELETE."+n.dlq,
		)
		return op, nil
	case Worker:
		pub := []string{
			"orderly.status." + workflow + ".*",
			// <kind>.<key> only: fired timers (fired.<kind>.<key>) are the
			// server's to write.
			"orderly.timers." + workflow + ".*.*",
			"orderly.dlq." + workflow + ".*",
			"$KV." + n.stateBucket + ".>",
			"$KV." + n.membersBucket + ".>",
			"$KV." + n.jobsBucket + ".>",
			// The inventory's entries, and the workflow's description.
			"orderly.index." + workflow + ".>",
			"$KV." + workflowsBucket + "." + workflow,
		}
		for _, s := range []string{n.events, n.timers, n.schedules, n.dlq, n.index, n.state, n.members, n.jobs, n.history, workflowsStream} {
			pub = append(pub, api+"STREAM.INFO."+s, api+"STREAM.CREATE."+s, api+"STREAM.UPDATE."+s)
		}
		pub = append(pub,
			// Account limits, read when a bucket is created.
			api+"INFO",
			// The partition consumers: create or update, read, pull,
			// acknowledge, rewind, unpin.
			api+"CONSUMER.CREATE."+n.events+".>",
			api+"CONSUMER.INFO."+n.events+".*",
			api+"CONSUMER.MSG.NEXT."+n.events+".*",
			api+"CONSUMER.RESET."+n.events+".*",
			api+"CONSUMER.UNPIN."+n.events+".*",
			"$JS.ACK."+n.events+".>",
			// Sweeping events no partition delivers (a wildcard for a
			// key) to the dead letters.
			api+"STREAM.MSG.GET."+n.events,
			api+"STREAM.MSG.DELETE."+n.events,
			// State reads, and the claim holding a job id.
			api+"DIRECT.GET."+n.state+".>",
			api+"DIRECT.GET."+n.jobs+".>",
			// Listing the members: a short-lived ordered consumer, with
			// flow control.
			api+"CONSUMER.CREATE."+n.members+".>",
			api+"CONSUMER.DELETE."+n.members+".*",
			"$JS.FC."+n.members+".>",
			// Purging what fired from the schedules stream once the
			// events stream has it.
			api+"STREAM.PURGE."+n.schedules,
			// Announcing delayed events as they are scheduled and
			// cancelled: a durable consumer of their records in the job
			// bucket, and a look at the schedule a record names.
			api+"CONSUMER.CREATE."+n.jobs+".>",
			api+"CONSUMER.INFO."+n.jobs+".*",
			api+"CONSUMER.MSG.NEXT."+n.jobs+".*",
			api+"CONSUMER.UNPIN."+n.jobs+".*",
			"$JS.ACK."+n.jobs+".>",
			api+"STREAM.MSG.GET."+n.schedules,
			// Listing the pending wake-ups at start: a short-lived
			// consumer of the timers stream.
			api+"CONSUMER.CREATE."+n.timers+".>",
			api+"CONSUMER.MSG.NEXT."+n.timers+".*",
			api+"CONSUMER.DELETE."+n.timers+".*",
			// The status history: deleted when turned off
			// (--history-per-key 0), and read by the web console through
			// short-lived ordered consumers.
			api+"STREAM.DELETE."+n.history,
			api+"CONSUMER.CREATE."+n.history+".>",
			api+"CONSUMER.MSG.NEXT."+n.history+".*",
			api+"CONSUMER.DELETE."+n.history+".*",
			// The inventory: removing entries (a purge of one subject, a
			// delete by sequence), reading a key's for a repair; reading
			// the workflow's description before writing it again.
			api+"STREAM.PURGE."+n.index,
			api+"STREAM.MSG.DELETE."+n.index,
			api+"DIRECT.GET."+n.index,
			// Entering the keys of the state bucket into a new inventory:
			// listing them through a short-lived ordered consumer.
			api+"CONSUMER.CREATE."+n.state+".>",
			api+"CONSUMER.DELETE."+n.state+".*",
			"$JS.FC."+n.state+".>",
			api+"DIRECT.GET."+workflowsStream+".$KV."+workflowsBucket+"."+workflow,
		)
		return Permissions{Publish: pub, Subscribe: []string{
			WorkerInbox + ".>",
			// A new leader of a partition's consumer: the partition rewinds.
			"$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED." + n.events + ".*",
		}}, nil
	}
	return Permissions{}, fmt.Errorf("roles: unknown role %q", role)
}

const api = "$JS.API."

// The bucket every workflow's workers describe it in, and its stream.
const (
	workflowsBucket = "orderly_workflows"
	workflowsStream = "KV_" + workflowsBucket
)

type streams struct {
	events, timers, schedules, dlq, index, state, members, jobs string
	history                                                     string
	stateBucket, membersBucket, jobsBucket                      string
}

// names of a workflow's streams and buckets, as package queue makes them.
func names(workflow string) streams {
	w := strings.ToUpper(workflow)
	return streams{
		events:        "ORDERLY_EVENTS_" + w,
		timers:        "ORDERLY_TIMERS_" + w,
		schedules:     "ORDERLY_SCHEDULES_" + w,
		dlq:           "ORDERLY_DLQ_" + w,
		index:         "ORDERLY_INDEX_" + w,
		state:         "KV_orderly_state_" + workflow,
		members:       "KV_orderly_members_" + workflow,
		stateBucket:   "orderly_state_" + workflow,
		membersBucket: "orderly_members_" + workflow,
		jobs:          "KV_orderly_jobs_" + workflow,
		jobsBucket:    "orderly_jobs_" + workflow,
		history:       "ORDERLY_HISTORY_" + w,
	}
}

// Conf renders the three roles' permissions for workflow as nats.conf
// variables, PRODUCER, OPERATOR and WORKER, each line indented by indent:
// put them in an authorization block and give each user its role with
// "permissions: $PRODUCER" (and so on).
func Conf(workflow, indent string) (string, error) {
	var b strings.Builder
	for _, r := range All() {
		p, err := For(r, workflow)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s%s = {\n", indent, strings.ToUpper(string(r)))
		for _, l := range []struct {
			name string
			subs []string
		}{{"publish", p.Publish}, {"subscribe", p.Subscribe}} {
			fmt.Fprintf(&b, "%s  %s: [\n", indent, l.name)
			for _, s := range l.subs {
				fmt.Fprintf(&b, "%s    %q\n", indent, s)
			}
			fmt.Fprintf(&b, "%s  ]\n", indent)
		}
		fmt.Fprintf(&b, "%s}\n", indent)
	}
	return b.String(), nil
}
