package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"gatehouse/platform/db"
	"gatehouse/platform/testenv"
)

// TestSQLite runs the suite on a SQLite file per test.
func TestSQLite(t *testing.T) {
	t.Parallel()
	suite(t, func(t *testing.T) db.Config {
		return db.Config{SQLitePath: filepath.Join(t.TempDir(), "gatehouse.db")}
	})
}

// TestPostgres runs the suite on a PostgreSQL schema per test.
func TestPostgres(t *testing.T) {
	t.Parallel()
	testenv.Need(t, testenv.EnvPostgres)
	suite(t, func(t *testing.T) db.Config {
		return db.Config{URL: testenv.PostgresURL(t), MaxOpenConns: 8}
	})
}

// env is one test's database.
type env struct {
	t   *testing.T
	cfg db.Config
	db  *db.DB
}

// suite is the behaviour every backend must show. newConfig returns the
// configuration of a fresh, empty database for one test.
func suite(t *testing.T, newConfig func(t *testing.T) db.Config) {
	setup := func(t *testing.T) *env {
		t.Helper()
		e := &env{t: t, cfg: newConfig(t)}
		e.db = e.open()
		if err := e.db.Migrate(context.Background()); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		return e
	}
	for _, c := range []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"WriterWritesEveryEventUnderLoad", testWriterLoad},
		{"WriterDropOverflowCountsExactly", testWriterDrop},
		{"CloseFlushesTheQueue", testCloseFlushes},
		{"CloseDeadlineDropsAndCounts", testCloseDeadline},
		{"ChainsPerTenant", testChainsPerTenant},
		{"ConcurrentWritersDoNotFork", testConcurrentWriters},
		{"TamperUpdate", testTamperUpdate},
		{"TamperDelete", testTamperDelete},
		{"TamperInsert", testTamperInsert},
		{"Prune", testPrune},
		{"Retention", testRetention},
		{"RetentionPrunesSoonAfterStart", testRetentionSoonAfterStart},
		{"VerifyDuringPrune", testVerifyDuringPrune},
		{"CancelledContextStops", testCancelledStops},
		{"MasksSecrets", testMasking},
		{"ClientTextIsStoredCleaned", testClientText},
		{"RefusedEventDroppedAlone", testRefusedEventAlone},
		{"ListFilters", testListFilters},
		{"ListPagination", testListPagination},
		{"HTTP", testHTTP},
		{"HTTPExports", testHTTPExports},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, setup(t))
		})
	}
}

// open opens another handle on the test's database, as another instance
// of Gatehouse would.
func (e *env) open() *db.DB {
	e.t.Helper()
	d, err := db.Open(context.Background(), e.cfg, nil)
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	e.t.Cleanup(func() { d.Close() })
	return d
}

// write records events through a Writer and closes it.
func (e *env) write(events ...Event) {
	e.t.Helper()
	w := NewWriter(e.db, WriterConfig{Interval: 10 * time.Millisecond}, nil)
	for _, ev := range events {
		w.Record(context.Background(), ev)
	}
	e.close(w)
	if w.Dropped() != 0 {
		e.t.Fatalf("Dropped() = %d", w.Dropped())
	}
}

func (e *env) close(w *Writer) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
}

// events returns n events of tenant, named action.1 to action.n.
func events(tenant, action string, n int) []Event {
	out := make([]Event, n)
	for i := range out {
		out[i] = Event{TenantID: tenant, Actor: User("u-" + tenant), Action: fmt.Sprintf("%s.%d", action, i+1),
			Outcome: Success, ResourceType: "thing", ResourceID: fmt.Sprint(i)}
	}
	return out
}

func (e *env) count(where string, args ...any) int64 {
	e.t.Helper()
	var n int64
	if err := e.db.Conn(context.Background()).Table("audit_events").Where(where, args...).Count(&n).Error; err != nil {
		e.t.Fatalf("count: %v", err)
	}
	return n
}

