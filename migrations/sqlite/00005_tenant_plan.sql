-- A tenant's plan multiplies the limits of its tenant-keyed rate-limit
-- policies (ratelimit.plans in configs/gatehouse.yaml).

-- +goose Up
ALTER TABLE tenants ADD COLUMN plan text NOT NULL DEFAULT 'default';

-- +goose Down
ALTER TABLE tenants DROP COLUMN plan;
