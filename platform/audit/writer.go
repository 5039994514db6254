package audit

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"gatehouse/platform/db"
)

// Overflow policies of a Writer whose queue is full.
const (
	// OverflowBlock makes Record wait up to BlockTimeout for room, then
	// drop the event.
	OverflowBlock = "block"
	// OverflowDrop makes Record drop the event at once.
	OverflowDrop = "drop"
)

// WriterConfig sizes a Writer. Zero fields take the defaults shown.
type WriterConfig struct {
	QueueSize    int           // events waiting to be written; 10000
	BatchSize    int           // events written per transaction, at most; 500
	Interval     time.Duration // longest an event waits for its batch to fill; 200ms
	Overflow     string        // OverflowBlock (default) or OverflowDrop
	BlockTimeout time.Duration // how long OverflowBlock waits; 50ms (never waiting is OverflowDrop)
}

func (c WriterConfig) withDefaults() WriterConfig {
	if c.QueueSize <= 0 {
		c.QueueSize = 10000
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.Interval <= 0 {
		c.Interval = 200 * time.Millisecond
	}
	if c.Overflow != OverflowDrop {
		c.Overflow = OverflowBlock
	}
	if c.BlockTimeout <= 0 {
		c.BlockTimeout = 50 * time.Millisecond
	}
	return c
}

// writeAttempts is how often a batch is tried before its events are
// dropped; a database that is down for longer than the backoff between
// attempts loses events rather than holding the queue, which would then
// make every request wait.
const writeAttempts = 3

// Writer is a Recorder that writes events to the audit_events table in
// batches, in the background, appending each to its tenant's hash chain.
// Record only queues the event; when the queue is full the event waits
// (OverflowBlock, briefly) or is dropped, and drops are counted and
// logged, never returned to the request. It is safe for concurrent use,
// also by several Gatehouse instances sharing one database: chains never
// fork.
type Writer struct {
	db  *db.DB
	cfg WriterConfig
	log *slog.Logger

	// mu guards closed and the closing of queue: Record sends under the
	// read lock, so Close cannot close the channel under a sender.
	mu     sync.RWMutex
	closed bool
	queue  chan Event

	// stop ends the background work early when Close's context ends
	// before everything queued is written.
	stop    context.CancelFunc
	stopCtx context.Context
	done    chan struct{}

	written atomic.Int64
	dropped atomic.Int64
	// cut counts the events dropped because Close's deadline passed: what
	// Close reports, without the events recorded after Close.
	cut atomic.Int64
	// refused counts the events Record found no room for since run last
	// logged them.
	refused atomic.Int64
}

// refusedLogEvery is how often, at most, run logs the events Record found
// no room for: a queue that stays full under a flood of events must not
// flood the log too, and metrics may be off.
const refusedLogEvery = 10 * time.Second

// NewWriter returns a Writer on d and starts its background goroutine;
// Close stops it. log receives write failures; nil discards them.
func NewWriter(d *db.DB, cfg WriterConfig, log *slog.Logger) *Writer {
	w := newWriter(d, cfg, log)
	go w.run()
	return w
}

// newWriter returns a Writer whose background goroutine is not started.
func newWriter(d *db.DB, cfg WriterConfig, log *slog.Logger) *Writer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	ctx, stop := context.WithCancel(context.Background())
	return &Writer{db: d, cfg: cfg, log: log, queue: make(chan Event, cfg.QueueSize),
		stop: stop, stopCtx: ctx, done: make(chan struct{})}
}

// Record completes e from ctx (Complete) and queues it; the secrets in its
// Metadata are masked (Mask) before it is written. The caller must not
// change e.Metadata afterwards. Record never fails: an event that finds
// the queue full past the overflow policy, or that comes after Close, is
// dropped and counted in Dropped, and logged: the first kind in one line
// at most every refusedLogEvery, the second one line each, with its action.
func (w *Writer) Record(ctx context.Context, e Event) {
	Complete(ctx, &e)
	// Metadata is masked by the writer goroutine (prepare), not here: the
	// enqueue then allocates nothing on the request's path.
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		// Rare (a straggler at shutdown, or a bug), so each is logged:
		// its action says what went unrecorded. Never its metadata, which
		// is not masked yet.
		w.dropped.Add(1)
		w.log.Error("audit event dropped: recorded after the writer was closed", "action", e.Action)
		return
	}
	select {
	case w.queue <- e:
		return
	default:
	}
	if w.cfg.Overflow == OverflowDrop {
		w.refuse()
		return
	}
	t := time.NewTimer(w.cfg.BlockTimeout)
	defer t.Stop()
	select {
	case w.queue <- e:
	case <-t.C:
		w.refuse()
	case <-ctx.Done():
		w.refuse()
	}
}

