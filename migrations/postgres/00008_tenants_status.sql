-- Every few seconds each instance on Redis reads the suspended tenants, to
-- write their status again where the store lost it
-- (tenant.Service.ReassertSuspensions); the index keeps that read off the
-- table's active tenants. Not partial: the query binds the status, and
-- neither database matches a bound value to a partial index's condition.

-- +goose Up
CREATE INDEX tenants_status ON tenants (status);

-- +goose Down
DROP INDEX tenants_status;
