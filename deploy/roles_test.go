package deploy

import (
	"os"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/orderly-dev/orderly/internal/roles"
)

// TestHelmValuesRoles: the users of helm/nats-values.yaml have the
// roles' permissions, each user by the Secret keys it reads.
func TestHelmValuesRoles(t *testing.T) {
	v := readHelmNATSValues(t)
	byUser := map[string]roles.Role{"<< $NATS_USER >>": roles.Worker, "<< $NATS_PRODUCER_USER >>": roles.Producer, "<< $NATS_OPERATOR_USER >>": roles.Operator}
	users := v.Config.Merge.Authorization.Users
	if len(users) != len(byUser) {
		t.Fatalf("%d users, want %d", len(users), len(byUser))
	}
	for _, u := range users {
		r, ok := byUser[u.User]
		if !ok {
			t.Errorf("user %s: no role", u.User)
			continue
		}
		want, err := roles.For(r, "order")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(u.Permissions.Publish, want.Publish) || !slices.Equal(u.Permissions.Subscribe, want.Subscribe) {
			t.Errorf("%s (%s): permissions %+v, want those of package roles %+v", u.User, r, u.Permissions, want)
		}
	}
}

// helmNATSValues is what the tests read of helm/nats-values.yaml: the users
// with their permissions, and where the NATS container's variables come from.
type helmNATSValues struct {
	Config struct {
		Merge struct {
			Authorization struct {
				Users []struct {
					User        string `json:"user"`
					Password    string `json:"password"`
					Permissions struct {
						Publish   []string `json:"publish"`
						Subscribe []string `json:"subscribe"`
					} `json:"permissions"`
				} `json:"users"`
			} `json:"authorization"`
		} `json:"merge"`
	} `json:"config"`
	Container struct {
		Env map[string]struct {
			ValueFrom *corev1.EnvVarSource `json:"valueFrom"`
		} `json:"env"`
	} `json:"container"`
}

func readHelmNATSValues(t *testing.T) helmNATSValues {
	t.Helper()
	data, err := os.ReadFile("helm/nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v helmNATSValues
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}
