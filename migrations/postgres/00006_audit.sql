-- The audit log: one hash chain of events per tenant, and the anchors that
-- let a chain be verified after its oldest events are pruned.
--
-- tenant_id is '' (never NULL) for platform-level events, so that '' is the
-- key of the platform's own chain and (tenant_id, seq) can be unique. It is
-- text, not uuid, because '' is not a uuid. metadata is text, not jsonb:
-- the hash covers the exact bytes written, and jsonb would reformat them.

-- +goose Up
CREATE TABLE audit_events (
    id            uuid PRIMARY KEY,
    tenant_id     text NOT NULL DEFAULT '',
    seq           bigint NOT NULL,
    time          timestamptz NOT NULL,
    actor_type    text NOT NULL DEFAULT '',
    actor_id      text NOT NULL DEFAULT '',
    action        text NOT NULL,
    resource_type text NOT NULL DEFAULT '',
    resource_id   text NOT NULL DEFAULT '',
    outcome       text NOT NULL DEFAULT '',
    ip            text NOT NULL DEFAULT '',
    user_agent    text NOT NULL DEFAULT '',
    request_id    text NOT NULL DEFAULT '',
    metadata      text NOT NULL DEFAULT '{}',
    prev_hash     text NOT NULL DEFAULT '',
    hash          text NOT NULL,
    UNIQUE (tenant_id, seq)
);
CREATE INDEX audit_events_tenant_time ON audit_events (tenant_id, time DESC, id DESC);
CREATE INDEX audit_events_tenant_action ON audit_events (tenant_id, action, time DESC);
CREATE INDEX audit_events_time ON audit_events (time DESC, id DESC);

-- The last pruned event of each chain: the next event's prev_hash and seq
-- follow from it.
CREATE TABLE audit_anchors (
    tenant_id text PRIMARY KEY,
    seq       bigint NOT NULL,
    hash      text NOT NULL,
    pruned_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE audit_anchors;
DROP TABLE audit_events;
