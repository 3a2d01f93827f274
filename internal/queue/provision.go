package queue

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/orderly-dev/orderly/contract"
)

// Spec describes the JetStream resources of one workflow. A zero field means
// its default.
type Spec struct {
	// Workflow names the workflow: a subject token of a-z 0-9 - _. Required.
	Workflow string
	// Partitions is the number of partitions of the events stream, each with
	// its own consumer; fixed when the stream is created. Default: 16.
	// Provisioning an existing stream keeps its count, whatever this says.
	Partitions int
	// QueueLimit is the most events stored and not yet processed; past it a
	// publish fails at once with ErrQueueFull. Default: 1,000,000.
	QueueLimit int64
	// MaxPayload is the largest event message in bytes. Default: 64 KiB.
	MaxPayload int32
	// DuplicateWindow is how long the events stream itself drops a
	// publish whose job id it stored before (kept in the server's memory,
	// lost on a restart). Default: 2 minutes, and never more than
	// DedupeWindow.
	DuplicateWindow time.Duration
	// DedupeWindow is how long a job id taken by a worker stays claimed in
	// the job bucket: within it the id is applied at most once, across
	// restarts and replicas, and reusing it for another key or event is
	// refused. Default: 24h.
	DedupeWindow time.Duration
	// Replicas of every stream and bucket: 1 on a single server, 3 on a
	// cluster. Default: 1.
	Replicas int
	// AckWait is how long a delivered event may stay unacknowledged before
	// JetStream delivers it again. Default: 30s.
	AckWait time.Duration
	// MaxDeliver is how many deliveries of an event whose key's state cannot
	// be loaded or encoded (a fault of the data, not of the broker) the
	// worker makes before it dead-letters the event (max_deliveries). The
	// partition consumers themselves redeliver without limit: at a limit of
	// its own JetStream would stop delivering an event for good, leaving it
	// neither applied nor dead-lettered. Default: 10.
	MaxDeliver int
	// MaxAckPending bounds the unacknowledged events of one partition's
	// consumer. Default: 1024.
	MaxAckPending int
	// DeadLetterMaxAge is how long dead letters are kept. Default: 14 days.
	DeadLetterMaxAge time.Duration
	// DeadLetterMaxBytes is the most bytes the dead-letter stream holds,
	// reserved from the server's store when the stream is made. Past it a
	// new dead letter is refused (discard-new), never an old one dropped:
	// the event stays in the events stream, redelivered, until replaying or
	// deleting dead letters makes room. Default: 256 MiB.
	DeadLetterMaxBytes int64
	// TimersMaxBytes is the most bytes the timers stream holds. Default: 0,
	// no limit of its own (only the server's store): message schedules rule
	// out discard-new, so at a limit JetStream would drop the oldest pending
	// timers, timeouts that then never fire. A full store instead makes
	// scheduling fail, and the worker retries until it works. A positive
	// value sets the limit, with that consequence.
	TimersMaxBytes int64
	// PinnedTTL is how long a partition stays pinned to a client that has
	// stopped pulling (a dead worker) before another may take it.
	// Default: 5s.
	PinnedTTL time.Duration
	// MemberTTL is how long a worker stays a member of the workflow's group
	// without a heartbeat: what bounds how soon the others take over the
	// partitions of a worker that died. Default: 2s.
	MemberTTL time.Duration
	// HistoryPerKey is how many statuses of each key the history stream
	// keeps, the oldest dropped first. Default: 100. Negative: no history;
	// Provision deletes the history stream if there is one, since it would
	// otherwise go on storing every status.
	HistoryPerKey int64
	// HistoryMaxAge is how long the history stream keeps a status.
	// Default: 7 days.
	HistoryMaxAge time.Duration
	// NoIndex provisions no inventory stream (worker.Config.DisableInventory);
	// one there already is left as it is.
	NoIndex bool
	// Unpinned provisions consumers without a pinned priority group, so that
	// several clients can pull one partition at once (what
	// worker.Config.SharedConsumers asks for); per-key order then rests on
	// nothing but compare-and-set.
	Unpinned bool
}

// DefaultMemberTTL is Spec.MemberTTL's default. A worker heartbeats five
// times per MemberTTL, so a live one misses it only when four heartbeats
// in a row are late; a dead one is noticed between 1.6 and 2.4 s after it
// died (its last heartbeat plus the TTL, plus the others' next look at
// the group).
const DefaultMemberTTL = 2 * time.Second

// PriorityGroup is the pinned priority group of every partition consumer:
// JetStream delivers a partition to one client of the group at a time.
const PriorityGroup = "orderly"

// WithDefaults returns s with every zero field set to its default.
func (s Spec) WithDefaults() Spec {
	if s.Partitions <= 0 {
		s.Partitions = 16
	}
	if s.QueueLimit <= 0 {
		s.QueueLimit = 1_000_000
	}
	if s.MaxPayload <= 0 {
		s.MaxPayload = 64 << 10
	}
	if s.DedupeWindow <= 0 {
		s.DedupeWindow = 24 * time.Hour
	}
	if s.DuplicateWindow <= 0 {
		s.DuplicateWindow = 2 * time.Minute
	}
	// Past the dedupe window an id is free again: the stream must not
	// still drop it.
	s.DuplicateWindow = min(s.DuplicateWindow, s.DedupeWindow)
	if s.Replicas <= 0 {
		s.Replicas = 1
	}
	if s.AckWait <= 0 {
		s.AckWait = 30 * time.Second
	}
	if s.MaxDeliver <= 0 {
		s.MaxDeliver = 10
	}
	if s.MaxAckPending <= 0 {
		s.MaxAckPending = 1024
	}
	if s.DeadLetterMaxAge <= 0 {
		s.DeadLetterMaxAge = 14 * 24 * time.Hour
	}
	if s.DeadLetterMaxBytes <= 0 {
		s.DeadLetterMaxBytes = 256 << 20
	}
	if s.PinnedTTL <= 0 {
		s.PinnedTTL = 5 * time.Second
	}
	if s.MemberTTL <= 0 {
		s.MemberTTL = DefaultMemberTTL
	}
	if s.HistoryPerKey == 0 {
		s.HistoryPerKey = DefaultHistoryPerKey
	}
	if s.HistoryMaxAge <= 0 {
		s.HistoryMaxAge = DefaultHistoryMaxAge
	}
	return s
}

// Defaults of the status history.
const (
	DefaultHistoryPerKey = 100
	DefaultHistoryMaxAge = 7 * 24 * time.Hour
)

// History reports whether the spec keeps a status history.
func (s Spec) History() bool { return s.HistoryPerKey >= 0 }

// Validate reports what is wrong with a spec (after WithDefaults).
func (s Spec) Validate() error {
	if err := contract.ValidateWorkflow(s.Workflow); err != nil {
		return err
	}
	if s.Partitions > 1024 {
		return fmt.Errorf("queue: %d partitions: at most 1024", s.Partitions)
	}
	if s.Replicas > 5 {
		return fmt.Errorf("queue: %d replicas: at most 5", s.Replicas)
	}
	if s.DedupeWindow < time.Second {
		return fmt.Errorf("queue: dedupe window %s: at least 1s", s.DedupeWindow)
	}
	if s.History() && s.HistoryMaxAge < time.Second {
		return fmt.Errorf("queue: history max age %s: at least 1s", s.HistoryMaxAge)
	}
	return nil
}

// Provisioned says what Provision found and did.
type Provisioned struct {
	// Spec is the effective spec: Partitions is the existing stream's count
	// when the stream was already there.
	Spec Spec
	// Created, Updated and Deleted name the resources created, changed or
	// deleted (the history stream, when the spec keeps no history); all
	// are empty when everything was already as specified.
	Created, Updated, Deleted []string
}

// Changed reports whether Provision created, updated or deleted anything.
func (p Provisioned) Changed() bool { return len(p.Created)+len(p.Updated)+len(p.Deleted) > 0 }

// Provision creates the workflow's events stream, one durable pull consumer
// per partition, the state bucket, the dead-letter stream, the status
// history stream and the inventory (and the workflows bucket all
// workflows share), or updates them where their configuration differs
// from spec. It is idempotent and safe to
// run from many replicas at once: a second run changes nothing.
func (c *Conn) Provision(ctx context.Context, spec Spec) (Provisioned, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return Provisioned{}, err
	}
	var p Provisioned

	// The partition count is part of the stream's subject transform; an
	// existing stream's count wins, so replicas started with another setting
	// still agree on which key lives in which partition.
	var legacyUntil time.Time
	if info, err := c.js.Stream(ctx, contract.EventsStream(spec.Workflow)); err == nil {
		if n, ok := partitionsOf(info.CachedInfo().Config); ok {
			spec.Partitions = n
		}
		if timersInClientForm(info.CachedInfo().Config) {
			// Made by an earlier version, which stored fired timers under
			// the subjects of client events: those still stored stay
			// timers (see legacyTimer), those fired from now on do not
			// come that way. The margin covers the update's own delay.
			legacyUntil = info.CachedInfo().TimeStamp.Add(legacyMargin)
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return p, fmt.Errorf("queue: provision %s: %w", spec.Workflow, err)
	}
	p.Spec = spec

	// First, so that the statuses of the first events are kept.
	if err := c.ensureHistory(ctx, &p, spec); err != nil {
		return p, err
	}
	if err := c.ensureStream(ctx, &p, timersStreamConfig(spec)); err != nil {
		return p, err
	}
	if err := c.ensureStream(ctx, &p, schedulesStreamConfig(spec)); err != nil {
		return p, err
	}
	events := eventsStreamConfig(spec)
	if !legacyUntil.IsZero() {
		events.Metadata = map[string]string{metaLegacyTimersUntil: legacyUntil.UTC().Format(time.RFC3339Nano)}
	}
	if err := c.ensureStream(ctx, &p, events); err != nil {
		return p, err
	}
	if err := c.ensureStream(ctx, &p, dlqStreamConfig(spec)); err != nil {
		return p, err
	}
	if !spec.NoIndex {
		if err := c.ensureStream(ctx, &p, indexStreamConfig(spec)); err != nil {
			return p, err
		}
	}
	for i := range spec.Partitions {
		if err := c.ensureConsumer(ctx, &p, contract.EventsStream(spec.Workflow), consumerConfig(spec, i)); err != nil {
			return p, err
		}
	}
	if err := c.ensureBucket(ctx, &p, jetstream.KeyValueConfig{
		Bucket:      contract.StateBucket(spec.Workflow),
		Description: "Orderly state of workflow " + spec.Workflow,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    spec.Replicas,
	}); err != nil {
		return p, err
	}
	if err := c.ensureBucket(ctx, &p, jobsBucketConfig(spec)); err != nil {
		return p, err
	}
	if err := c.ensureConsumer(ctx, &p, jobsStream(spec.Workflow), announceConsumerConfig(spec)); err != nil {
		return p, err
	}
	if err := c.ensureBucket(ctx, &p, workflowsBucketConfig(spec.Replicas)); err != nil {
		return p, err
	}
	if err := c.ensureBucket(ctx, &p, jetstream.KeyValueConfig{
		Bucket:      contract.MembersBucket(spec.Workflow),
		Description: "Orderly workers of workflow " + spec.Workflow,
		History:     1,
		TTL:         spec.MemberTTL,
		Storage:     jetstream.FileStorage, // must outlive a server restart
		Replicas:    spec.Replicas,
	}); err != nil {
		return p, err
	}
	return p, nil
}

