package ratelimit

import (
	"errors"
	"strconv"
	"testing"
	"time"
)

func TestMemorySweepsIdleKeys(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := NewMemory(c.Now)
	defer m.Close()
	tb := Policy{Name: "tb", Algorithm: TokenBucket, Limit: 10, Period: 10 * time.Second} // full 1s after one request
	sw := Policy{Name: "sw", Algorithm: SlidingWindow, Limit: 10, Period: time.Minute}
	for i := range 100 {
		allow(t, m, tb, strconv.Itoa(i))
		allow(t, m, sw, strconv.Itoa(i))
	}
	if n := m.size(); n != 200 {
		t.Fatalf("size after 200 keys = %d, want 200", n)
	}
	c.Advance(time.Second - time.Microsecond)
	m.sweep()
	if n := m.size(); n != 200 {
		t.Fatalf("size before any bucket is full = %d, want 200", n)
	}
	c.Advance(time.Microsecond)
	m.sweep()
	if n := m.size(); n != 100 {
		t.Fatalf("size once the buckets are full = %d, want 100 (the windows)", n)
	}
	c.Advance(time.Minute)
	m.sweep()
	if n := m.size(); n != 0 {
		t.Fatalf("size once the windows are empty = %d, want 0", n)
	}
}

func TestMemorySweeper(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := newMemory(c.Now, time.Millisecond)
	defer m.Close()
	allow(t, m, Policy{Name: "tb", Algorithm: TokenBucket, Limit: 1, Period: time.Second}, "k")
	c.Advance(time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for m.size() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not drop an idle key within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMemoryClose(t *testing.T) {
	t.Parallel()
	m := NewMemory(nil)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	p := Policy{Name: "p", Algorithm: TokenBucket, Limit: 1, Period: time.Second}
	if _, err := m.Allow(t.Context(), p, "k"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Allow after Close: err = %v, want ErrClosed", err)
	}
}
