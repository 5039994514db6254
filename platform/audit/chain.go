package audit

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"gatehouse/platform/db"
)

// The reasons a Break gives.
const (
	// ReasonChanged: the row's content no longer gives its hash; it was
	// updated after it was written.
	ReasonChanged = "content changed"
	// ReasonMissing: the chain skips a position; rows were deleted. The
	// Break's Seq is the first missing position.
	ReasonMissing = "missing"
	// ReasonInserted: the row repeats a position, or does not link to the
	// row before it; it was added outside the chain.
	ReasonInserted = "inserted"
)

// Break is the first place where a chain fails verification.
type Break struct {
	Tenant string // the chain: "" for platform-level events
	Seq    int64  // the position at fault
	ID     string // the row found there ("" if none: the chain lost its end)
	Reason string // ReasonChanged, ReasonMissing or ReasonInserted
}

// verifyPage is how many rows Verify reads at a time.
const verifyPage = 1000

// Verify checks the hash chain of one tenant (nil: of every tenant and of
// the platform) and returns the first break in each chain that has one;
// none means every chain is intact. Each chain is walked in seq order from
// its anchor (or from seq 1 after ""), a page at a time: every row must
// hold the next seq, link to the previous row's hash and hash to its own
// hash. Checked in that order, a repeated position or a broken link is
// ReasonInserted, a skipped position ReasonMissing, and a hash that no
// longer matches ReasonChanged; the reason is the likeliest cause, the seq
// is exact. Retention may prune a chain while it is walked: a skipped
// position the chain's anchor has since moved past is no break, and the
// walk goes on from the new anchor.
//
// Hashes are not keyed: someone who can write the table and knows this
// format can append well-formed events to the end of a chain, or delete
// its newest ones, without a break. Keep copies of recent chain heads (the
// last seq and hash) elsewhere to catch that.
func Verify(ctx context.Context, d *db.DB, tenant *string) ([]Break, error) {
	var chains []string
	if tenant != nil {
		chains = []string{*tenant}
	} else {
		err := d.Conn(ctx).Raw("SELECT tenant_id FROM audit_events UNION SELECT tenant_id FROM audit_anchors ORDER BY 1").
			Scan(&chains).Error
		if err != nil {
			return nil, fmt.Errorf("list audit chains: %w", err)
		}
	}
	var breaks []Break
	for _, c := range chains {
		b, err := verifyChain(ctx, d, c)
		if err != nil {
			return nil, err
		}
		if b != nil {
			breaks = append(breaks, *b)
		}
	}
	return breaks, nil
}

func verifyChain(ctx context.Context, d *db.DB, tenant string) (*Break, error) {
	seq, prev, err := anchor(ctx, d, tenant)
	if err != nil {
		return nil, err
	}
	// Keyset on (seq, id), not seq alone, so that rows repeating a seq
	// (possible only if the unique index was dropped) are all seen.
	afterSeq, afterID := int64(math.MinInt64), ""
	for {
		// Checked each page: on SQLite a statement does not stop for a
		// cancelled context (db.DB.Conn).
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		q := d.Conn(ctx).Where("tenant_id = ?", tenant)
		if afterID == "" {
			q = q.Where("seq > ?", afterSeq)
		} else {
			q = q.Where("seq > ? OR (seq = ? AND id > ?)", afterSeq, afterSeq, afterID)
		}
		var page []stored
		if err := q.Order("seq, id").Limit(verifyPage).Find(&page).Error; err != nil {
			return nil, fmt.Errorf("read audit chain: %w", err)
		}
		moved := false
		for i := range page {
			r := &page[i]
			if r.Seq > seq+1 {
				// Retention (Prune, on any instance) may have deleted the
				// rows since the anchor was read: they are gone then, not
				// missing, and the anchor has moved to at least the
				// first of them. The walk goes on from the new anchor,
				// re-reading from there, as this page may hold rows that
				// were pruned after it was read.
				aSeq, aHash, err := anchor(ctx, d, tenant)
				if err != nil {
					return nil, err
				}
				if aSeq > seq {
					seq, prev = aSeq, aHash
					afterSeq, afterID = aSeq, ""
					moved = true
					break
				}
			}
			switch {
			case r.Seq <= seq:
				return &Break{Tenant: tenant, Seq: r.Seq, ID: r.ID, Reason: ReasonInserted}, nil
			case r.Seq > seq+1:
				return &Break{Tenant: tenant, Seq: seq + 1, ID: r.ID, Reason: ReasonMissing}, nil
			case r.PrevHash != prev:
				return &Break{Tenant: tenant, Seq: r.Seq, ID: r.ID, Reason: ReasonInserted}, nil
			case r.sum() != r.Hash:
				return &Break{Tenant: tenant, Seq: r.Seq, ID: r.ID, Reason: ReasonChanged}, nil
			}
			seq, prev = r.Seq, r.Hash
		}
		if moved {
			continue
		}
		if len(page) < verifyPage {
			return nil, nil
		}
		afterSeq, afterID = page[len(page)-1].Seq, page[len(page)-1].ID
	}
}

// anchor returns the seq and hash of tenant's last pruned event, or 0 and
// "" if none was pruned.
func anchor(ctx context.Context, d *db.DB, tenant string) (int64, string, error) {
	var a []struct {
		Seq  int64
		Hash string
	}
	if err := d.Conn(ctx).Raw("SELECT seq, hash FROM audit_anchors WHERE tenant_id = ?", tenant).Scan(&a).Error; err != nil {
		return 0, "", fmt.Errorf("read audit anchor: %w", err)
	}
	if len(a) == 0 {
		return 0, "", nil
	}
	return a[0].Seq, a[0].Hash, nil
}

// Prune deletes, in every chain, the events older than olderThan from the
// start of the chain only: it stops at the chain's first event that is not
// older, so a chain keeps no hole. In the same transaction it records the
// last deleted event's seq and hash as the chain's anchor, where Verify
// and the next append start, so the chain still verifies. It returns how
// many events it deleted.
func Prune(ctx context.Context, d *db.DB, olderThan time.Time) (int64, error) {
	olderThan = olderThan.UTC()
	var chains []string
	err := d.Conn(ctx).Raw(`SELECT DISTINCT tenant_id FROM audit_events WHERE "time" < ? ORDER BY 1`, olderThan).
		Scan(&chains).Error
	if err != nil {
		return 0, fmt.Errorf("list audit chains to prune: %w", err)
	}
	var total int64
	for _, c := range chains {
		// Checked between chains: on SQLite a statement does not stop for
		// a cancelled context (db.DB.Conn), so shutdown would wait for all.
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, err := pruneChain(ctx, d, c, olderThan)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func pruneChain(ctx context.Context, d *db.DB, tenant string, olderThan time.Time) (int64, error) {
	var n int64
	err := d.InTx(ctx, func(ctx context.Context) error {
		// The chain's lock keeps a writer from appending to a chain whose
		// every event is being deleted before the anchor is in place.
		if _, _, err := lockChain(ctx, d, tenant); err != nil {
			return err
		}
		g := d.Conn(ctx)
		var keep []int64
		if err := g.Raw(`SELECT seq FROM audit_events WHERE tenant_id = ? AND "time" >= ? ORDER BY seq LIMIT 1`,
			tenant, olderThan).Scan(&keep).Error; err != nil {
			return fmt.Errorf("find audit prune boundary: %w", err)
		}
		q := g.Table("audit_events").Select("seq, hash").Where("tenant_id = ?", tenant)
		if len(keep) > 0 {
			q = q.Where("seq < ?", keep[0])
		}
		var last []struct {
			Seq  int64
			Hash string
		}
		if err := q.Order("seq DESC").Limit(1).Scan(&last).Error; err != nil {
			return fmt.Errorf("find last audit event to prune: %w", err)
		}
		if len(last) == 0 {
			return nil
		}
		res := g.Exec("DELETE FROM audit_events WHERE tenant_id = ? AND seq <= ?", tenant, last[0].Seq)
		if res.Error != nil {
			return fmt.Errorf("prune audit events: %w", res.Error)
		}
		n = res.RowsAffected
		err := g.Exec(`INSERT INTO audit_anchors (tenant_id, seq, hash, pruned_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, pruned_at = excluded.pruned_at`,
			tenant, last[0].Seq, last[0].Hash, time.Now().UTC()).Error
		if err != nil {
			return fmt.Errorf("record audit anchor: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// StartRetention starts a goroutine that prunes the events older than
// maxAge (Prune) and logs what it did: first soon after start, then every
// period. It stops when ctx ends; the returned channel is closed then, so
// shutdown can wait for it before closing the database. A period of 0 or
// less means an hour.
func StartRetention(ctx context.Context, d *db.DB, every, maxAge time.Duration, log *slog.Logger) <-chan struct{} {
	if every <= 0 {
		every = time.Hour
	}
	// Waiting a whole period first, an instance restarted more often than
	// that (deployed, rescheduled, scaled) would never prune. The first
	// prune comes within a minute instead, at a random moment so that
	// instances started together do not all prune at once, and never later
	// than a period.
	return startRetention(ctx, d, rand.N(min(every, time.Minute)), every, maxAge, log)
}

// startRetention is StartRetention with its first prune after first.
func startRetention(ctx context.Context, d *db.DB, first, every, maxAge time.Duration, log *slog.Logger) <-chan struct{} {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(first)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			n, err := Prune(ctx, d, time.Now().Add(-maxAge))
			switch {
			case err != nil && ctx.Err() == nil:
				log.Error("audit retention failed", "deleted", n, "error", err.Error())
			case n > 0:
				log.Info("audit events pruned", "deleted", n, "max_age", maxAge.String())
			}
			t.Reset(every)
		}
	}()
	return done
}
