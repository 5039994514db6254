package httpx

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultLogQueue is how many records an AsyncHandler holds before the
// access log starts dropping. Each queue slot takes 448 bytes (a record's
// or an access line's fields), so the default costs some 3.7 MB, and rides
// out a pause of the output (a slow pipe, a log collector restarting) of a
// few thousand requests.
const DefaultLogQueue = 8192

// logBufferSize is the buffer between the writer goroutine and the output:
// under load many lines go out in one write(2).
const logBufferSize = 64 << 10

// logInterval is how often the writer drains the queue. At 30,000 lines a
// second that is some 300 lines per wakeup, well within the queue.
const logInterval = 10 * time.Millisecond

// An AsyncHandler takes log records off the caller's goroutine: Handle
// queues a copy and returns, and one goroutine formats the records with the
// real handler into a buffer over the output. The writer wakes every
// logInterval (or at once for Flush and Close), formats everything queued
// and flushes: a busy server's lines go out in a few large writes, with no
// wakeup per line, and a lone line within logInterval. A writer that found
// nothing to write sleeps until the next record: an idle server's log makes
// no wakeups at all.
//
// Records keep their order. When the queue is full, Handle waits, except on
// the Lossy view, which the access log uses: there a record below Warn is
// dropped and counted, and a warning saying how many were lost is written
// once the writer has caught up. Errors, warnings and the other logs (audit
// lines among them) are never dropped; waiting for them is no worse than the
// synchronous write they had before, and keeps them in order.
//
// Values are formatted later, on the writer goroutine: what a caller logs
// (a map, a slice, a pointer) must not change after the call. Handle does
// not pass its context on; the JSON and text handlers do not read it.
//
// Close drains the queue and flushes; records logged after it are written
// synchronously.
type AsyncHandler struct {
	h     slog.Handler // the real handler, with this view's attrs and groups
	q     *logQueue
	lossy bool
}

type logQueue struct {
	ch   chan logItem
	base slog.Handler // the real handler, for the dropped-lines warning
	// json: base is slog's JSON handler with default options, so the
	// access log's lines it would format are written by appendJSON.
	json    bool
	buf     *bufio.Writer
	out     io.Writer
	dropped atomic.Int64
	wake    chan struct{} // cap 1: Flush and Close want the writer now
	done    chan struct{} // closed when the writer goroutine has finished
	wakeups atomic.Int64  // times the writer woke, for tests

	// mu guards closed and the closing of ch: Handle sends under the read
	// lock, Close takes the write lock. After Close, late records are
	// written by their caller, one at a time under late.
	mu     sync.RWMutex
	closed bool
	late   sync.Mutex
}

// logItem is a queued record, an access-log line (access set), or (with
// flushed set) a Flush waiting for everything queued before it.
type logItem struct {
	h       slog.Handler
	r       slog.Record
	access  bool
	acc     accessLine
	flushed chan struct{}
}

// NewLogHandler returns the handler for the log settings: one JSON object
// per line, or text with format "text".
func NewLogHandler(w io.Writer, format string, level slog.Leveler) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.NewTextHandler(w, opts)
	}
	return slog.NewJSONHandler(w, opts)
}

// NewAsyncHandler starts an AsyncHandler writing to out through
// NewLogHandler(format, level) over its buffer. queue <= 0 means
// DefaultLogQueue. Close it to write what is left.
func NewAsyncHandler(out io.Writer, queue int, format string, level slog.Leveler) *AsyncHandler {
	if queue <= 0 {
		queue = DefaultLogQueue
	}
	q := &logQueue{ch: make(chan logItem, queue), buf: bufio.NewWriterSize(out, logBufferSize),
		out: out, wake: make(chan struct{}, 1), done: make(chan struct{}), json: format != "text"}
	q.base = NewLogHandler(q.buf, format, level)
	go q.run()
	return &AsyncHandler{h: q.base, q: q}
}

// Lossy returns a view of a that drops records below Warn rather than wait
// when the queue is full: for the access log, which must never hold up a
// request.
func (a *AsyncHandler) Lossy() *AsyncHandler { return &AsyncHandler{h: a.h, q: a.q, lossy: true} }

// Enabled asks the real handler; the queue is not involved.
func (a *AsyncHandler) Enabled(ctx context.Context, l slog.Level) bool { return a.h.Enabled(ctx, l) }

// WithAttrs and WithGroup derive from the real handler (attrs are formatted
// once, here); the derived handler shares the queue and the output.
func (a *AsyncHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &AsyncHandler{h: a.h.WithAttrs(attrs), q: a.q, lossy: a.lossy}
}

func (a *AsyncHandler) WithGroup(name string) slog.Handler {
	return &AsyncHandler{h: a.h.WithGroup(name), q: a.q, lossy: a.lossy}
}

// Handle queues r and returns. Clone does not allocate: it only makes sure
// the copy and the caller's record never share attrs they could append to.
func (a *AsyncHandler) Handle(ctx context.Context, r slog.Record) error {
	q := a.q
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return q.writeLate(ctx, a.h, r)
	}
	a.enqueue(logItem{h: a.h, r: r.Clone()}, r.Level)
	return nil
}

