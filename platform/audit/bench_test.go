package audit

import (
	"context"
	"testing"
)

// BenchmarkRecord measures what a request pays to record an event: the
// enqueue only. A goroutine drains the queue in place of the database.
func BenchmarkRecord(b *testing.B) {
	w := newWriter(nil, WriterConfig{}, nil)
	go func() {
		for range w.queue {
		}
	}()
	ctx := WithRequest(context.Background(), Request{IP: "10.0.0.1", UserAgent: "bench", RequestID: "req-1"})
	e := Event{TenantID: "t", Actor: User("u"), Action: "auth.login", Outcome: Success,
		Metadata: map[string]any{"method": "password", "mfa": false}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Record(ctx, e)
		}
	})
	b.StopTimer()
	w.mu.Lock()
	close(w.queue)
	w.closed = true
	w.mu.Unlock()
	if w.Dropped() != 0 {
		b.Errorf("Dropped() = %d", w.Dropped())
	}
}