// refuse drops an event that found the queue full: counted now, logged by
// run.
func (w *Writer) refuse() {
	w.dropped.Add(1)
	w.refused.Add(1)
}

// logRefused logs how many events found the queue full since its last
// call, if any, and reports whether it logged.
func (w *Writer) logRefused() bool {
	n := w.refused.Swap(0)
	if n == 0 {
		return false
	}
	w.log.Error("audit events dropped: the queue was full", "events", n, "queue_size", w.cfg.QueueSize)
	return true
}

// Queued returns the number of events waiting in the queue.
func (w *Writer) Queued() int { return len(w.queue) }

// Dropped returns the number of events lost: refused by a full queue,
// recorded after Close, or whose batch the database refused every time.
func (w *Writer) Dropped() int64 { return w.dropped.Load() }

// Written returns the number of events committed to the database.
func (w *Writer) Written() int64 { return w.written.Load() }

// Close stops accepting events, writes everything already queued and
// returns once it is written, so graceful shutdown calls it before closing
// the database. If ctx ends first, the events not yet written are dropped
// and counted, and Close returns an error that says how many and wraps
// ctx's. Calling Close again waits likewise.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.queue)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
	}
	w.stop()
	// The batch being written may still finish, but every later one is
	// dropped without touching the database (write checks the stop first),
	// so the queue drains into Dropped quickly; waiting for that makes the
	// count exact and keeps the writer off the database the caller closes
	// next.
	<-w.done
	return fmt.Errorf("audit writer: %d events dropped, not written before the deadline: %w",
		w.cut.Load(), ctx.Err())
}

// run collects events into batches and writes each when it is full, when
// Interval passes, or when the queue is closed.
func (w *Writer) run() {
	defer close(w.done)
	defer w.stop()
	batch := make([]Event, 0, w.cfg.BatchSize)
	tick := time.NewTicker(w.cfg.Interval)
	defer tick.Stop()
	var logged time.Time // when refusals were last logged
	for {
		select {
		case e, ok := <-w.queue:
			if !ok {
				w.write(batch)
				w.logRefused()
				return
			}
			batch = append(batch, e)
			if len(batch) < w.cfg.BatchSize {
				continue
			}
		case <-tick.C:
			if time.Since(logged) >= refusedLogEvery && w.logRefused() {
				logged = time.Now()
			}
			if len(batch) == 0 {
				continue
			}
		}
		w.write(batch)
		batch = batch[:0]
	}
}

