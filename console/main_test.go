package console_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/internal/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }
