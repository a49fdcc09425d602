package cache

import (
	"sync"
	"testing"
	"time"
)

// waitLimit bounds every wait in these tests for something that should
// happen at once: a test whose awaited event never comes fails, saying what
// it waited for, instead of hanging the suite until go test's timeout.
const waitLimit = 10 * time.Second

// receive returns the next value from ch, or fails t after waitLimit.
func receive[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("%s: nothing within %v", what, waitLimit)
		panic("unreachable")
	}
}

// waitGroup waits for wg, or fails t after waitLimit.
func waitGroup(t testing.TB, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	receive(t, done, what)
}

// eventually polls cond every millisecond until it holds, or fails t after
// waitLimit with what and what seen reports.
func eventually(t testing.TB, what string, cond func() bool, seen func() string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; %s", what, waitLimit, seen())
		}
		time.Sleep(time.Millisecond)
	}
}
