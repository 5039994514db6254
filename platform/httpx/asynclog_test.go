package httpx

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"gatehouse/platform/testenv"
)

type lockedBuffer = testenv.SyncBuffer

// gateWriter blocks every write until open is closed; entered is closed by
// the first write, so a test knows the writer goroutine is stuck.
type gateWriter struct {
	lockedBuffer
	once    sync.Once
	entered chan struct{}
	open    chan struct{}
}

func newGateWriter() *gateWriter {
	return &gateWriter{entered: make(chan struct{}), open: make(chan struct{})}
}

func (w *gateWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.open
	return w.lockedBuffer.Write(p)
}

// waitFor fails the test if ch is not closed within a few seconds: a hang
// is a failure, not a test timeout.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// jsonLines parses out as one JSON object per line, failing on any other line.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		lines = append(lines, m)
	}
	return lines
}

func countMsg(lines []map[string]any, msg string) int {
	n := 0
	for _, m := range lines {
		if m["msg"] == msg {
			n++
		}
	}
	return n
}

// Every access line of concurrent requests is written, whole, by Close.
func TestAsyncLogConcurrentRequests(t *testing.T) {
	const n = 400
	out := &lockedBuffer{}
	h := NewAsyncHandler(out, 0, "json", slog.LevelInfo)
	s := New(Options{Logger: slog.New(h), MaxBodyBytes: 64})
	if err := s.Mount(testRoutes()...); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req := httptest.NewRequest("GET", "/items/7", nil)
			req.Header.Set("X-Request-ID", fmt.Sprintf("req-%d", i))
			s.ServeHTTP(httptest.NewRecorder(), req)
		})
	}
	wg.Wait()
	h.Close()

	seen := map[string]bool{}
	for _, m := range jsonLines(t, out.String()) {
		if m["msg"] != "request" {
			t.Errorf("unexpected line %v", m)
			continue
		}
		id := m["request_id"].(string)
		if seen[id] {
			t.Errorf("request %s logged twice", id)
		}
		seen[id] = true
	}
	if len(seen) != n {
		t.Errorf("%d access lines after Close, want %d", len(seen), n)
	}
}

// With the output stuck and the queue full, a request does not wait: its
// access line is dropped, and the exact count is reported once the writer
// catches up. Warnings, errors and the server's other lines wait instead.
func TestAsyncLogDropsWhenFull(t *testing.T) {
	out := newGateWriter()
	h := NewAsyncHandler(out, 4, "json", slog.LevelInfo)
	s := New(Options{Logger: slog.New(h), MaxBodyBytes: 64})
	if err := s.Mount(testRoutes()...); err != nil {
		t.Fatal(err)
	}
	get := func() { s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/items/7", nil)) }

	get() // taken by the writer goroutine, which then blocks in Write
	waitFor(t, out.entered, "the writer to block")
	requests := make(chan struct{})
	go func() {
		for range 4 + 10 { // 4 fill the queue, 10 are dropped
			get()
		}
		close(requests)
	}()
	waitFor(t, requests, "requests to be answered while the log is stuck")

	// Not dropped: these wait for room in the queue, so they cannot have
	// returned before the output moves.
	var wg sync.WaitGroup
	wg.Go(func() { slog.New(h.Lossy()).Error("boom") })
	wg.Go(func() { slog.New(h).Info("not an access line") })
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
		t.Error("an error or a non-access line did not wait for room in the queue")
	case <-time.After(50 * time.Millisecond):
	}
	close(out.open)
	waitFor(t, waited, "the waiting lines to be queued")
	h.Close()

	lines := jsonLines(t, out.String())
	if got := countMsg(lines, "request"); got != 5 {
		t.Errorf("%d access lines, want 5", got)
	}
	if countMsg(lines, "access log: 10 lines dropped") != 1 {
		t.Errorf("no report of 10 dropped lines:\n%s", out.String())
	}
	for _, m := range lines {
		if strings.HasSuffix(m["msg"].(string), "dropped") && (m["level"] != "WARN" || m["dropped"] != float64(10)) {
			t.Errorf("drop report %v, want level WARN and dropped 10", m)
		}
	}
	if countMsg(lines, "boom") != 1 || countMsg(lines, "not an access line") != 1 {
		t.Errorf("an error or a non-access line was dropped:\n%s", out.String())
	}
}

// Flush returns once everything logged before it is in the output.
func TestAsyncLogFlush(t *testing.T) {
	out := &lockedBuffer{}
	h := NewAsyncHandler(out, 0, "json", slog.LevelInfo)
	defer h.Close()
	log := slog.New(h)
	for i := range 1000 {
		log.Info("line", "i", i)
	}
	h.Flush()
	if got := countMsg(jsonLines(t, out.String()), "line"); got != 1000 {
		t.Errorf("%d lines visible after Flush, want 1000", got)
	}
}

