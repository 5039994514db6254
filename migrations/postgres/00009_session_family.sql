-- A session opened by switch-tenant belongs to the sign-in it came from:
-- family_id is the first session's id, shared by every session switched to
-- from it. Logout, a refresh token's reuse and a session's revocation end
-- the whole family, so a switch cannot carry a session past them.

-- +goose Up
ALTER TABLE sessions ADD COLUMN family_id uuid;
UPDATE sessions SET family_id = id;
ALTER TABLE sessions ALTER COLUMN family_id SET NOT NULL;

-- +goose Down
ALTER TABLE sessions DROP COLUMN family_id;
