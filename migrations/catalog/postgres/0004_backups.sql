-- Backups (src/backup.rs). Each tenant's backup key, sealed with the master key: it seals the
-- tenant's data key inside every backup of that tenant, so deleting it (the purge) leaves
-- every copy of those backups unreadable. Created on the tenant's first backup.
ALTER TABLE tenants ADD COLUMN backup_key_enc BYTEA;

-- Every backup, backup check (verify) and restore, and how it ended. No tenant content.
CREATE TABLE backup_runs (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('create', 'verify', 'restore')),
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    ok          BIGINT NOT NULL CHECK (ok IN (0, 1)),
    -- The backup's directory (create, verify) or the one restored from.
    location    TEXT NOT NULL,
    -- JSON: sizes, counts and timings; the first failure when not ok.
    detail      TEXT NOT NULL
);
CREATE INDEX backup_runs_by_tenant ON backup_runs (tenant_id, kind, finished_at);
