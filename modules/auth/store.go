package auth

import (
	"context"
	"errors"
	"time"

	"gorm.io/gorm"

	"gatehouse/platform/db"
	"gatehouse/platform/fault"
)

// store reads and writes the identity tables. Every method translates
// gorm's errors into fault values (db.Translate).
type store struct{ db *db.DB }

func (s store) conn(ctx context.Context) *gorm.DB { return s.db.Conn(ctx) }

// createUser inserts the user, then runs then (the first membership) in
// the same transaction.
func (s store) createUser(ctx context.Context, u User, then func(ctx context.Context) error) error {
	return s.db.InTx(ctx, func(ctx context.Context) error {
		if err := s.conn(ctx).Create(&u).Error; err != nil {
			return db.Translate(err)
		}
		return then(ctx)
	})
}

func (s store) userByEmail(ctx context.Context, email string) (User, error) {
	var u User
	err := s.conn(ctx).Where("email = ?", email).First(&u).Error
	return u, db.Translate(err)
}

func (s store) userByID(ctx context.Context, id string) (User, error) {
	var u User
	err := s.conn(ctx).Where("id = ?", id).First(&u).Error
	return u, db.Translate(err)
}

func (s store) usersByID(ctx context.Context, ids []string) ([]User, error) {
	var us []User
	if len(ids) == 0 {
		return us, nil
	}
	err := s.conn(ctx).Where("id IN ?", ids).Find(&us).Error
	return us, db.Translate(err)
}

func (s store) setPassword(ctx context.Context, userID, hash string, now time.Time) error {
	return db.Translate(s.conn(ctx).Model(&User{}).Where("id = ?", userID).
		Updates(map[string]any{"password_hash": hash, "updated_at": now}).Error)
}

// rehash replaces the user's password hash by one of the same password,
// if it is still old; it reports whether it did.
func (s store) rehash(ctx context.Context, userID, old, hash string, now time.Time) (bool, error) {
	res := s.conn(ctx).Model(&User{}).Where("id = ? AND password_hash = ?", userID, old).
		Updates(map[string]any{"password_hash": hash, "updated_at": now})
	return res.RowsAffected == 1, db.Translate(res.Error)
}

// createSession starts a session with its first refresh token, if what
// let it start still holds inside its transaction (see sessionCause).
func (s store) createSession(ctx context.Context, sess Session, rt RefreshToken, cause sessionCause) error {
	return s.db.InTx(ctx, func(ctx context.Context) error {
		// A conditional write, not a read: on PostgreSQL it waits for a
		// password change or revocation holding the row and then sees its
		// result; SQLite runs one write transaction at a time.
		var res *gorm.DB
		if cause.origin != "" {
			res = s.conn(ctx).Model(&Session{}).Where("id = ? AND revoked_at IS NULL", cause.origin).
				Update("last_used_at", sess.CreatedAt)
		} else {
			res = s.conn(ctx).Model(&User{}).Where("id = ? AND password_hash = ?", sess.UserID, cause.passwordHash).
				Update("updated_at", gorm.Expr("updated_at"))
		}
		if res.Error != nil {
			return db.Translate(res.Error)
		}
		if res.RowsAffected == 0 {
			return errSessionCauseGone
		}
		if err := s.conn(ctx).Create(&sess).Error; err != nil {
			return db.Translate(err)
		}
		return db.Translate(s.conn(ctx).Create(&rt).Error)
	})
}

// refreshToken finds a refresh token by its hash, with its session.
func (s store) refreshToken(ctx context.Context, hash []byte) (RefreshToken, Session, error) {
	var rt RefreshToken
	if err := s.conn(ctx).Where("token_hash = ?", hash).First(&rt).Error; err != nil {
		return rt, Session{}, db.Translate(err)
	}
	sess, err := s.session(ctx, rt.SessionID)
	return rt, sess, err
}

func (s store) session(ctx context.Context, id string) (Session, error) {
	var sess Session
	err := s.conn(ctx).Where("id = ?", id).First(&sess).Error
	return sess, db.Translate(err)
}

// markUsed claims a refresh token for rotation. It is one conditional
// UPDATE, so of any number of concurrent callers exactly one gets true.
func (s store) markUsed(ctx context.Context, id string, now time.Time) (bool, error) {
	res := s.conn(ctx).Model(&RefreshToken{}).Where("id = ? AND used_at IS NULL", id).Update("used_at", now)
	return res.RowsAffected == 1, db.Translate(res.Error)
}