// An idle server's line appears without Flush or Close.
func TestAsyncLogIdleFlush(t *testing.T) {
	out := &lockedBuffer{}
	h := NewAsyncHandler(out, 0, "json", slog.LevelInfo)
	defer h.Close()
	slog.New(h).Info("alone")
	waitForText(t, out, "alone", "a lone line stayed in the buffer")
}

// waitForText waits up to 5 s for text to appear in out, failing with
// what if it does not.
func waitForText(t *testing.T, out *lockedBuffer, text, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), text); {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAsyncLogIdleWriterSleeps: with nothing to write the writer stops
// waking up (it used to tick every logInterval forever), and a line logged
// after a long idle still comes out promptly, as does a Flush.
func TestAsyncLogIdleWriterSleeps(t *testing.T) {
	out := &lockedBuffer{}
	h := NewAsyncHandler(out, 0, "json", slog.LevelInfo)
	defer h.Close()
	log := slog.New(h)
	for round := range 3 {
		time.Sleep(3 * logInterval) // the writer's first ticks find nothing, and it sleeps
		before := h.q.wakeups.Load()
		time.Sleep(30 * logInterval)
		if n := h.q.wakeups.Load() - before; n != 0 {
			t.Fatalf("round %d: the idle writer woke %d times in %v", round, n, 30*logInterval)
		}
		line := fmt.Sprintf("after idle %d", round)
		log.Info(line)
		waitForText(t, out, line, fmt.Sprintf("round %d: a line logged to a sleeping writer stayed in the queue", round))
	}
	time.Sleep(3 * logInterval)
	log.Info("flushed") // queued while the writer sleeps: Flush must still wait for it
	h.Flush()
	if !strings.Contains(out.String(), "flushed") {
		t.Fatal("Flush returned before the line queued ahead of it was written")
	}
}

// Derived loggers keep their attrs and groups, and share the one queue: the
// lines come out in the order they were logged.
func TestAsyncLogWithAttrs(t *testing.T) {
	out := &lockedBuffer{}
	h := NewAsyncHandler(out, 0, "json", slog.LevelInfo)
	log := slog.New(h)
	log.Info("first")
	log.With("module", "auth").WithGroup("g").Info("second", "a", 1)
	log.Info("third")
	if !h.Enabled(t.Context(), slog.LevelInfo) || h.Enabled(t.Context(), slog.LevelDebug) {
		t.Error("Enabled does not follow the real handler's level")
	}
	h.Close()

	lines := jsonLines(t, out.String())
	if len(lines) != 3 || lines[0]["msg"] != "first" || lines[1]["msg"] != "second" || lines[2]["msg"] != "third" {
		t.Fatalf("lines out of order or missing:\n%s", out.String())
	}
	if g, _ := lines[1]["g"].(map[string]any); lines[1]["module"] != "auth" || g["a"] != float64(1) {
		t.Errorf("derived logger lost its attrs or group: %v", lines[1])
	}
}

// A line logged after Close is written at once, by its caller.
func TestAsyncLogAfterClose(t *testing.T) {
	out := &lockedBuffer{}
	h := NewAsyncHandler(out, 0, "json", slog.LevelInfo)
	h.Close()
	h.Close()
	slog.New(h.Lossy()).Info("late")
	h.Flush()
	if !strings.Contains(out.String(), `"msg":"late"`) {
		t.Errorf("a line logged after Close was lost: %q", out.String())
	}
}

// A request's access line is queued, not written, on its goroutine: with
// the output stuck, requests are still answered.
func TestAsyncLogOffRequestPath(t *testing.T) {
	out := newGateWriter()
	h := NewAsyncHandler(out, 0, "json", slog.LevelInfo)
	s := New(Options{Logger: slog.New(h), MaxBodyBytes: 64})
	if err := s.Mount(testRoutes()...); err != nil {
		t.Fatal(err)
	}
	done := make(chan int)
	go func() {
		for range 3 {
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, httptest.NewRequest("GET", "/items/7", nil))
			done <- rec.Code
		}
	}()
	for range 3 {
		select {
		case code := <-done:
			if code != http.StatusOK {
				t.Errorf("status %d", code)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a request waited for the log's output")
		}
	}
	waitFor(t, out.entered, "the writer to reach the output")
	close(out.open)
	h.Close()
	if got := countMsg(jsonLines(t, out.String()), "request"); got != 3 {
		t.Errorf("%d access lines, want 3", got)
	}
}

// Lines logged while Close runs are all written, whole, in the queue or
// after it.
func TestAsyncLogCloseWhileLogging(t *testing.T) {
	out := &lockedBuffer{}
	h := NewAsyncHandler(out, 16, "json", slog.LevelInfo)
	log := slog.New(h)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				log.Info("line", "g", g, "i", i)
			}
		})
	}
	h.Close()
	wg.Wait()
	if got := countMsg(jsonLines(t, out.String()), "line"); got != 8*200 {
		t.Errorf("%d lines, want %d", got, 8*200)
	}
}
