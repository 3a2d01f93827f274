package contractcheck_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/internal/natstest"
)

// The tests run a worker and a server: nothing may outlive them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }
