package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/cron"
	"github.com/orderly-dev/orderly/internal/jsapi"
)

// Recurring schedules: a JetStream message schedule ("@every <d>" or a cron
// expression in a time zone) in the workflow's schedules stream, which the
// server fires with or without a worker running. Each firing is an event
// for the schedule's key whose job id is contract.ScheduleJobID(name, fire
// time), so a firing that comes twice is applied once.

var (
	// ErrScheduleExists: AddSchedule found a schedule of that name; remove
	// it first to change it.
	ErrScheduleExists = errors.New("a schedule of that name exists")
	// ErrNoSchedule: no schedule has the name.
	ErrNoSchedule = errors.New("no such schedule")
)

// Schedule is a recurring schedule: the event it sends to its key, and
// when.
type Schedule struct {
	// Name names the schedule: 1-64 characters of A-Z a-z 0-9 - _.
	Name string `json:"name"`
	// Key is the key each firing is sent to.
	Key string `json:"key"`
	// Event is the name of the event each firing sends.
	Event string `json:"event"`
	// Data is the event's data, any JSON; optional.
	Data json.RawMessage `json:"data,omitempty"`
	// Every fires on an interval of at least a second, measured from when
	// the schedule was added. Exactly one of Every and Cron is set.
	Every time.Duration `json:"-"`
	// Cron is a cron expression of six fields (second minute hour
	// day-of-month month day-of-week, as nats-server reads them), of the
	// classic five (minute hour day-of-month month day-of-week, stored
	// with a second of 0 in front), or a predefined one (@hourly, @daily,
	// @weekly, @monthly, @yearly).
	Cron string `json:"cron,omitempty"`
	// TimeZone is the IANA zone Cron is read in; default UTC.
	TimeZone string `json:"time_zone,omitempty"`

	// Set by Schedules:

	// Spec is the schedule as the server holds it: "@every 1m0s" or the
	// cron expression.
	Spec string `json:"spec"`
	// Next is when the schedule fires next, as far as can be known: for
	// cron, exactly; for Every, from its last firing (or when it was
	// added), so a firing missed while the server was down shifts it.
	Next time.Time `json:"next"`
	// Added is when the schedule was stored.
	Added time.Time `json:"added"`
}

// pattern returns the schedule's Nats-Schedule pattern, checked as the
// server checks it.
func (s Schedule) pattern(now time.Time) (string, cron.Spec, error) {
	var p string
	switch {
	case s.Every != 0 && s.Cron != "":
		return "", cron.Spec{}, fmt.Errorf("%w: give an interval or a cron expression, not both", ErrInvalidSchedule)
	case s.Every != 0:
		if s.TimeZone != "" {
			return "", cron.Spec{}, fmt.Errorf("%w: a time zone applies only to a cron expression", ErrInvalidSchedule)
		}
		p = "@every " + s.Every.String()
	case s.Cron != "":
		p = strings.TrimSpace(s.Cron)
		if strings.HasPrefix(p, "@at ") || strings.HasPrefix(p, "@every ") {
			return "", cron.Spec{}, fmt.Errorf("%w: %q is not a cron expression", ErrInvalidSchedule, s.Cron)
		}
		p = cron.Expand(p)
	default:
		return "", cron.Spec{}, fmt.Errorf("%w: give an interval or a cron expression", ErrInvalidSchedule)
	}
	spec, _, err := cron.Pattern(p, s.TimeZone, now)
	return p, spec, err
}

// AddSchedule stores the recurring schedule s in workflow and returns it
// with Spec, Added and Next set. Everything is checked before anything is
// stored, the cron expression and time zone as the server checks them: a
// bad one is ErrInvalidSchedule. A schedule of the same name gives
// ErrScheduleExists.
func (c *Client) AddSchedule(ctx context.Context, workflow string, s Schedule) (Schedule, error) {
	if c.isDone() {
		return Schedule{}, ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return Schedule{}, err
	}
	if err := contract.ValidateScheduleName(s.Name); err != nil {
		return Schedule{}, err
	}
	if err := contract.ValidateKey(s.Key); err != nil {
		return Schedule{}, err
	}
	if s.Event == "" {
		return Schedule{}, fmt.Errorf("%w: the event name is empty", ErrInvalidEvent)
	}
	if len(s.Data) > 0 && !json.Valid(s.Data) {
		return Schedule{}, fmt.Errorf("%w: data is not valid JSON", ErrInvalidEvent)
	}
	now := time.Now()
	pattern, spec, err := s.pattern(now)
	if err != nil {
		return Schedule{}, err
	}
	body, err := json.Marshal(&contract.Envelope{Event: s.Event, Data: s.Data})
	if err != nil {
		return Schedule{}, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	subject := contract.RecurringSubject(workflow, s.Name)
	m := nats.NewMsg(subject)
	m.Data = body
	m.Header.Set(jsapi.NatsSchedule, pattern)
	m.Header.Set(contract.HeaderSchedule, pattern)
	if s.TimeZone != "" {
		m.Header.Set(jsapi.NatsScheduleTimeZone, s.TimeZone)
		m.Header.Set(contract.HeaderScheduleZone, s.TimeZone)
	}
	m.Header.Set(jsapi.NatsScheduleTarget, contract.RecurringTarget(workflow, s.Name, s.Key))
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	if _, err = c.js.PublishMsg(ctx, m); isWrongLastSequence(err) {
		return Schedule{}, fmt.Errorf("client: add schedule %s: %w; remove it first to change it", s.Name, ErrScheduleExists)
	} else if err != nil {
		return Schedule{}, scheduleError(subject, err)
	}
	s.Spec, s.Added = pattern, now.UTC()
	if spec.Kind == cron.Cron {
		s.Cron, s.Next = pattern, mustNext(spec.Cron.Next(now))
	} else {
		s.Next = cron.EveryNext(spec.Every, now, now)
	}
	return s, nil
}

func mustNext(t time.Time, _ error) time.Time { return t.UTC() }

// RemoveSchedule removes the recurring schedule name from workflow:
// ErrNoSchedule if there is none. A firing the server began before the
// removal may still arrive; none begins after it.
func (c *Client) RemoveSchedule(ctx context.Context, workflow, name string) error {
	if c.isDone() {
		return ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return err
	}
	if err := contract.ValidateScheduleName(name); err != nil {
		return err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	stream := contract.SchedulesStream(workflow)
	s, err := jsapi.GetLastMsg(ctx, c.nc, stream, contract.RecurringSubject(workflow, name))
	if err == nil {
		err = jsapi.DeleteMsg(ctx, c.nc, stream, s.Sequence)
	}
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return fmt.Errorf("client: remove schedule %s: %w", name, ErrNoSchedule)
	case err != nil:
		return fmt.Errorf("client: remove schedule %s: %w", name, err)
	}
	return nil
}

// Schedules returns the recurring schedules of workflow, oldest first.
func (c *Client) Schedules(ctx context.Context, workflow string) ([]Schedule, error) {
	if c.isDone() {
		return nil, ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return nil, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	now := time.Now()
	var out []Schedule
	err := c.lastPerSubject(ctx, contract.SchedulesStream(workflow), contract.RecurringSubject(workflow, "*"), func(m jsapi.StoredMsg) {
		out = append(out, recurringOf(m))
	})
	if err != nil {
		return nil, fmt.Errorf("client: schedules of %s: %w", workflow, err)
	}
	for i := range out {
		if err := c.next(ctx, workflow, &out[i], now); err != nil {
			return nil, fmt.Errorf("client: schedules of %s: %w", workflow, err)
		}
	}
	return out, nil
}

// recurringOf reads a recurring schedule's message.
func recurringOf(m jsapi.StoredMsg) Schedule {
	s := Schedule{
		Name:     contract.KeyOfSubject(m.Subject),
		Key:      contract.KeyOfSubject(m.Header.Get(jsapi.NatsScheduleTarget)),
		Spec:     m.Header.Get(jsapi.NatsSchedule),
		TimeZone: m.Header.Get(jsapi.NatsScheduleTimeZone),
		Added:    m.Time,
	}
	var env contract.Envelope
	if json.Unmarshal(m.Data, &env) == nil {
		s.Event, s.Data = env.Event, env.Data
	}
	if d, ok := strings.CutPrefix(s.Spec, "@every "); ok {
		s.Every, _ = time.ParseDuration(d)
	} else {
		s.Cron = s.Spec
	}
	return s
}

// next sets s.Next: for cron, the next time after now in its zone; for an
// interval, the next time its last firing announced (or the first after it
// was added), moved on by whole intervals past now.
func (c *Client) next(ctx context.Context, workflow string, s *Schedule, now time.Time) error {
	spec, _, err := cron.Pattern(s.Spec, s.TimeZone, now)
	if err != nil {
		return nil // not one Orderly stored; no next time to tell
	}
	if spec.Kind == cron.Cron {
		s.Next, _ = spec.Cron.Next(now)
		return nil
	}
	if spec.Kind != cron.Every {
		return nil
	}
	next := cron.EveryNext(spec.Every, s.Added, s.Added)
	fired, err := jsapi.GetLastMsg(ctx, c.nc, contract.SchedulesStream(workflow), contract.RecurringTarget(workflow, s.Name, s.Key))
	switch {
	case err == nil:
		if t, perr := time.Parse(time.RFC3339Nano, fired.Header.Get(jsapi.NatsScheduleNext)); perr == nil && !fired.Time.Before(s.Added) &&
			fired.Header.Get(jsapi.NatsScheduler) == contract.RecurringSubject(workflow, s.Name) {
			next = t
		}
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return err
	}
	if next.Before(now) {
		next = next.Add((now.Sub(next)/spec.Every + 1) * spec.Every)
	}
	s.Next = next.UTC()
	return nil
}

// lastPerSubject calls fn with the last message of each subject of stream
// matching filter, through a short-lived consumer, so that memory does not
// grow with the number of subjects beyond what fn keeps.
func (c *Client) lastPerSubject(ctx context.Context, stream, filter string, fn func(jsapi.StoredMsg)) error {
	cons, err := c.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubject:     filter,
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute, // if we vanish before deleting it
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return ErrNotProvisioned
	}
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = c.js.DeleteConsumer(dctx, stream, cons.CachedInfo().Name)
	}()
	for pending := cons.CachedInfo().NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchContext(ctx))
		if err != nil {
			return err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			fn(jsapi.StoredMsg{Subject: m.Subject(), Sequence: md.Sequence.Stream, Header: m.Headers(), Data: m.Data(), Time: md.Timestamp})
			pending = md.NumPending
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if got == 0 {
			return fmt.Errorf("stream %s: %d messages pending, none delivered", stream, pending)
		}
	}
	return nil
}
