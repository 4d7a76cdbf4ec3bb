-- Each tenant's audit chain head (sequence number and hash), anchored outside the tenant's
-- own database (src/audit/anchor.rs): it only moves forward, after the tenant's commit, so
-- a chain truncated with its head, rolled back to an old copy without a restore, or
-- rewritten with fresh hashes no longer matches it. A restore resets it (recorded in
-- backup_runs and in the chain's backup.restored entry).
CREATE TABLE audit_anchors (
    tenant_id   TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    anchored_at TEXT NOT NULL
);
