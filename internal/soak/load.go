package soak

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
)

// Kinds of published event.
const (
	KindAdd       = "add"       // a client event the workflow logs
	KindWork      = "work"      // a client event that starts slow work
	KindMalformed = "malformed" // a body that is not an envelope: to be dead-lettered as malformed
	KindUnknown   = "unknown"   // an event the workflow does not declare: to be dead-lettered as unknown_event
)

// Publish is one event the producers sent (or tried to): the ledger the
// checker holds the stored state to.
type Publish struct {
	Job      string
	Key      string
	Kind     string
	Producer int // add and work: from 1
	Seq      int // add and work: the producer's sequence number for the key, from 1

	Attempts  int
	Acked     bool      // JetStream acknowledged it: stored (or a duplicate of what it stored)
	Sequence  uint64    // its sequence in the events stream, as acknowledged (a duplicate's: the original's)
	Duplicate bool      // the acknowledgement said duplicate
	First     time.Time // the first attempt
	AckedAt   time.Time
	LastErr   string // the last attempt's error, if it failed
}

// valid reports whether the event is one the workflow applies.
func (p *Publish) valid() bool { return p.Kind == KindAdd || p.Kind == KindWork }

// ledger records every publish.
type ledger struct {
	mu   sync.Mutex
	pubs []*Publish
}

func (l *ledger) add(p *Publish) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pubs = append(l.pubs, p)
}

// update runs f on p under the ledger's lock.
func (l *ledger) update(p *Publish, f func(*Publish)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(p)
}

// snapshot copies every publish.
func (l *ledger) snapshot() []Publish {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Publish, len(l.pubs))
	for i, p := range l.pubs {
		out[i] = *p
	}
	return out
}

// loadConfig is what the producers do.
type loadConfig struct {
	seed      uint64
	urls      func(producer int) string // the cluster's client URLs, a node of its own first
	producers int
	rate      int // events per second, all producers together
	keys      int
	duration  time.Duration // how long new events are sent
	grace     time.Duration // how long an event unacknowledged at the end keeps being retried
	workShare float64       // share of work events among the valid ones
	poison    float64       // share of poison events (malformed and unknown, half each)
}

// keyName is the name of key i.
func keyName(i int) string { return fmt.Sprintf("k%05d", i) }

// jobID is the job id of a producer's event, the same on every retry.
func jobID(seed uint64, producer int, key string, seq int) string {
	return fmt.Sprintf("s%d-p%d-%s-%d", seed, producer, key, seq)
}

