package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
)

// produceEnv, when set to a JSON produceSpec, makes this binary publish a
// paced run instead of benchmarking: the child of -producer process.
const produceEnv = "ORDERLY_E2EBENCH_PRODUCE"

// produceSpec is what a producer process publishes.
type produceSpec struct {
	URL  string `json:"url"`
	Raw  bool   `json:"raw"` // raw JetStream (Subject+key) or Orderly (Workflow, Event)
	N    int    `json:"n"`
	Rate int    `json:"rate"`
	// Window is raw JetStream's most publishes awaiting their ack.
	Window int `json:"window"`
	Size   int `json:"size"`
	// Subject is raw's subject prefix; the key is appended.
	Subject string `json:"subject,omitempty"`
	// Workflow, Event (a whole envelope) and JobPrefix are Orderly's; the
	// job id of event i is JobPrefix+i, given (GivenIDs) or made for one
	// publish (see orderlyRun.givenIDs).
	Workflow  string            `json:"workflow,omitempty"`
	Event     contract.Envelope `json:"event"`
	JobPrefix string            `json:"job_prefix,omitempty"`
	GivenIDs  bool              `json:"given_ids,omitempty"`
	Keys      int               `json:"keys"`
	Distinct  bool              `json:"distinct,omitempty"`
	// Out is the file the producer writes its timestamps to: for each
	// event its send then its ack time, as Unix nanoseconds (int64, little
	// endian), 0 if not sent.
	Out string `json:"out"`
}

// produceResult is the producer's one line on stdout.
type produceResult struct {
	Rate float64 `json:"rate"` // events/s achieved
}

// key is event i's key, as the in-process publishers name them.
func (s produceSpec) key(i int) string {
	if s.Distinct {
		return "m" + strconv.Itoa(i)
	}
	return "k" + strconv.Itoa(i%s.Keys)
}

// produceInProcess runs spec in a child process of this binary, so that the
// producer has a process, a heap and a garbage collector of its own, as a
// service publishing events does, and returns its timestamps on c's scale.
func (b *bench) produceInProcess(ctx context.Context, c clock, spec produceSpec, sendAt, ackAt []int64) (float64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "orderly-e2ebench-producer-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	spec.URL, spec.Out = b.url, filepath.Join(dir, "times")
	js, err := json.Marshal(spec)
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), produceEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("producer process: %w", err)
	}
	var res produceResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return 0, fmt.Errorf("producer process: its answer %q: %w", out.String(), err)
	}
	times, err := os.ReadFile(spec.Out)
	if err != nil {
		return 0, fmt.Errorf("producer process: %w", err)
	}
	if len(times) != 16*spec.N {
		return 0, fmt.Errorf("producer process: %d bytes of timestamps, want %d", len(times), 16*spec.N)
	}
	// Unix time of both processes, on c's scale: the same machine's clock.
	base := c.base.UnixNano()
	for i := range spec.N {
		if s := int64(binary.LittleEndian.Uint64(times[16*i:])); s > 0 {
			sendAt[i] = s - base
		}
		if a := int64(binary.LittleEndian.Uint64(times[16*i+8:])); a > 0 {
			ackAt[i] = a - base
		}
	}
	return res.Rate, nil
}

// produce is the producer process: it publishes spec paced, writes the
// timestamps to spec.Out and prints its produceResult.
func produce(ctx context.Context, specJSON string) error {
	var spec produceSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	if spec.N < 1 || spec.Rate < 1 || spec.Keys < 1 || spec.Out == "" {
		return errors.New("spec: n, rate and keys must be positive, out set")
	}
	var pub func(i int) (ackWaiter, error)
	if spec.Raw {
		nc, err := nats.Connect(spec.URL, nats.Name("e2ebench-producer"))
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(spec.Window))
		if err != nil {
			return err
		}
		pub = func(i int) (ackWaiter, error) {
			data := make([]byte, spec.Size)
			binary.BigEndian.PutUint64(data, uint64(i))
			f, err := js.PublishMsgAsync(&nats.Msg{Subject: spec.Subject + spec.key(i), Data: data})
			if err != nil {
				return nil, err
			}
			return rawFuture{f}, nil
		}
	} else {
		cl, err := client.Connect(spec.URL, client.Config{}, nats.Name("e2ebench-producer"))
		if err != nil {
			return err
		}
		defer cl.Close()
		pub = func(i int) (ackWaiter, error) {
			p, err := cl.PublishAsync(spec.Workflow, spec.key(i), spec.Event, jobID(spec.JobPrefix, i, spec.GivenIDs))
			if err != nil {
				return nil, err
			}
			return pendingFuture{p}, nil
		}
	}
	c := newClock()
	sendAt, ackAt := make([]int64, spec.N), make([]int64, spec.N)
	rate, err := publishPaced(ctx, c, spec.N, spec.Rate, sendAt, ackAt, pub)
	if err != nil {
		return err
	}
	base := c.base.UnixNano()
	times := make([]byte, 16*spec.N)
	for i := range spec.N {
		if sendAt[i] > 0 {
			binary.LittleEndian.PutUint64(times[16*i:], uint64(base+sendAt[i]))
		}
		if ackAt[i] > 0 {
			binary.LittleEndian.PutUint64(times[16*i+8:], uint64(base+ackAt[i]))
		}
	}
	if err := os.WriteFile(spec.Out, times, 0o600); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(produceResult{Rate: rate})
}
