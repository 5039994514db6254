-- A session opened by switch-tenant belongs to the sign-in it came from:
-- family_id is the first session's id, shared by every session switched to
-- from it. Logout, a refresh token's reuse and a session's revocation end
-- the whole family, so a switch cannot carry a session past them.
--
-- NULL stands for the session's own id (queries read COALESCE(family_id,
-- id)): an instance of the previous release, still running during a
-- rolling upgrade, writes sessions without the column, and each is then a
-- family of its own, as every session was before.

-- +goose Up
ALTER TABLE sessions ADD COLUMN family_id uuid;

-- +goose Down
ALTER TABLE sessions DROP COLUMN family_id;