func eventsStreamConfig(s Spec) jetstream.StreamConfig {
	src := contract.EventSubject(s.Workflow, "*")
	return jetstream.StreamConfig{
		Name:        contract.EventsStream(s.Workflow),
		Description: "Orderly events of workflow " + s.Workflow,
		Subjects:    []string{src},
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      src,
			Destination: contract.Namespace + ".events." + s.Workflow + ".{{partition(" + strconv.Itoa(s.Partitions) + ",1)}}.{{wildcard(1)}}",
		},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Discard:    jetstream.DiscardNew,
		MaxMsgs:    s.QueueLimit,
		MaxBytes:   -1,
		MaxAge:     0,
		MaxMsgSize: s.MaxPayload,
		Duplicates: s.DuplicateWindow,
		Replicas:   s.Replicas,
		// The ticks of periodic events carry a TTL of their interval, so
		// that those nobody takes while no worker runs do not pile up.
		AllowMsgTTL: true,
		// Fired timers come in from the timers stream, into the partition of
		// their key: wildcard 2 of the fired subject is the key, hashed as
		// the events transform hashes it. They are stored apart from client
		// events (timerToken), under subjects no client can publish into
		// this stream, and each partition's consumer takes both.
		Sources: []*jetstream.StreamSource{{
			Name: contract.TimersStream(s.Workflow),
			SubjectTransforms: []jetstream.SubjectTransformConfig{{
				Source:      firedSubject(s.Workflow, "*", "*"),
				Destination: contract.Namespace + ".events." + s.Workflow + ".{{partition(" + strconv.Itoa(s.Partitions) + ",2)}}." + timerToken + ".{{wildcard(2)}}",
			}},
		}, schedulesSource(s)},
	}
}

// Stream metadata Orderly keeps on the events stream. Keys starting with
// "orderly." survive every later update Provision makes.
const (
	// metaLegacyTimersUntil: fired timers stored under client subjects up
	// to this time (RFC 3339, the server's clock) are still timers.
	metaLegacyTimersUntil = "orderly.legacy_timers_until"
	metaPrefix            = "orderly."
)

// legacyMargin is how long after the switch to timerToken subjects a timer
// stored the old way is still taken for one: the update of a stream takes
// a moment, and timers may fire meanwhile.
const legacyMargin = 30 * time.Second

// timersInClientForm reports whether cfg is an events stream of an earlier
// version, which sourced fired timers into the subjects of client events.
func timersInClientForm(cfg jetstream.StreamConfig) bool {
	for _, src := range cfg.Sources {
		if src.Name != contract.TimersStream(strings.TrimPrefix(strings.ToLower(cfg.Name), "orderly_events_")) {
			continue // the schedules stream's, which are client events
		}
		for _, tr := range src.SubjectTransforms {
			if strings.HasPrefix(tr.Destination, contract.Namespace+".events.") && !strings.Contains(tr.Destination, "."+timerToken+".") {
				return true
			}
		}
	}
	return false
}

// timersStreamConfig holds scheduled events (JetStream message schedules,
// which cannot live in a discard-new stream like the events one). One
// pending schedule per kind and key: a new one replaces the old.
func timersStreamConfig(s Spec) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        contract.TimersStream(s.Workflow),
		Description: "Orderly timers of workflow " + s.Workflow,
		Subjects:    []string{contract.Namespace + ".timers." + s.Workflow + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld, // message schedules allow no other
		MaxMsgs:     -1,
		MaxBytes:    limit(s.TimersMaxBytes),
		// What fires comes into the events stream, which takes no more
		// (JetStream refuses a source whose limit is above its target's).
		MaxMsgSize:        s.MaxPayload,
		MaxMsgsPerSubject: 1,
		AllowMsgSchedules: true,
		// Periodic schedules give their ticks a TTL (Nats-Schedule-TTL),
		// and Unschedule's placeholder expires.
		AllowMsgTTL: true,
		AllowRollup: true,
		Replicas:    s.Replicas,
	}
}

// headerRoom is what a dead letter may carry beyond an event of MaxPayload
// bytes: Orderly's headers (its reason alone may take 1 KiB).
const headerRoom = 8 << 10

// dlqStreamConfig: discard-new, so that a full dead-letter stream makes
// dead-lettering fail (the event stays deliverable, and the worker says so)
// rather than silently drop the oldest dead letters.
func dlqStreamConfig(s Spec) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        contract.DeadLetterStream(s.Workflow),
		Description: "Orderly dead letters of workflow " + s.Workflow,
		Subjects:    []string{contract.DeadLetterSubject(s.Workflow, "*")},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     -1,
		MaxBytes:    s.DeadLetterMaxBytes,
		MaxAge:      s.DeadLetterMaxAge,
		// The copy holds the event (at most MaxPayload with its headers)
		// and its job id a second time, besides its own headers.
		MaxMsgSize: 2*s.MaxPayload + headerRoom,
		Replicas:   s.Replicas,
	}
}

