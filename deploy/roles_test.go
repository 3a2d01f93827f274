package deploy

import (
	"os"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/orderly-dev/orderly/internal/roles"
)

// TestHelmValuesRoles: the users of helm/nats-values.yaml have the
// roles' permissions, each user by the Secret keys it reads.
func TestHelmValuesRoles(t *testing.T) {
	data, err := os.ReadFile("helm/nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Config struct {
			Merge struct {
				Authorization struct {
					Users []struct {
						User        string `json:"user"`
						Permissions struct {
							Publish   []string `json:"publish"`
							Subscribe []string `json:"subscribe"`
						} `json:"permissions"`
					} `json:"users"`
				} `json:"authorization"`
			} `json:"merge"`
		} `json:"config"`
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
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