// rows returns tenant's chain in seq order.
func (e *env) rows(tenant string) []stored {
	e.t.Helper()
	var rs []stored
	if err := e.db.Conn(context.Background()).Where("tenant_id = ?", tenant).Order("seq").Find(&rs).Error; err != nil {
		e.t.Fatalf("rows: %v", err)
	}
	return rs
}

// verify returns Verify's breaks for every chain, failing on error.
func (e *env) verify() []Break {
	e.t.Helper()
	bs, err := Verify(context.Background(), e.db, nil)
	if err != nil {
		e.t.Fatalf("Verify: %v", err)
	}
	return bs
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if err := e.db.Conn(context.Background()).Exec(sql, args...).Error; err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// contiguous fails unless tenant's chain holds seqs 1..n (or from..n).
func (e *env) contiguous(tenant string, from int64, n int) {
	e.t.Helper()
	rs := e.rows(tenant)
	if len(rs) != n {
		e.t.Fatalf("tenant %q: %d rows, want %d", tenant, len(rs), n)
	}
	for i, r := range rs {
		if r.Seq != from+int64(i) {
			e.t.Fatalf("tenant %q: row %d has seq %d, want %d", tenant, i, r.Seq, from+int64(i))
		}
	}
}

func testWriterLoad(t *testing.T, e *env) {
	w := NewWriter(e.db, WriterConfig{Overflow: OverflowBlock}, nil)
	const goroutines, each = 50, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				w.Record(context.Background(), Event{TenantID: fmt.Sprintf("t%d", g%5), Actor: Service("load"),
					Action: "load.test", Outcome: Success, ResourceID: fmt.Sprint(i)})
			}
		})
	}
	wg.Wait()
	e.close(w)
	if got := e.count("1 = 1"); got != goroutines*each {
		t.Errorf("rows = %d, want %d", got, goroutines*each)
	}
	if w.Written() != goroutines*each || w.Dropped() != 0 || w.Queued() != 0 {
		t.Errorf("Written() = %d, Dropped() = %d, Queued() = %d; want %d, 0, 0", w.Written(), w.Dropped(), w.Queued(), goroutines*each)
	}
	if bs := e.verify(); len(bs) != 0 {
		t.Errorf("Verify: %+v", bs)
	}
}

func testWriterDrop(t *testing.T, e *env) {
	var logs syncBuffer
	w := NewWriter(e.db, WriterConfig{QueueSize: 2, BatchSize: 2, Interval: time.Millisecond, Overflow: OverflowDrop},
		slog.New(slog.NewTextHandler(&logs, nil)))
	const goroutines, each = 10, 100
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				w.Record(context.Background(), Event{TenantID: "t", Action: "drop.test"})
			}
		})
	}
	wg.Wait()
	e.close(w)
	w.Record(context.Background(), Event{TenantID: "t", Action: "after.close"})
	sent := int64(goroutines*each + 1)
	if w.Written()+w.Dropped() != sent {
		t.Errorf("Written() %d + Dropped() %d != sent %d", w.Written(), w.Dropped(), sent)
	}
	if w.Dropped() < 2 {
		t.Errorf("Dropped() = %d: a queue of 2 should have overflowed (and the event after Close counts)", w.Dropped())
	}
	if got := e.count("1 = 1"); got != w.Written() {
		t.Errorf("rows = %d, Written() = %d", got, w.Written())
	}
	if err := w.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Every event the full queue refused is in the log, at most one line
	// per refusedLogEvery and one more at Close; the one after Close is not.
	lines := regexp.MustCompile(`level=ERROR msg="audit events dropped: the queue was full" events=(\d+) queue_size=2`).
		FindAllStringSubmatch(logs.String(), -1)
	var logged int64
	for _, l := range lines {
		n, _ := strconv.ParseInt(l[1], 10, 64)
		logged += n
	}
	if logged != w.Dropped()-1 || len(lines) > 2 {
		t.Errorf("%d lines log %d refused events, want %d in at most 2:\n%s", len(lines), logged, w.Dropped()-1, logs.String())
	}
}

func testCloseFlushes(t *testing.T, e *env) {
	// An hour's interval and a large batch: only Close can write these.
	w := NewWriter(e.db, WriterConfig{Interval: time.Hour, BatchSize: 1000}, nil)
	for _, ev := range events("c", "c", 25) {
		w.Record(context.Background(), ev)
	}
	e.close(w)
	if got := e.count("1 = 1"); got != 25 || w.Written() != 25 {
		t.Errorf("rows = %d, Written() = %d; want 25", got, w.Written())
	}
}

func testCloseDeadline(t *testing.T, e *env) {
	// The writer's goroutine starts only once Close's deadline has passed,
	// so every queued event meets a stopped writer: none may reach the
	// database (on SQLite a statement ignores the cancelled context), and
	// Close says how many were lost: not counting an event recorded after
	// Close, which is dropped too.
	w := newWriter(e.db, WriterConfig{BatchSize: 10}, nil)
	for _, ev := range events("d", "d", 25) {
		w.Record(context.Background(), ev)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	closed := make(chan error, 1)
	go func() { closed <- w.Close(ctx) }()
	<-w.stopCtx.Done()
	w.Record(context.Background(), events("d", "d", 1)[0])
	go w.run()
	err := <-closed
	if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "25 events dropped") {
		t.Errorf("Close past its deadline = %v, want the count (25) and context.Canceled", err)
	}
	if got := e.count("1 = 1"); got != 0 || w.Written() != 0 || w.Dropped() != 26 {
		t.Errorf("rows %d, Written() %d, Dropped() %d; want 0, 0, 26", got, w.Written(), w.Dropped())
	}
}

func testChainsPerTenant(t *testing.T, e *env) {
	var evs []Event
	a, b := events("a", "x", 30), events("b", "y", 20)
	for i := range 30 {
		evs = append(evs, a[i])
		if i < 20 {
			evs = append(evs, b[i])
		}
	}
	e.write(evs...)
	e.write(events("", "platform", 3)...)
	e.contiguous("a", 1, 30)
	e.contiguous("b", 1, 20)
	e.contiguous("", 1, 3)
	rs := e.rows("a")
	if rs[0].PrevHash != "" || rs[1].PrevHash != rs[0].Hash {
		t.Errorf("links: first prev %q, second prev %q, first hash %q", rs[0].PrevHash, rs[1].PrevHash, rs[0].Hash)
	}
	// Order within a chain is the order of recording.
	for i, r := range rs {
		if want := fmt.Sprintf("x.%d", i+1); r.Action != want {
			t.Fatalf("seq %d holds %s, want %s", r.Seq, r.Action, want)
		}
	}
	if bs := e.verify(); len(bs) != 0 {
		t.Errorf("Verify: %+v", bs)
	}
	one := "a"
	if bs, err := Verify(context.Background(), e.db, &one); err != nil || len(bs) != 0 {
		t.Errorf("Verify(a) = %+v, %v", bs, err)
	}
}

func testConcurrentWriters(t *testing.T, e *env) {
	// Two handles on one database, as two instances have; small batches
	// make many transactions that race for the chain's head.
	d2 := e.open()
	cfg := WriterConfig{BatchSize: 7, Interval: time.Millisecond}
	// Without the chain lock the unique (tenant_id, seq) index would
	// refuse the loser of each race and the writer would retry; with it
	// no batch ever fails, so the log stays empty.
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	w1, w2 := NewWriter(e.db, cfg, log), NewWriter(d2, cfg, log)
	const per = 300
	var wg sync.WaitGroup
	for _, w := range []*Writer{w1, w2, w1, w2} {
		wg.Go(func() {
			for i := range per {
				w.Record(context.Background(), Event{TenantID: "shared", Action: "race", ResourceID: fmt.Sprint(i)})
				if i%25 == 0 {
					time.Sleep(time.Millisecond) // let the writers interleave
				}
			}
		})
	}
	wg.Wait()
	e.close(w1)
	e.close(w2)
	if logs.String() != "" || w1.Dropped()+w2.Dropped() != 0 {
		t.Errorf("writers failed a batch: dropped %d, log:\n%s", w1.Dropped()+w2.Dropped(), logs.String())
	}
	e.contiguous("shared", 1, 4*per)
	if bs := e.verify(); len(bs) != 0 {
		t.Errorf("Verify: %+v", bs)
	}
}

type syncBuffer = testenv.SyncBuffer

// tamperSetup writes chains "victim" (10 events) and "bystander" (5).
func tamperSetup(e *env) []stored {
	evs := events("victim", "v", 10)
	for i := range evs {
		evs[i].Time = time.Date(2025, 1, 1, 0, i, 0, 0, time.UTC)
	}
	e.write(evs...)
	e.write(events("bystander", "b", 5)...)
	if bs := e.verify(); len(bs) != 0 {
		e.t.Fatalf("Verify before tampering: %+v", bs)
	}
	return e.rows("victim")
}

// wantBreak fails unless Verify finds exactly one break: want.
func wantBreak(e *env, want Break) {
	e.t.Helper()
	bs := e.verify()
	if len(bs) != 1 || bs[0] != want {
		e.t.Fatalf("Verify = %+v, want [%+v]", bs, want)
	}
}

func testTamperUpdate(t *testing.T, e *env) {
	rs := tamperSetup(e)
	e.exec("UPDATE audit_events SET action = ? WHERE id = ?", "v.harmless", rs[4].ID)
	wantBreak(e, Break{Tenant: "victim", Seq: 5, ID: rs[4].ID, Reason: ReasonChanged})
}

func testTamperDelete(t *testing.T, e *env) {
	rs := tamperSetup(e)
	e.exec("DELETE FROM audit_events WHERE id = ?", rs[5].ID)
	wantBreak(e, Break{Tenant: "victim", Seq: 6, ID: rs[6].ID, Reason: ReasonMissing})
}

func testTamperInsert(t *testing.T, e *env) {
	rs := tamperSetup(e)
	// A forger who knows the format writes a well-formed row dated
	// between events 5 and 6, linked to event 5; the only free position
	// is the end of the chain.
	f := rs[4]
	f.ID, f.Seq, f.Time = "0190aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee", 11, rs[4].Time.Add(30*time.Second)
	f.Action, f.Metadata, f.PrevHash = "v.forged", `{"note":"all fine"}`, rs[4].Hash
	f.Hash = f.sum()
	if err := e.db.Conn(context.Background()).Create(&f).Error; err != nil {
		t.Fatalf("insert: %v", err)
	}
	wantBreak(e, Break{Tenant: "victim", Seq: 11, ID: f.ID, Reason: ReasonInserted})
}

func testPrune(t *testing.T, e *env) {
	now := time.Now().UTC()
	old, recent := now.Add(-48*time.Hour), now.Add(-time.Minute)
	evs := events("p", "p", 10)
	// Old, except 6, 8, 9 and 10: 7 is old but follows a recent one, so
	// it stays (pruning never makes a hole).
	for i := range evs {
		evs[i].Time = old.Add(time.Duration(i) * time.Second)
		if i == 5 || i >= 7 {
			evs[i].Time = recent
		}
	}
	e.write(evs...)
	gone := events("gone", "g", 4)
	for i := range gone {
		gone[i].Time = old
	}
	e.write(gone...)
	e.write(events("fresh", "f", 3)...)
	before := e.rows("p")

	n, err := Prune(context.Background(), e.db, now.Add(-24*time.Hour))
	if err != nil || n != 5+4 {
		t.Fatalf("Prune = %d, %v; want 9", n, err)
	}
	e.contiguous("p", 6, 5)
	e.contiguous("gone", 0, 0)
	e.contiguous("fresh", 1, 3)
	var anchors []struct {
		TenantID string
		Seq      int64
		Hash     string
	}
	e.db.Conn(context.Background()).Raw("SELECT tenant_id, seq, hash FROM audit_anchors ORDER BY tenant_id").Scan(&anchors)
	if len(anchors) != 2 || anchors[1].TenantID != "p" || anchors[1].Seq != 5 || anchors[1].Hash != before[4].Hash ||
		anchors[0].TenantID != "gone" || anchors[0].Seq != 4 {
		t.Fatalf("anchors = %+v", anchors)
	}
	if bs := e.verify(); len(bs) != 0 {
		t.Fatalf("Verify after Prune: %+v", bs)
	}
	// Nothing older left at the start: pruning again does nothing.
	if n, err := Prune(context.Background(), e.db, now.Add(-24*time.Hour)); err != nil || n != 0 {
		t.Fatalf("second Prune = %d, %v", n, err)
	}
	// Chains go on from their anchors, even one pruned to nothing.
	e.write(events("p", "later", 2)...)
	e.write(events("gone", "later", 2)...)
	e.contiguous("p", 6, 7)
	e.contiguous("gone", 5, 2)
	if bs := e.verify(); len(bs) != 0 {
		t.Fatalf("Verify after appending: %+v", bs)
	}
	// Tampering after the anchor is still caught.
	e.exec("UPDATE audit_events SET outcome = ? WHERE tenant_id = 'p' AND seq = 7", Failure)
	wantBreak(e, Break{Tenant: "p", Seq: 7, ID: before[6].ID, Reason: ReasonChanged})
	// A row slipped in before the anchor is caught too.
	e.exec("UPDATE audit_events SET outcome = ? WHERE tenant_id = 'p' AND seq = 7", Success)
	e.exec("UPDATE audit_events SET seq = 3 WHERE tenant_id = 'gone' AND seq = 6")
	bs := e.verify()
	if len(bs) != 1 || bs[0].Tenant != "gone" || bs[0].Seq != 3 || bs[0].Reason != ReasonInserted {
		t.Fatalf("Verify = %+v, want gone's seq 3 inserted", bs)
	}
}