// historyStreamConfig captures the workflow's statuses, which the worker
// publishes as plain NATS messages (see Conn.PublishStatus): live
// subscribers get them as before, and the stream keeps the newest
// HistoryPerKey of each key (one subject per key) for HistoryMaxAge.
// Discard-old: history is a record of what happened, never a reason to
// refuse a status.
func historyStreamConfig(s Spec) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              contract.HistoryStream(s.Workflow),
		Description:       "Orderly status history of workflow " + s.Workflow,
		Subjects:          []string{contract.StatusSubject(s.Workflow, "")},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardOld,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxAge:            s.HistoryMaxAge,
		MaxMsgsPerSubject: s.HistoryPerKey,
		// No size limit of its own: a status the server carries is stored.
		MaxMsgSize: -1,
		Replicas:   s.Replicas,
	}
}

// errCodeSubjectOverlap is JetStream's error code (nats-server's
// JSStreamSubjectOverlapErr) for a stream whose subjects another stream
// of the account already takes.
const errCodeSubjectOverlap jetstream.ErrorCode = 10065

// ensureHistory makes or updates the history stream, or deletes it when
// the spec keeps no history.
func (c *Conn) ensureHistory(ctx context.Context, p *Provisioned, spec Spec) error {
	if spec.History() {
		err := c.ensureStream(ctx, p, historyStreamConfig(spec))
		if apiErr := (*jetstream.APIError)(nil); errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeSubjectOverlap {
			return fmt.Errorf("%w: another stream already stores %s; remove it, or run without a status history (--history-per-key 0)",
				err, contract.StatusSubject(spec.Workflow, ""))
		}
		return err
	}
	name := contract.HistoryStream(spec.Workflow)
	switch err := c.js.DeleteStream(ctx, name); {
	case err == nil:
		p.Deleted = append(p.Deleted, "stream "+name)
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("queue: delete stream %s (no history): %w", name, err)
	}
	return nil
}

func consumerConfig(s Spec, partition int) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:       consumerName(s.Workflow, partition),
		Description:   fmt.Sprintf("Orderly workflow %s, partition %d", s.Workflow, partition),
		FilterSubject: contract.PartitionSubject(s.Workflow, partition),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.AckWait,
		// Unlimited: the worker decides when an event has been delivered
		// too often (see Spec.MaxDeliver); JetStream's own limit would park
		// the event in the stream for good, undelivered and not dead-lettered.
		MaxDeliver:    -1,
		MaxAckPending: s.MaxAckPending,
		MaxWaiting:    512,
		// 0: the stream's count, which the server keeps the consumer at
		// when the stream's changes (an explicit count above the stream's
		// is refused while the stream is still scaling up).
		Replicas: 0,
	}
	if !s.Unpinned {
		// The fence of partition ownership: whatever the workers believe,
		// the server delivers a partition to one of them at a time.
		c.PriorityPolicy = jetstream.PriorityPolicyPinned
		c.PriorityGroups = []string{PriorityGroup}
		c.PinnedTTL = s.PinnedTTL
	}
	return c
}

var partitionRE = regexp.MustCompile(`\{\{\s*partition\(\s*(\d+)`)

func partitionsOf(cfg jetstream.StreamConfig) (int, bool) {
	if cfg.SubjectTransform == nil {
		return 0, false
	}
	m := partitionRE.FindStringSubmatch(cfg.SubjectTransform.Destination)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil && n > 0
}

// Provisioning reads what is there first and writes only what is missing (a
// create) or differs in a field Orderly sets (an update):
// every replica provisions at every start, and an update of an unchanged
// consumer is still a write the cluster replicates.