// runLoad runs the producers until cfg.duration has passed and every
// event they sent is acknowledged, or cfg.grace more has passed. Each
// producer sends its events of one key one at a time, the next only once
// the last is acknowledged, so that its publish order is the stream's.
func runLoad(ctx context.Context, cfg loadConfig, l *ledger, errs func(string)) error {
	var wg sync.WaitGroup
	var first error
	var mu sync.Mutex
	for p := 1; p <= cfg.producers; p++ {
		c, err := client.Connect(cfg.urls(p), client.Config{Timeout: 5 * time.Second},
			nats.Name(fmt.Sprintf("orderly-soak-producer-%d", p)), nats.MaxReconnects(-1),
			nats.ReconnectWait(250*time.Millisecond), nats.RetryOnFailedConnect(true), quietErrors)
		if err != nil {
			return fmt.Errorf("producer %d: %w", p, err)
		}
		wg.Go(func() {
			defer c.Close()
			if err := produce(ctx, cfg, p, c, l, errs); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

func produce(ctx context.Context, cfg loadConfig, p int, c *client.Client, l *ledger, errs func(string)) error {
	js, err := jetstream.New(c.Conn())
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(cfg.seed, 1000+uint64(p)))
	next := make([]int, cfg.keys)  // the last sequence number used, per key
	busy := make([]bool, cfg.keys) // an event of the key awaits its ack
	var mu sync.Mutex              // guards busy
	sendCtx, stopSending := context.WithTimeout(ctx, cfg.duration)
	defer stopSending()
	retryCtx, stopRetrying := context.WithTimeout(ctx, cfg.duration+cfg.grace)
	defer stopRetrying()
	var wg sync.WaitGroup
	defer wg.Wait()
	every := time.Duration(float64(time.Second) * float64(cfg.producers) / float64(cfg.rate))
	tick := time.NewTicker(every)
	defer tick.Stop()
	poisons := 0
	for {
		select {
		case <-sendCtx.Done():
			return nil
		case <-tick.C:
		}
		// A key with nothing in flight from this producer: a few tries,
		// then skip the tick (the rate is a ceiling).
		k := -1
		mu.Lock()
		for range 8 {
			if i := r.IntN(cfg.keys); !busy[i] {
				k = i
				break
			}
		}
		if k >= 0 {
			busy[k] = true
		}
		mu.Unlock()
		if k < 0 {
			continue
		}
		key := keyName(k)
		pub := &Publish{Key: key, Producer: p}
		switch x := r.Float64(); {
		case x < cfg.poison/2:
			poisons++
			pub.Kind, pub.Job = KindMalformed, fmt.Sprintf("s%d-p%d-x%d", cfg.seed, p, poisons)
		case x < cfg.poison:
			poisons++
			pub.Kind, pub.Job = KindUnknown, fmt.Sprintf("s%d-p%d-x%d", cfg.seed, p, poisons)
		default:
			next[k]++
			pub.Seq = next[k]
			pub.Kind = KindAdd
			if r.Float64() < cfg.workShare {
				pub.Kind = KindWork
			}
			pub.Job = jobID(cfg.seed, p, key, pub.Seq)
		}
		pub.First = time.Now()
		l.add(pub)
		wg.Go(func() {
			defer func() {
				mu.Lock()
				busy[k] = false
				mu.Unlock()
			}()
			send(retryCtx, c, js, pub, l, errs)
		})
	}
}

// send publishes pub until it is acknowledged or ctx ends, with the same
// job id each time, as a producer that must not lose an event does.
func send(ctx context.Context, c *client.Client, js jetstream.JetStream, pub *Publish, l *ledger, errs func(string)) {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ack, err := publishOnce(ctx, c, js, pub)
		l.update(pub, func(p *Publish) {
			p.Attempts = attempt
			if err != nil {
				p.LastErr = err.Error()
				return
			}
			p.Acked, p.Duplicate, p.AckedAt, p.LastErr = true, ack.Duplicate, time.Now(), ""
			p.Sequence = ack.Sequence
		})
		if err == nil {
			return
		}
		if errors.Is(err, client.ErrIDConflict) {
			// Never expected: each job id is one key's and one event's.
			errs(fmt.Sprintf("publish %s to %s: %v", pub.Job, pub.Key, err))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// publishOnce makes one attempt: PublishAsync for the producers' events,
// a plain JetStream publish for a malformed body (the client refuses to
// send one, as it should; another service's client may not).
func publishOnce(ctx context.Context, c *client.Client, js jetstream.JetStream, pub *Publish) (client.PubAck, error) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if pub.Kind == KindMalformed {
		msg := nats.NewMsg(contract.EventSubject(Workflow, pub.Key))
		msg.Header.Set(contract.HeaderJobID, pub.Job)
		msg.Data = []byte(`{"event": "add", "data": {"p": 1`) // cut short
		a, err := js.PublishMsg(actx, msg)
		if err != nil {
			return client.PubAck{}, err
		}
		return client.PubAck{ID: pub.Job, Sequence: a.Sequence, Duplicate: a.Duplicate}, nil
	}
	ev := contract.Envelope{Event: pub.Kind}
	if pub.Kind == KindUnknown {
		ev.Event = "no_such_event"
	} else {
		ev.Data = []byte(fmt.Sprintf(`{"p":%d,"n":%d}`, pub.Producer, pub.Seq))
	}
	pp, err := c.PublishAsync(Workflow, pub.Key, ev, client.WithJobID(pub.Job))
	if err != nil {
		return client.PubAck{}, err
	}
	return pp.Wait(actx)
}

// quietErrors keeps nats.go from printing the connection errors the faults
// cause (its default without an error handler); the publishes that fail
// are retried and recorded.
var quietErrors = nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