// enqueue queues it, or drops and counts it when the queue is full, the
// view is lossy and the level below Warn. The caller holds q.mu's read lock
// and has checked that the queue is open.
func (a *AsyncHandler) enqueue(it logItem, level slog.Level) {
	q := a.q
	if !a.lossy || level >= slog.LevelWarn {
		q.ch <- it
		return
	}
	select {
	case q.ch <- it:
	default:
		q.dropped.Add(1)
	}
}

// access queues an access-log line, as Handle would queue l.record(), for
// the writer to format. The caller has checked that Info is enabled.
func (a *AsyncHandler) access(l *accessLine) {
	q := a.q
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		_ = q.writeLate(context.Background(), a.h, l.record())
		return
	}
	a.enqueue(logItem{h: a.h, access: true, acc: *l}, slog.LevelInfo)
}

// Flush waits until every record queued before it is written to the output.
func (a *AsyncHandler) Flush() {
	q := a.q
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		<-q.done // Close flushes, and late records are flushed as written
		return
	}
	done := make(chan struct{})
	q.ch <- logItem{flushed: done}
	q.mu.RUnlock()
	q.poke()
	<-done
}

// Close writes every queued record, flushes, and stops the writer
// goroutine. It is safe to call more than once.
func (a *AsyncHandler) Close() error {
	q := a.q
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	q.poke()
	<-q.done
	return nil
}

// run is the writer goroutine. Under load it drains the queue every
// logInterval. Once a drain finds nothing it stops the ticker and waits on
// the queue itself, so an idle server's log makes no wakeups; the next
// record (or a Flush, or Close) starts it again.
func (q *logQueue) run() {
	defer close(q.done)
	tick := time.NewTicker(logInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-q.wake:
		}
		q.wakeups.Add(1)
		wrote, open := q.drain()
		if !open {
			return
		}
		if wrote {
			continue
		}
		tick.Stop()
		select {
		case it, ok := <-q.ch:
			q.wakeups.Add(1)
			if !q.write(it, ok) {
				return
			}
		case <-q.wake:
		}
		// What the first record starts is written by the next drain,
		// within logInterval, with whatever followed it.
		tick.Reset(logInterval)
	}
}

// drain writes every queued record and flushes. It reports whether there
// was anything to write, and false for open once the queue is closed and
// empty.
func (q *logQueue) drain() (wrote, open bool) {
	for {
		select {
		case it, ok := <-q.ch:
			if !q.write(it, ok) {
				return wrote, false
			}
			wrote = true
		default:
			q.catchUp()
			return wrote, true
		}
	}
}

// write handles one receive from the queue: a record or access line goes
// to the buffer, a Flush is answered once everything before it is out.
// ok false (the queue closed and empty) flushes and reports false.
func (q *logQueue) write(it logItem, ok bool) bool {
	switch {
	case !ok:
		q.catchUp()
		return false
	case it.flushed != nil:
		q.catchUp()
		close(it.flushed)
	case it.access:
		q.writeAccess(it.h, &it.acc)
	default:
		_ = it.h.Handle(context.Background(), it.r) // nowhere to report a failed log write
	}
	return true
}

// writeAccess writes an access-log line: appended straight into the buffer
// when h is the plain JSON handler and the line needs no escaping, else
// formatted by h from the line's record. Either way the bytes are the same.
func (q *logQueue) writeAccess(h slog.Handler, l *accessLine) {
	if q.json && h == q.base {
		if b, ok := l.appendJSON(q.buf.AvailableBuffer()); ok {
			_, _ = q.buf.Write(b) // a failed write is reset in catchUp
			return
		}
	}
	_ = h.Handle(context.Background(), l.record())
}

func (q *logQueue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// catchUp reports dropped lines, then flushes. A failed flush resets the
// buffer: bufio's errors are sticky, and one failed write to the output
// must not silence the log for good.
func (q *logQueue) catchUp() {
	if n := q.dropped.Swap(0); n > 0 {
		r := slog.NewRecord(time.Now(), slog.LevelWarn, "access log: "+strconv.FormatInt(n, 10)+" lines dropped", 0)
		r.AddAttrs(slog.Int64("dropped", n))
		_ = q.base.Handle(context.Background(), r)
	}
	if err := q.buf.Flush(); err != nil {
		q.buf.Reset(q.out)
	}
}

// writeLate writes a record that came after Close, on the caller's
// goroutine, once the writer goroutine has finished with the buffer.
func (q *logQueue) writeLate(ctx context.Context, h slog.Handler, r slog.Record) error {
	<-q.done
	q.late.Lock()
	defer q.late.Unlock()
	err := h.Handle(ctx, r)
	if ferr := q.buf.Flush(); ferr != nil {
		q.buf.Reset(q.out)
		if err == nil {
			err = ferr
		}
	}
	return err
}