// note records what ensure* did to a resource.
func (p *Provisioned) note(existed bool, what string) {
	if existed {
		p.Updated = append(p.Updated, what)
	} else {
		p.Created = append(p.Created, what)
	}
}

func (c *Conn) ensureStream(ctx context.Context, p *Provisioned, want jetstream.StreamConfig) error {
	for attempt := 0; ; attempt++ {
		s, err := c.js.Stream(ctx, want.Name)
		existed := err == nil
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
		case err != nil:
			return fmt.Errorf("queue: stream %s: %w", want.Name, err)
		default:
			have := s.CachedInfo().Config
			if streamMatches(have, want) {
				return nil
			}
			for k, v := range have.Metadata {
				if _, set := want.Metadata[k]; !set && strings.HasPrefix(k, metaPrefix) {
					if want.Metadata == nil {
						want.Metadata = map[string]string{}
					}
					want.Metadata[k] = v
				}
			}
		}
		// Create what was missing, update what differed; never the other way:
		// jetstream's CreateOrUpdate tries an update first, so of two replicas
		// starting together, the second updates the stream the first has just
		// made while the first adds its consumers (nats-server 2.15 races on
		// that; TestProvisionConcurrently).
		if existed {
			_, err = c.js.UpdateStream(ctx, want)
		} else {
			_, err = c.js.CreateStream(ctx, want)
		}
		if err != nil {
			if !existed && attempt == 0 && errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				continue // another replica made it meanwhile: compare with what it made
			}
			return fmt.Errorf("queue: provision stream %s: %w", want.Name, err)
		}
		p.note(existed, "stream "+want.Name)
		return nil
	}
}

// streamMatches compares the fields Orderly sets; the server fills in the rest.
func streamMatches(have, want jetstream.StreamConfig) bool {
	same := have.Description == want.Description &&
		slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention && have.Storage == want.Storage &&
		have.Discard == want.Discard && have.MaxMsgs == want.MaxMsgs &&
		limit(have.MaxBytes) == limit(want.MaxBytes) &&
		have.MaxAge == want.MaxAge && have.MaxMsgSize == want.MaxMsgSize &&
		limit(have.MaxMsgsPerSubject) == limit(want.MaxMsgsPerSubject) &&
		have.Replicas == want.Replicas &&
		(want.Duplicates == 0 || have.Duplicates == want.Duplicates) &&
		have.AllowMsgSchedules == want.AllowMsgSchedules && have.AllowRollup == want.AllowRollup &&
		have.AllowMsgTTL == want.AllowMsgTTL && have.AllowDirect == want.AllowDirect &&
		len(have.Sources) == len(want.Sources)
	if !same {
		return false
	}
	for i, w := range want.Sources {
		h := have.Sources[i]
		if h.Name != w.Name || !slices.Equal(h.SubjectTransforms, w.SubjectTransforms) {
			return false
		}
	}
	for k, v := range want.Metadata {
		if have.Metadata[k] != v {
			return false
		}
	}
	if (have.SubjectTransform == nil) != (want.SubjectTransform == nil) {
		return false
	}
	return want.SubjectTransform == nil || *have.SubjectTransform == *want.SubjectTransform
}

// limit treats 0 and -1 alike: the server stores "no limit" as -1.
func limit[T int32 | int64](n T) T {
	if n == 0 {
		return -1
	}
	return n
}

func (c *Conn) ensureConsumer(ctx context.Context, p *Provisioned, stream string, want jetstream.ConsumerConfig) error {
	cons, err := c.js.Consumer(ctx, stream, want.Durable)
	existed := err == nil
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return fmt.Errorf("queue: consumer %s: %w", want.Durable, err)
	case consumerMatches(cons.CachedInfo().Config, want):
		return nil
	}
	// Create or update in one request: the server settles a race between
	// replicas.
	if _, err := c.js.CreateOrUpdateConsumer(ctx, stream, want); err != nil {
		return fmt.Errorf("queue: provision consumer %s: %w", want.Durable, err)
	}
	p.note(existed, "consumer "+want.Durable)
	return nil
}

// consumerMatches compares the fields Orderly sets.
func consumerMatches(have, want jetstream.ConsumerConfig) bool {
	return have.Description == want.Description && have.FilterSubject == want.FilterSubject &&
		slices.Equal(have.FilterSubjects, want.FilterSubjects) &&
		have.DeliverPolicy == want.DeliverPolicy && have.AckPolicy == want.AckPolicy &&
		have.AckWait == want.AckWait && have.MaxDeliver == want.MaxDeliver &&
		have.MaxAckPending == want.MaxAckPending && have.MaxWaiting == want.MaxWaiting &&
		have.Replicas == want.Replicas &&
		have.PriorityPolicy == want.PriorityPolicy && slices.Equal(have.PriorityGroups, want.PriorityGroups) &&
		have.PinnedTTL == want.PinnedTTL
}

func (c *Conn) ensureBucket(ctx context.Context, p *Provisioned, want jetstream.KeyValueConfig) error {
	for attempt := 0; ; attempt++ {
		kv, err := c.js.KeyValue(ctx, want.Bucket)
		existed := err == nil
		switch {
		case errors.Is(err, jetstream.ErrBucketNotFound):
		case err != nil:
			return fmt.Errorf("queue: bucket %s: %w", want.Bucket, err)
		default:
			st, err := kv.Status(ctx)
			if err != nil {
				return fmt.Errorf("queue: bucket %s: %w", want.Bucket, err)
			}
			if bucketMatches(st.(*jetstream.KeyValueBucketStatus).Config(), want) {
				return nil
			}
		}
		// As in ensureStream: the server accepts a second create of the
		// same config, so replicas starting together never update.
		if existed {
			_, err = c.js.UpdateKeyValue(ctx, want)
		} else {
			_, err = c.js.CreateKeyValue(ctx, want)
		}
		if err != nil {
			if !existed && attempt == 0 && errors.Is(err, jetstream.ErrBucketExists) {
				continue
			}
			return fmt.Errorf("queue: provision bucket %s: %w", want.Bucket, err)
		}
		p.note(existed, "bucket "+want.Bucket)
		return nil
	}
}

// bucketMatches compares the fields Orderly sets.
func bucketMatches(have, want jetstream.KeyValueConfig) bool {
	return have.Description == want.Description && have.History == max(want.History, 1) &&
		have.TTL == want.TTL && have.Storage == want.Storage && have.Replicas == max(want.Replicas, 1) &&
		limit(have.MaxBytes) == limit(want.MaxBytes) && limit(have.MaxValueSize) == limit(want.MaxValueSize)
}

// recoveryTimeout bounds one attempt of a request the puller makes to
// recover a partition (a rewind, an unpin), which its caller repeats until
// it works. While the consumer has no leader (a NATS node lost) such a
// request gets no answer at all: a short attempt means the next one goes
// out soon after the cluster has elected a new leader, rather than a long
// timeout later.
const recoveryTimeout = time.Second

// resetConsumer rewinds a consumer to its ack floor: every unacknowledged
// message is delivered again, in stream order.
func (c *Conn) resetConsumer(ctx context.Context, stream, consumer string) error {
	ctx, cancel := context.WithTimeout(ctx, recoveryTimeout)
	defer cancel()
	if _, err := c.js.ResetConsumer(ctx, stream, consumer); err != nil {
		return fmt.Errorf("queue: reset consumer %s: %w", consumer, err)
	}
	return nil
}

// Unpin releases a partition's consumer from the client it is pinned to, so
// that the next client to pull it becomes its only receiver at once rather
// than after PinnedTTL.
func (c *Conn) Unpin(ctx context.Context, workflow string, partition int) error {
	ctx, cancel := context.WithTimeout(ctx, recoveryTimeout)
	defer cancel()
	s, err := c.js.Stream(ctx, contract.EventsStream(workflow))
	if err == nil {
		err = s.UnpinConsumer(ctx, consumerName(workflow, partition), PriorityGroup)
	}
	if err != nil {
		return fmt.Errorf("queue: unpin partition %d: %w", partition, err)
	}
	return nil
}
