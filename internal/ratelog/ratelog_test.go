package ratelog

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	t.Parallel()
	l := Limiter{Every: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	if ok, held := l.Allow(t0); !ok || held != 0 {
		t.Fatalf("first: %v %d", ok, held)
	}
	for i := 1; i <= 9; i++ {
		if ok, _ := l.Allow(t0.Add(time.Duration(i) * time.Second)); ok {
			t.Fatalf("let through %ds after the first", i)
		}
	}
	if ok, held := l.Allow(t0.Add(10 * time.Second)); !ok || held != 9 {
		t.Fatalf("after the interval: %v %d, want true 9", ok, held)
	}
	l.Allow(t0.Add(11 * time.Second))
	if held := l.Reset(); held != 1 {
		t.Fatalf("reset: %d held, want 1", held)
	}
	if ok, _ := l.Allow(t0.Add(12 * time.Second)); !ok {
		t.Fatal("not let through after Reset")
	}
	var zero Limiter
	if ok, _ := zero.Allow(t0); !ok {
		t.Fatal("zero value held a line back")
	}
	if ok, _ := zero.Allow(t0); !ok {
		t.Fatal("zero value held a line back")
	}
}