// useGrace claims one of a rotated token's extra uses, if fewer than max
// were taken and it was rotated at or after since; atomic like markUsed.
func (s store) useGrace(ctx context.Context, id string, max int, since time.Time) (bool, error) {
	res := s.conn(ctx).Model(&RefreshToken{}).
		Where("id = ? AND used_at IS NOT NULL AND used_at >= ? AND grace_uses < ?", id, since, max).
		Update("grace_uses", gorm.Expr("grace_uses + 1"))
	return res.RowsAffected == 1, db.Translate(res.Error)
}

// rotate claims refresh token id and adds its successor child, in one
// transaction. The claim is the rotation (won) or, once rotated, one of
// graceUses extra uses if it was rotated at or after since; claimed is
// false when neither is left (reuse), and nothing is written. A use past
// the bound waits on the claimed row until this commits, so every use
// within the bound has its pair before a reuse can revoke the family (and
// with it that pair): 1 + graceUses concurrent uses succeed, never fewer.
func (s store) rotate(ctx context.Context, id string, graceUses int, since time.Time, child RefreshToken, now time.Time) (won, claimed bool, err error) {
	err = s.db.InTx(ctx, func(ctx context.Context) error {
		var err error
		if won, err = s.markUsed(ctx, id, now); err != nil {
			return err
		}
		claimed = won
		if !won && graceUses > 0 {
			if claimed, err = s.useGrace(ctx, id, graceUses, since); err != nil {
				return err
			}
		}
		if !claimed {
			return nil
		}
		return s.addRefreshToken(ctx, child, now)
	})
	return won, claimed, err
}

// addRefreshToken adds a token to a session and records its use, if the
// session is still live: a refresh that read it live may have raced a
// logout. ErrInvalidRefresh if it was revoked meanwhile.
func (s store) addRefreshToken(ctx context.Context, rt RefreshToken, now time.Time) error {
	return s.db.InTx(ctx, func(ctx context.Context) error {
		res := s.conn(ctx).Model(&Session{}).Where("id = ? AND revoked_at IS NULL", rt.SessionID).Update("last_used_at", now)
		if res.Error != nil {
			return db.Translate(res.Error)
		}
		if res.RowsAffected == 0 {
			return ErrInvalidRefresh
		}
		return db.Translate(s.conn(ctx).Create(&rt).Error)
	})
}

// errSessionCauseGone: a new session's cause no longer holds.
var errSessionCauseGone = errors.New("auth: what the session rested on changed while it was opened")

// sessionCause is what a new session rests on, checked again as it is
// written: the password hash a login compared against, or the live session
// a switch-tenant came from. A password change or a revocation that
// commits while the login or switch is under way then refuses it, instead
// of missing the session it was about to write.
type sessionCause struct {
	passwordHash string
	origin       string
}

// unrevokedSessions lists the user's sessions not yet revoked that where
// selects (nil: all); with families, every session of their families too.
func (s store) unrevokedSessions(ctx context.Context, userID string, where func(*gorm.DB) *gorm.DB, families bool) ([]string, error) {
	var ids []string
	q := s.conn(ctx).Model(&Session{}).Where("user_id = ? AND revoked_at IS NULL", userID)
	if where != nil && families {
		// Revoked members too: a family lives on in its other sessions.
		q = q.Where("COALESCE(family_id, id) IN (?)",
			where(s.conn(ctx).Model(&Session{}).Select("COALESCE(family_id, id)").Where("user_id = ?", userID)))
	} else if where != nil {
		q = where(q)
	}
	return ids, db.Translate(q.Pluck("id", &ids).Error)
}

// revokeSessions revokes the sessions ids that are still live.
func (s store) revokeSessions(ctx context.Context, ids []string, reason string, now time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	return db.Translate(s.conn(ctx).Model(&Session{}).Where("id IN ? AND revoked_at IS NULL", ids).
		Updates(map[string]any{"revoked_at": now, "revoked_reason": reason}).Error)
}

// revokedSince lists the sessions revoked after since, with when, the
// newest first.
func (s store) revokedSince(ctx context.Context, since time.Time) ([]Session, error) {
	var out []Session
	err := s.conn(ctx).Select("id", "revoked_at").Where("revoked_at > ?", since).Order("revoked_at DESC").Find(&out).Error
	return out, db.Translate(err)
}

// liveSessions lists the user's sessions that are neither revoked nor over.
func (s store) liveSessions(ctx context.Context, userID string, now time.Time) ([]Session, error) {
	var out []Session
	err := s.conn(ctx).Where("user_id = ? AND revoked_at IS NULL AND expires_at > ?", userID, now).
		Order("last_used_at DESC").Limit(500).Find(&out).Error
	return out, db.Translate(err)
}

// isNotFound reports whether err is a missing row.
func isNotFound(err error) bool { return errors.Is(err, fault.ErrNotFound) }
