-- Every few seconds each instance re-reads the sessions revoked in the last
-- minute, to write their denials again (auth.Service.ReassertDenials); the
-- partial index keeps that read off the table's live sessions.

-- +goose Up
CREATE INDEX sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- +goose Down
DROP INDEX sessions_revoked;