// write writes batch, retrying with backoff, and counts it as written or
// dropped.
func (w *Writer) write(batch []Event) {
	if len(batch) == 0 {
		return
	}
	ctx := w.stopCtx
	if ctx.Err() != nil {
		w.cutOff(len(batch)) // not worth preparing
		return
	}
	rows := w.prepare(batch)
	var err error
	for attempt := range writeAttempts {
		// Checked here, not left to the query: on SQLite a statement
		// does not stop for a cancelled context (db.DB.Conn).
		if err = ctx.Err(); err != nil {
			break
		}
		if err = appendRows(ctx, w.db, rows); err == nil {
			w.written.Add(int64(len(rows)))
			return
		}
		if attempt == writeAttempts-1 {
			break
		}
		w.log.Warn("audit batch not written, retrying", "events", len(rows), "attempt", attempt+1, "error", err.Error())
		select {
		case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if ctx.Err() != nil {
		w.cutOff(len(rows)) // Close reports the total
		return
	}
	if len(rows) > 1 && w.db.Ping(ctx) == nil {
		// The database answers, so it refused something in the batch:
		// one event must not take the others with it.
		w.writeEach(ctx, rows)
		return
	}
	w.dropped.Add(int64(len(rows)))
	w.log.Error("audit events dropped: the database refused their batch", "events", len(rows), "error", err.Error())
}

// writeEach writes rows one at a time, dropping those the database
// refuses, and logs them in one line.
func (w *Writer) writeEach(ctx context.Context, rows []stored) {
	var refused int
	var first error
	for i := range rows {
		if ctx.Err() != nil {
			w.cutOff(len(rows) - i)
			break
		}
		if err := appendRows(ctx, w.db, rows[i:i+1]); err != nil {
			refused++
			first = cmp.Or(first, err)
			continue
		}
		w.written.Add(1)
	}
	if refused > 0 {
		w.dropped.Add(int64(refused))
		w.log.Error("audit events dropped: the database refused them, one at a time", "events", refused,
			"batch", len(rows), "error", first.Error())
	}
}

// cutOff drops n events because Close's deadline passed.
func (w *Writer) cutOff(n int) {
	w.dropped.Add(int64(n))
	w.cut.Add(int64(n))
}

// text makes s storable in a PostgreSQL text column, which refuses NUL and
// invalid UTF-8 and would refuse the whole batch with it: fields that can
// carry what a client sent (an email tried, a user agent) are cleaned, the
// rest are the code's own.
func text(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// prepare turns queued events into rows, without their chain fields.
func (w *Writer) prepare(batch []Event) []stored {
	rows := make([]stored, len(batch))
	for i, e := range batch {
		meta := "{}"
		if len(e.Metadata) > 0 {
			// encoding/json sorts map keys, so equal metadata is equal text.
			b, err := json.Marshal(Mask(e.Metadata))
			if err != nil {
				w.log.Warn("audit metadata cannot be encoded; stored without it", "action", e.Action, "error", err.Error())
				b = []byte(`{"error":"metadata could not be encoded"}`)
			}
			meta = string(b)
		}
		id, err := uuid.NewV7()
		if err != nil {
			id = uuid.New()
		}
		rows[i] = stored{ID: id.String(), TenantID: e.TenantID, Time: e.Time.UTC().Truncate(time.Microsecond),
			ActorType: e.Actor.Type, ActorID: text(e.Actor.ID), Action: e.Action, ResourceType: e.ResourceType,
			ResourceID: text(e.ResourceID), Outcome: e.Outcome, IP: text(e.IP), UserAgent: text(e.UserAgent),
			RequestID: text(e.RequestID), Metadata: meta}
	}
	return rows
}

// appendRows appends rows to their tenants' chains in one transaction: for
// each chain it takes the chain's lock, reads the chain's last seq and
// hash, and sets each row's Seq, PrevHash and Hash, in the order given.
// Rows must have every other field set.
func appendRows(ctx context.Context, d *db.DB, rows []stored) error {
	// Chains are locked in one order by every writer, so two
	// transactions that each hold one chain's lock never wait on each
	// other for the next.
	order := make([]int, len(rows))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(rows[a].TenantID, rows[b].TenantID) })
	return d.InTx(ctx, func(ctx context.Context) error {
		for i := 0; i < len(order); {
			tenant := rows[order[i]].TenantID
			seq, prev, err := lockChain(ctx, d, tenant)
			if err != nil {
				return err
			}
			for ; i < len(order) && rows[order[i]].TenantID == tenant; i++ {
				r := &rows[order[i]]
				seq++
				r.Seq, r.PrevHash = seq, prev
				r.Hash = r.sum()
				prev = r.Hash
			}
		}
		// The SQLite driver binds parameters in time quadratic in their
		// number per statement, so it gets short INSERTs; PostgreSQL is
		// happiest with few long ones.
		per := 500
		if d.Dialect() == db.SQLite {
			per = 40
		}
		if err := d.Conn(ctx).CreateInBatches(rows, per).Error; err != nil {
			return fmt.Errorf("insert audit events: %w", err)
		}
		return nil
	})
}

// lockChain locks tenant's chain until the transaction in ctx ends and
// returns the seq and hash the chain's next event follows: its last
// event's, else its anchor's, else 0 and "".
//
// On PostgreSQL the lock is a transaction-level advisory lock, so writers
// on other instances that append to the same chain wait here rather than
// read the same last event and fork the chain. On SQLite the transaction
// already holds the database's one write lock from BEGIN (the db package
// opens it with _txlock=immediate).
func lockChain(ctx context.Context, d *db.DB, tenant string) (int64, string, error) {
	g := d.Conn(ctx)
	if d.Dialect() == db.Postgres {
		if err := g.Exec("SELECT pg_advisory_xact_lock(?)", chainLockKey(tenant)).Error; err != nil {
			return 0, "", fmt.Errorf("lock audit chain: %w", err)
		}
	}
	var last []struct {
		Seq  int64
		Hash string
	}
	if err := g.Raw("SELECT seq, hash FROM audit_events WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1", tenant).
		Scan(&last).Error; err != nil {
		return 0, "", fmt.Errorf("read audit chain head: %w", err)
	}
	if len(last) == 0 {
		if err := g.Raw("SELECT seq, hash FROM audit_anchors WHERE tenant_id = ?", tenant).Scan(&last).Error; err != nil {
			return 0, "", fmt.Errorf("read audit chain anchor: %w", err)
		}
	}
	if len(last) == 0 {
		return 0, "", nil
	}
	return last[0].Seq, last[0].Hash, nil
}

// chainLockKey is the advisory lock number of tenant's chain: a 64-bit
// hash of a name no other lock in Gatehouse uses.
func chainLockKey(tenant string) int64 {
	h := fnv.New64a()
	h.Write([]byte("gatehouse.audit.chain:"))
	h.Write([]byte(tenant))
	return int64(h.Sum64())
}
