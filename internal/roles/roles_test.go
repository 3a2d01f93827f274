package roles_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-dev/orderly/internal/roles"
)

var update = flag.Bool("update", false, "rewrite the generated role blocks of the files below")

// block is a generated part of a file: what render returns, between a
// begin and an end line.
type block struct {
	path, begin, end string
	render           func() (string, error)
}

// blocks are the files that show the roles' permissions for workflow
// "order".
func blocks() []block {
	conf := func(ind string, fence bool) func() (string, error) {
		return func() (string, error) {
			c, err := roles.Conf("order", "")
			if fence {
				return "```\n" + indent(c, ind) + "```\n", err
			}
			return indent(c, ind), err
		}
	}
	b := []block{
		{"../../deploy/k8s/base/nats/configmap.yaml", "      # roles:begin", "      # roles:end", conf("      ", false)},
		{"../../docs/operations.md", "<!-- roles:begin -->", "<!-- roles:end -->", conf("", true)},
	}
	for _, r := range roles.All() {
		b = append(b, block{"../../deploy/helm/nats-values.yaml", "          # roles:" + string(r) + ":begin", "          # roles:" + string(r) + ":end",
			func() (string, error) {
				p, err := roles.For(r, "order")
				var y strings.Builder
				y.WriteString("          permissions:\n")
				for _, l := range []struct {
					name string
					subs []string
				}{{"publish", p.Publish}, {"subscribe", p.Subscribe}} {
					y.WriteString("            " + l.name + ":\n")
					for _, s := range l.subs {
						fmt.Fprintf(&y, "              - %q\n", s)
					}
				}
				return y.String(), err
			}})
	}
	return b
}

// TestGeneratedRoleBlocksMatch: the NATS configurations of deploy/ and the
// docs/operations.md show exactly the permissions of package roles. Run with -update to
// rewrite them after changing the roles.
func TestGeneratedRoleBlocksMatch(t *testing.T) {
	for _, g := range blocks() {
		data, err := os.ReadFile(g.path)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		i, j := strings.Index(text, g.begin+"\n"), strings.Index(text, g.end+"\n")
		if i < 0 || j < i {
			t.Errorf("%s: no block between %q and %q", g.path, g.begin, g.end)
			continue
		}
		i += len(g.begin) + 1
		want, err := g.render()
		if err != nil {
			t.Fatal(err)
		}
		if text[i:j] == want {
			continue
		}
		if *update {
			if err := os.WriteFile(g.path, []byte(text[:i]+want+text[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: rewritten", g.path)
			continue
		}
		t.Errorf("%s: the block after %q differs from package roles; run go test ./internal/roles -update\nhave:\n%s\nwant:\n%s",
			filepath.Base(g.path), strings.TrimSpace(g.begin), text[i:j], want)
	}
}

func indent(s, prefix string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString(prefix + line)
	}
	return b.String()
}

// TestConfIsWhatTheServerReads: nats-server's own parser turns Conf into
// users with exactly For's permissions.
func TestConfIsWhatTheServerReads(t *testing.T) {
	conf, err := roles.Conf("order", "  ")
	if err != nil {
		t.Fatal(err)
	}
	var users strings.Builder
	for _, r := range roles.All() {
		users.WriteString("    {user: " + string(r) + ", password: x, permissions: $" + strings.ToUpper(string(r)) + "}\n")
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString("authorization {\n" + conf + "  users: [\n" + users.String() + "  ]\n}\n"); err != nil {
		t.Fatal(err)
	}
	if len(opts.Users) != len(roles.All()) {
		t.Fatalf("%d users", len(opts.Users))
	}
	for _, u := range opts.Users {
		want, err := roles.For(roles.Role(u.Username), "order")
		if err != nil {
			t.Fatal(err)
		}
		p := u.Permissions
		if p == nil || p.Publish == nil || p.Subscribe == nil || p.Response != nil ||
			!slices.Equal(p.Publish.Allow, want.Publish) || !slices.Equal(p.Subscribe.Allow, want.Subscribe) ||
			len(p.Publish.Deny)+len(p.Subscribe.Deny) > 0 {
			t.Errorf("%s: the server reads %+v %+v, want %+v", u.Username, p.Publish, p.Subscribe, want)
		}
	}
}

func TestRoles(t *testing.T) {
	for _, bad := range []string{"", "a.b", "*", ">", "a b"} {
		if _, err := roles.For(roles.Producer, bad); err == nil {
			t.Errorf("workflow %q accepted", bad)
		}
	}
	if _, err := roles.For("admin", "order"); err == nil {
		t.Error("an unknown role accepted")
	}
	p, _ := roles.For(roles.Producer, "order")
	o, _ := roles.For(roles.Operator, "order")
	w, _ := roles.For(roles.Worker, "order")
	// The operator is a producer and more; the producer's lists are not
	// changed by making the operator's.
	if !slices.Equal(o.Publish[:len(p.Publish)], p.Publish) || !slices.Equal(o.Subscribe, p.Subscribe) || len(o.Publish) <= len(p.Publish) {
		t.Errorf("operator %+v is not producer %+v and more", o, p)
	}
	// Only the worker writes what the worker writes; the worker publishes
	// no event.
	for _, subj := range []string{"orderly.status.order.k", "orderly.timers.order.timeout.k", "orderly.dlq.order.k", "$KV.orderly_state_order.k"} {
		if matches(p.Publish, subj) || matches(o.Publish, subj) || !matches(w.Publish, subj) {
			t.Errorf("%s: producer %v, operator %v, worker %v", subj, matches(p.Publish, subj), matches(o.Publish, subj), matches(w.Publish, subj))
		}
	}
	for _, subj := range []string{"orderly.events.order.k", "orderly.timers.order.fired.timeout.k", "orderly.events.order.0.timer.k"} {
		if matches(w.Publish, subj) {
			t.Errorf("the worker may publish to %s", subj)
		}
	}
	// What a schedule fires is the server's to write; a producer schedules,
	// and writes no job claim (only the records of delayed events).
	for _, subj := range []string{"orderly.schedules.order.fired.at.k", "orderly.schedules.order.fired.every.n.k", "orderly.events.order.0.at.k", "$KV.orderly_jobs_order.job-1"} {
		if matches(p.Publish, subj) || matches(w.Publish, subj) && !strings.HasPrefix(subj, "$KV.") {
			t.Errorf("%s: producer %v, worker %v", subj, matches(p.Publish, subj), matches(w.Publish, subj))
		}
	}
	for _, subj := range []string{"orderly.schedules.order.at.k.job-1", "orderly.schedules.order.every.nightly", "$KV.orderly_jobs_order.sched.job-1"} {
		if !matches(p.Publish, subj) {
			t.Errorf("a producer may not publish to %s", subj)
		}
	}
	if matches(p.Subscribe, roles.WorkerInbox+".x") || !matches(w.Subscribe, roles.WorkerInbox+".x") || matches(w.Subscribe, "_INBOX.x") {
		t.Error("inboxes: the worker's must be its alone")
	}
}

// matches reports whether subject matches one of the patterns, as the
// server matches permissions.
func matches(patterns []string, subject string) bool {
	for _, p := range patterns {
		if server.SubjectsCollide(p, subject) {
			return true
		}
	}
	return false
}
