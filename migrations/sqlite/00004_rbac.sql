-- RBAC and tenancy: tenant settings, roles and their permissions, the roles
-- of each membership, and platform-wide super admins.

-- +goose Up
ALTER TABLE tenants ADD COLUMN default_role text NOT NULL DEFAULT 'member';
ALTER TABLE tenants ADD COLUMN login_methods text NOT NULL DEFAULT 'password'; -- space-separated

-- System roles have no tenant and exist in every tenant; custom roles
-- belong to one tenant.
CREATE TABLE roles (
    id          text PRIMARY KEY,
    tenant_id   text REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    system      integer NOT NULL DEFAULT 0,
    created_at  datetime NOT NULL,
    updated_at  datetime NOT NULL
);
CREATE UNIQUE INDEX roles_tenant_name ON roles (COALESCE(tenant_id, ''), name);

CREATE TABLE role_permissions (
    role_id    text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    permission text NOT NULL,
    PRIMARY KEY (role_id, permission)
);

CREATE TABLE membership_roles (
    tenant_id  text NOT NULL,
    user_id    text NOT NULL,
    role_id    text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    created_at datetime NOT NULL,
    PRIMARY KEY (tenant_id, user_id, role_id),
    FOREIGN KEY (user_id, tenant_id) REFERENCES memberships (user_id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX membership_roles_role ON membership_roles (role_id);

CREATE TABLE super_admins (
    user_id    text PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    created_at datetime NOT NULL
);

-- The system roles, with fixed ids; their permissions come from
-- configs/roles.yaml and are synchronised at start.
INSERT INTO roles (id, tenant_id, name, description, system, created_at, updated_at) VALUES
    ('01950000-0000-7000-8000-000000000001', NULL, 'super_admin', 'Everything, in every tenant', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP),
    ('01950000-0000-7000-8000-000000000002', NULL, 'admin', 'Everything inside its tenant', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP),
    ('01950000-0000-7000-8000-000000000003', NULL, 'manager', 'Everyone''s orders, analytics, reading users', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP),
    ('01950000-0000-7000-8000-000000000004', NULL, 'member', 'Its own orders and profile', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP);

-- Memberships named their roles in a text column; move them to the table.
INSERT INTO membership_roles (tenant_id, user_id, role_id, created_at)
SELECT m.tenant_id, m.user_id, r.id, m.created_at
FROM memberships m JOIN roles r ON r.tenant_id IS NULL AND (' ' || m.roles || ' ') LIKE ('% ' || r.name || ' %');
ALTER TABLE memberships DROP COLUMN roles;

-- +goose Down
ALTER TABLE memberships ADD COLUMN roles text NOT NULL DEFAULT 'member';
DROP TABLE super_admins;
DROP TABLE membership_roles;
DROP TABLE role_permissions;
DROP TABLE roles;
ALTER TABLE tenants DROP COLUMN login_methods;
ALTER TABLE tenants DROP COLUMN default_role;
