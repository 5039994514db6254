-- Identity core: tenants, global users, memberships, sessions and their
-- rotating refresh tokens.

-- +goose Up
CREATE TABLE tenants (
    id                      uuid PRIMARY KEY,
    slug                    text NOT NULL UNIQUE,
    name                    text NOT NULL,
    status                  text NOT NULL DEFAULT 'active',
    -- Extra uses a just-rotated refresh token gets, and for how long
    -- (browsers with several tabs refresh at once). 0: off.
    refresh_grace_uses      integer NOT NULL DEFAULT 0,
    refresh_grace_window_ms integer NOT NULL DEFAULT 10000,
    created_at              timestamptz NOT NULL
);

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL UNIQUE, -- normalised: trimmed, lower case
    name          text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    status        text NOT NULL DEFAULT 'active',
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE TABLE memberships (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    roles      text NOT NULL DEFAULT 'member', -- space-separated role names
    status     text NOT NULL DEFAULT 'active',
    created_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, tenant_id)
);
CREATE INDEX memberships_tenant ON memberships (tenant_id);

-- One row per sign-in: the refresh-token family. Its id is the sid claim.
CREATE TABLE sessions (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_agent     text NOT NULL DEFAULT '',
    ip             text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL,
    last_used_at   timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL, -- absolute end, however often refreshed
    revoked_at     timestamptz,
    revoked_reason text NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Every refresh token ever issued, stored only as its SHA-256.
CREATE TABLE refresh_tokens (
    id         uuid PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    parent_id  uuid,
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz, -- set once, by the one refresh that rotates it
    grace_uses integer NOT NULL DEFAULT 0
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- +goose Down
DROP TABLE refresh_tokens;
DROP TABLE sessions;
DROP TABLE memberships;
DROP TABLE users;
DROP TABLE tenants;