// testCancelledStops shows the long readers and the pruner stopping for a
// cancelled context, between pages and chains, on every backend: on SQLite
// a statement itself does not watch the context (db.DB.Conn).
func testCancelledStops(t *testing.T, e *env) {
	evs := append(events("c1", "c", streamPage+1), events("c2", "c", 2)...)
	for i := range evs {
		evs[i].Time = time.Now().Add(-2 * time.Hour)
	}
	e.write(evs...)
	// An export whose client leaves after the first event reads no second page.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	seen := 0
	err := Stream(ctx, e.db, Filter{}, func(Row) error {
		seen++
		stop()
		return nil
	})
	if !errors.Is(err, context.Canceled) || seen > streamPage {
		t.Errorf("Stream cancelled at its first event: %v after %d events; want context.Canceled within one page (%d)", err, seen, streamPage)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := Prune(cancelled, e.db, time.Now()); !errors.Is(err, context.Canceled) || n != 0 {
		t.Errorf("Prune under a cancelled context = %d, %v; want 0, context.Canceled", n, err)
	}
	if n := e.count("1 = 1"); n != int64(len(evs)) {
		t.Errorf("%d events left after the cancelled prune, want %d", n, len(evs))
	}
	if _, err := Verify(cancelled, e.db, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify under a cancelled context: %v, want context.Canceled", err)
	}
}

func testRetention(t *testing.T, e *env) {
	evs := events("r", "r", 3)
	for i := range evs {
		evs[i].Time = time.Now().Add(-2 * time.Hour)
	}
	e.write(evs...)
	ctx, cancel := context.WithCancel(context.Background())
	done := StartRetention(ctx, e.db, 5*time.Millisecond, time.Hour, nil)
	deadline := time.Now().Add(5 * time.Second)
	for e.count("tenant_id = 'r'") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("retention did not prune")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if bs := e.verify(); len(bs) != 0 {
		t.Errorf("Verify: %+v", bs)
	}
}

// testRetentionSoonAfterStart: an instance that never lives a whole
// audit.prune_interval (redeployed, rescheduled, scaled down every few
// minutes) must still prune, or its events outlive audit.retention for
// good. Here the interval is an hour and the instance lives seconds.
func testRetentionSoonAfterStart(t *testing.T, e *env) {
	evs := events("r", "r", 3)
	for i := range evs {
		evs[i].Time = time.Now().Add(-3 * time.Hour)
	}
	e.write(evs...)
	ctx, cancel := context.WithCancel(context.Background())
	done := startRetention(ctx, e.db, 10*time.Millisecond, time.Hour, time.Hour, nil)
	deadline := time.Now().Add(5 * time.Second)
	for e.count("tenant_id = 'r'") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("events 2h past audit.retention are still stored 5s after start: no prune before the first prune_interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}

// testVerifyDuringPrune: `gatehouse audit verify` walks a chain page by
// page while another instance's retention prunes its start. Nothing was
// tampered with, so verify must not report the pruned rows as missing:
// here one prune commits after verify's first page, and a second one after
// its second page, which then holds rows already gone.
func testVerifyDuringPrune(t *testing.T, e *env) {
	now := time.Now().UTC()
	evs := events("v", "v", verifyPage+500)
	for i := range evs {
		switch {
		case i < verifyPage+200:
			evs[i].Time = now.Add(-48 * time.Hour).Add(time.Duration(i) * time.Millisecond)
		case i < verifyPage+300:
			evs[i].Time = now.Add(-36 * time.Hour)
		default:
			evs[i].Time = now.Add(-time.Minute)
		}
	}
	e.write(evs...)
	if bs := e.verify(); len(bs) != 0 {
		t.Fatalf("Verify before pruning: %+v", bs)
	}
	other := e.open() // another instance, running its retention
	cutoffs := []time.Time{now.Add(-40 * time.Hour), now.Add(-24 * time.Hour)}
	var pruned []int64
	err := e.db.Conn(context.Background()).Callback().Query().After("gorm:query").Register("test:prune",
		func(tx *gorm.DB) {
			if tx.Statement.Table != "audit_events" || len(pruned) == len(cutoffs) {
				return
			}
			n, err := Prune(context.Background(), other, cutoffs[len(pruned)])
			if err != nil {
				t.Errorf("Prune: %v", err)
			}
			pruned = append(pruned, n)
		})
	if err != nil {
		t.Fatal(err)
	}
	bs, err := Verify(context.Background(), e.db, nil)
	e.db.Conn(context.Background()).Callback().Query().Remove("test:prune")
	if err != nil {
		t.Fatal(err)
	}
	if len(pruned) != 2 || pruned[0] != verifyPage+200 || pruned[1] != 100 {
		t.Fatalf("the prunes during Verify deleted %v events, want [%d 100]", pruned, verifyPage+200)
	}
	if len(bs) != 0 {
		t.Errorf("Verify of an untouched chain while retention pruned it = %+v, want no break", bs)
	}
	// A row deleted past the anchor is still missing.
	rs := e.rows("v")
	e.exec("DELETE FROM audit_events WHERE id = ?", rs[50].ID)
	wantBreak(e, Break{Tenant: "v", Seq: rs[50].Seq, ID: rs[51].ID, Reason: ReasonMissing})
}

// An event recorded after Close is dropped; the operator must see that in
// the log, with its action, as for every other drop, but never its
// metadata.
func TestDropAfterCloseIsLogged(t *testing.T) {
	var logs syncBuffer
	w := NewWriter(nil, WriterConfig{}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.Record(context.Background(), Event{TenantID: "t", Action: "auth.password_change", Outcome: Success,
		Metadata: map[string]any{"note": "s3cret-value"}})
	if w.Dropped() != 1 {
		t.Fatalf("Dropped() = %d, want 1", w.Dropped())
	}
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "action=auth.password_change") {
		t.Errorf("an event dropped after Close was not logged as an error with its action; log:\n%s", out)
	}
	if strings.Contains(out, "s3cret-value") {
		t.Errorf("the drop's log line carries metadata:\n%s", out)
	}
}
