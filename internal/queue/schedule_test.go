package queue_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// TestScheduledEventsComeInAsClientEvents: a delayed event and the firings
// of a recurring schedule come into their key's partition as client
// events (no timers), with the delayed event's job id and one made of the
// schedule's name and fire time; once a worker has them, ForgetFired
// purges their copies from the schedules stream, and nothing else.
func TestScheduledEventsComeInAsClientEvents(t *testing.T) {
	c, _ := setup(t, queue.Spec{Partitions: 4})
	defer queue.SetForgetEvery(0)()
	cl := newClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cl.Publish(ctx, "order", "k1", contract.Envelope{Event: "plain"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Publish(ctx, "order", "k1", contract.Envelope{Event: "later"}, client.WithDelay(time.Second), client.WithJobID("d-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AddSchedule(ctx, "order", client.Schedule{Name: "beat", Key: "k1", Event: "tick", Every: time.Second}); err != nil {
		t.Fatal(err)
	}
	got := make(chan *queue.Msg, 64)
	var pullers []*queue.Puller
	for p := range 4 {
		pl, err := c.Pull(ctx, queue.PullConfig{Workflow: "order", Partition: p, MaxWait: 200 * time.Millisecond}, func(_ context.Context, m *queue.Msg) {
			got <- m
			_ = m.Ack()
		})
		if err != nil {
			t.Fatal(err)
		}
		pullers = append(pullers, pl)
	}
	defer func() {
		for _, pl := range pullers {
			_ = pl.Stop(context.Background())
		}
	}()
	plain := natstest.Recv(t, got, natstest.Timeout, "the plain event")
	var msgs []*queue.Msg
	var delayed, beats int
	for delayed == 0 || beats < 3 {
		m := natstest.Recv(t, got, natstest.Timeout, "the delayed event and three firings")
		msgs = append(msgs, m)
		if _, _, ok := m.Timer(); ok || m.Partition != plain.Partition || m.Key != "k1" {
			t.Fatalf("%s: a timer, or not in k1's partition %d: partition %d", m.Subject(), plain.Partition, m.Partition)
		}
		switch {
		case m.Delayed():
			delayed++
			if m.ID != "d-1" || !strings.Contains(string(m.Data), `"later"`) {
				t.Fatalf("delayed event: id %q, %s", m.ID, m.Data)
			}
		case strings.HasPrefix(m.ID, "beat@"):
			beats++
			if _, err := time.Parse(time.RFC3339, strings.TrimPrefix(m.ID, "beat@")); err != nil {
				t.Fatalf("firing's job id %q: %v", m.ID, err)
			}
		default:
			t.Fatalf("%s: id %q, neither the delayed event nor a firing", m.Subject(), m.ID)
		}
	}
	if plain.Delayed() || plain.ID == "" || strings.Contains(plain.ID, "@") {
		t.Fatalf("the plain event: delayed %v, id %q", plain.Delayed(), plain.ID)
	}

	fired := func() uint64 {
		t.Helper()
		nc, err := nats.Connect(c.NATS().ConnectedUrl())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		s, err := js.Stream(ctx, contract.SchedulesStream("order"))
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(contract.SchedulesSubject("order")+".>"))
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Subjects[contract.RecurringSubject("order", "beat")] != 1 {
			t.Fatalf("the schedule itself is gone: %v", info.State.Subjects)
		}
		var n uint64
		for subj, k := range info.State.Subjects {
			if strings.Contains(subj, ".fired.") {
				n += k
			}
		}
		return n
	}
	before := fired()
	jobs, err := c.Jobs(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	if err := jobs.ForgetFired(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	// The latest firing in hand is kept, and whatever fired since.
	if after := fired(); before < 4 || after >= before-2 {
		t.Fatalf("%d fired copies before, %d after: want those in hand but the last purged", before, after)
	}
}

// TestRecurringFiringsJobIDs: a firing the test clock makes
// (FireDueRecurring) comes in with the job id of its schedule and fire
// time; a schedule stored with Orderly's headers for that (as a producer
// may store one) fires with the job id the server's headers say, not the
// one it claims.
func TestRecurringFiringsJobIDs(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 1})
	cl := newClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cl.AddSchedule(ctx, "order", client.Schedule{Name: "hourly", Key: "k", Event: "tick", Every: time.Hour}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if n, err := c.FireDueRecurring(ctx, "order", now, now.Add(time.Hour+time.Second)); err != nil || n != 1 {
		t.Fatalf("FireDueRecurring: %d, %v; want one firing", n, err)
	}
	// Stored after: only the server fires it.
	evil := nats.NewMsg(contract.RecurringSubject("order", "evil"))
	evil.Data = []byte(`{"event":"tick"}`)
	for h, v := range map[string]string{
		"Nats-Schedule": "@every 1s", "Nats-Schedule-Target": contract.RecurringTarget("order", "evil", "k"),
		contract.HeaderSchedule: "@every 1s", contract.HeaderScheduleName: "hourly", contract.HeaderScheduleTime: "2030-01-01T00:00:00Z",
	} {
		evil.Header.Set(h, v)
	}
	if _, err := c.NATS().RequestMsgWithContext(ctx, evil); err != nil {
		t.Fatal(err)
	}
	got := make(chan *queue.Msg, 64)
	pl, err := c.Pull(ctx, queue.PullConfig{Workflow: "order", MaxWait: 200 * time.Millisecond}, func(_ context.Context, m *queue.Msg) {
		got <- m
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pl.Stop(context.Background()) }()
	var hourly, evils int
	for hourly == 0 || evils == 0 {
		m := natstest.Recv(t, got, natstest.Timeout, "the test clock's firing and the schedule's")
		name, at, _ := strings.Cut(m.ID, "@")
		fire, err := time.Parse(time.RFC3339, at)
		switch {
		case err != nil:
			t.Fatalf("job id %q: want <name>@<fire time>", m.ID)
		case name == "hourly":
			hourly++
			if fire.Before(now) || fire.After(now.Add(time.Hour+time.Second)) {
				t.Fatalf("test clock's firing %q: not within the hour advanced", m.ID)
			}
		case name == "evil":
			evils++
			if m.Headers()["Nats-Scheduler"] == nil {
				t.Fatalf("firing %q has no Nats-Scheduler: not the server's", m.ID)
			}
		default:
			t.Fatalf("job id %q", m.ID)
		}
	}
	if hourly != 1 {
		t.Fatalf("%d firings of hourly, want 1", hourly)
	}
}
