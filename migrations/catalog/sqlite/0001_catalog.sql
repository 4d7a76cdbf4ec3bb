-- The catalogue: which tenants exist, where their data lives, their wrapped keys.
-- No tenant content is ever stored here.
CREATE TABLE tenants (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'terminated')),
    created_at      TEXT NOT NULL,
    -- PostgreSQL: the tenant's own database and role (same name); NULL on SQLite.
    db_name         TEXT UNIQUE,
    -- The role's generated password, sealed with the master key.
    db_password_enc BLOB,
    -- The tenant's data key, sealed with the master key.
    dek_enc         BLOB NOT NULL
);

-- Google Workspace domains (`hd` claim) that belong to a tenant.
CREATE TABLE tenant_domains (
    domain    TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id)
);

-- Explicit single-address mappings (e.g. accounts without `hd`).
CREATE TABLE tenant_addresses (
    email     TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id)
);
