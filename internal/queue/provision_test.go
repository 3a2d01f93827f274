package queue_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// TestBrokerAdapterProvisionReplicas: on a 3-node cluster, a workflow
// provisioned with 1 replica and then with 3 ends with every stream,
// consumer and bucket at 3 replicas, placed on 3 nodes; the other changed
// fields (the ack wait of the consumers, the members' TTL) follow too.
func TestBrokerAdapterProvisionReplicas(t *testing.T) {
	t.Parallel()
	cluster := natstest.StartCluster(t, 3)
	c := natstest.Conn(t, cluster.URL())
	js := rawJSOn(t, cluster.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	one := queue.Spec{Workflow: "order", Partitions: 2, Replicas: 1, AckWait: 30 * time.Second, MemberTTL: 5 * time.Second}
	if _, err := c.Provision(ctx, one); err != nil {
		t.Fatalf("provision with 1 replica: %v", err)
	}
	three := one
	three.Replicas, three.AckWait, three.MemberTTL = 3, 20*time.Second, 7*time.Second
	p, err := c.Provision(ctx, three)
	if err != nil {
		t.Fatalf("provision with 3 replicas: %v", err)
	}
	t.Logf("updated: %v", p.Updated)
	streams := []string{"ORDERLY_EVENTS_ORDER", "ORDERLY_TIMERS_ORDER", "ORDERLY_DLQ_ORDER", "KV_orderly_state_order", "KV_orderly_jobs_order", "KV_orderly_members_order"}
	for _, name := range streams {
		waitSaw(t, 60*time.Second, "stream "+name+" on 3 nodes", func() (bool, string) {
			s, err := js.Stream(ctx, name)
			if err != nil {
				return false, err.Error()
			}
			info := s.CachedInfo()
			return info.Config.Replicas == 3 && peers(info.Cluster) == 3,
				fmt.Sprintf("config replicas %d, %d nodes", info.Config.Replicas, peers(info.Cluster))
		})
	}
	for i := range 2 {
		name := fmt.Sprintf("orderly_order_p%d", i)
		waitSaw(t, 60*time.Second, "consumer "+name+" on 3 nodes", func() (bool, string) {
			cons, err := js.Consumer(ctx, "ORDERLY_EVENTS_ORDER", name)
			if err != nil {
				return false, err.Error()
			}
			info := cons.CachedInfo()
			return peers(info.Cluster) == 3 && info.Config.AckWait == 20*time.Second,
				fmt.Sprintf("config replicas %d, %d nodes, ack wait %s", info.Config.Replicas, peers(info.Cluster), info.Config.AckWait)
		})
	}
	kv, err := js.KeyValue(ctx, "orderly_members_order")
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != 7*time.Second {
		t.Errorf("members bucket TTL %s, want 7s", st.TTL())
	}
	// Once as specified, a third run changes nothing.
	again, err := c.Provision(ctx, three)
	if err != nil {
		t.Fatal(err)
	}
	if again.Changed() {
		t.Errorf("third run changed %v %v", again.Created, again.Updated)
	}
}

// TestBrokerAdapterProvisionTouchesOnlyWhatDiffers: provisioning what is
// already as specified sends no create or update request at all (an
// update of a consumer is a write the cluster replicates, on every
// start of every replica); a changed consumer field updates the consumers
// and nothing else, and a pinned client stays pinned.
func TestBrokerAdapterProvisionTouchesOnlyWhatDiffers(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	c := natstest.Conn(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := queue.Spec{Workflow: "order", Partitions: 2}
	if _, err := c.Provision(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// Pin partition 0 to a client, as a worker pulling it does.
	js := rawJSOn(t, srv.ClientURL())
	cons, err := js.Consumer(ctx, "ORDERLY_EVENTS_ORDER", "orderly_order_p0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, contract.EventSubject("order", "k0"), []byte(`{"event":"e"}`)); err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchPriorityGroup(queue.PriorityGroup), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	pin := pinnedID(t, ctx, js)
	if pin == "" {
		t.Fatal("partition 0 not pinned after a pull")
	}

	writes := apiWrites(t, srv.ClientURL())
	p, err := c.Provision(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := writes(); p.Changed() || len(got) > 0 {
		t.Fatalf("unchanged: provisioning changed %v %v and sent %v", p.Created, p.Updated, got)
	}
	spec.AckWait = 10 * time.Second
	if p, err = c.Provision(ctx, spec); err != nil {
		t.Fatal(err)
	}
	got := writes()
	slices.Sort(got)
	if len(got) != 3 || !strings.Contains(got[0], "orderly_order_delayed") || !strings.Contains(got[1], "orderly_order_p") ||
		!strings.Contains(got[2], "orderly_order_p") || len(p.Updated) != 3 {
		t.Fatalf("ack wait changed: updated %v, sent %v; want the 2 partitions' consumers and the delayed records' only", p.Updated, got)
	}
	if now := pinnedID(t, ctx, js); now != pin {
		t.Errorf("pin %q became %q", pin, now)
	}
}

// apiWrites records the JetStream API requests that create or update a
// stream or consumer; the function returned gives those seen since its
// last call, once the server has seen everything sent so far.
func apiWrites(t *testing.T, url string) func() []string {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var mu sync.Mutex
	var seen []string
	for _, subj := range []string{"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>"} {
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
			if strings.Contains(m.Subject, ".JS_SRC_") || strings.Contains(string(m.Data), `"JS_SRC_`) {
				// The server's own consumer of a stream's source, made when
				// it likes (named in the body for a source with several
				// subject transforms, as the schedules stream's).
				return
			}
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, m.Subject)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() []string {
		t.Helper()
		// The requests were answered before Provision returned; a round
		// trip of our own comes after their copies to us.
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		out := slices.Clone(seen)
		seen = seen[:0]
		slices.Sort(out)
		return out
	}
}

func pinnedID(t *testing.T, ctx context.Context, js jetstream.JetStream) string {
	t.Helper()
	cons, err := js.Consumer(ctx, "ORDERLY_EVENTS_ORDER", "orderly_order_p0")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range cons.CachedInfo().PriorityGroups {
		if g.Group == queue.PriorityGroup {
			return g.PinnedClientID
		}
	}
	return ""
}

func peers(ci *jetstream.ClusterInfo) int {
	if ci == nil {
		return 1
	}
	return 1 + len(ci.Replicas)
}

func rawJSOn(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// waitSaw polls cond until it holds or d has passed; the failure says what
// cond last saw.
func waitSaw(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last saw %s", what, d, saw)
		}
		time.Sleep(100 * time.Millisecond) // cluster placement has no event to await
	}
}

// TestProvisionHistoryOnAnExistingWorkflow: a workflow provisioned without
// a status history (as by a version that had none) gets the history stream,
// and nothing else changes; statuses published from then on are stored. A
// stream of the operator's own that already takes the status subjects is
// not touched: provisioning fails, saying what to do.
func TestProvisionHistoryOnAnExistingWorkflow(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	c := natstest.Conn(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Timeout)
	defer cancel()
	if _, err := c.Provision(ctx, queue.Spec{Workflow: "order", Partitions: 2, HistoryPerKey: -1}); err != nil {
		t.Fatal(err)
	}
	if err := c.PublishStatus(&contract.Status{Workflow: "order", Key: "k1", Version: 1}); err != nil {
		t.Fatal(err) // captured by nothing: a plain publish still goes out
	}
	p, err := c.Provision(ctx, queue.Spec{Workflow: "order", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p.Created) != "[stream ORDERLY_HISTORY_ORDER]" || len(p.Updated)+len(p.Deleted) > 0 {
		t.Fatalf("created %v, updated %v, deleted %v; want the history stream created, nothing else", p.Created, p.Updated, p.Deleted)
	}
	js := rawJSOn(t, srv.ClientURL())
	s, err := js.Stream(ctx, contract.HistoryStream("order"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.MaxMsgsPerSubject != queue.DefaultHistoryPerKey || cfg.MaxAge != queue.DefaultHistoryMaxAge ||
		cfg.Discard != jetstream.DiscardOld || cfg.Storage != jetstream.FileStorage || fmt.Sprint(cfg.Subjects) != "[orderly.status.order.*]" {
		t.Fatalf("history stream config %+v", cfg)
	}
	if err := c.PublishStatus(&contract.Status{Workflow: "order", Key: "k1", Version: 2}); err != nil {
		t.Fatal(err)
	}
	waitSaw(t, natstest.Timeout, "the status stored", func() (bool, string) {
		info, err := s.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs == 1, fmt.Sprintf("%d stored", info.State.Msgs)
	})

	// Another workflow, whose statuses a stream of the operator's stores.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MINE", Subjects: []string{"orderly.status.other.>"}}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Provision(ctx, queue.Spec{Workflow: "other", Partitions: 1})
	if err == nil || !strings.Contains(err.Error(), "another stream already stores orderly.status.other.*") || !strings.Contains(err.Error(), "--history-per-key 0") {
		t.Fatalf("provisioning over a stream taking the status subjects: %v", err)
	}
	if _, err := js.Stream(ctx, "MINE"); err != nil {
		t.Fatalf("the operator's stream: %v", err)
	}
}
