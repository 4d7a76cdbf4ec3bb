-- Purges of terminated tenants (src/purge.rs). A row is written when a tenant's purge
-- begins and kept for good after the tenant's own rows are gone: the tombstone that proves
-- the purge without keeping any of the tenant's data (names, dates, counts and sizes only).
CREATE TABLE tenant_tombstones (
    tenant_id        TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    terminated_at    TEXT NOT NULL,
    terminated_by    TEXT NOT NULL,
    purge_after      TEXT NOT NULL,
    purge_started_at TEXT NOT NULL,
    -- NULL while the purge is under way (an interrupted purge is finished by the next run).
    purged_at        TEXT,
    -- JSON: what there was when the purge began (database counts and size, blobs, backups)
    -- and which steps are done.
    detail           TEXT NOT NULL
);
