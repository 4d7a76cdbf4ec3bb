-- Retention, legal hold and disposition (src/retention.rs).

-- When a record was closed (retention runs from it); NULL while open. Records closed
-- before this column existed take the time of their last `record.closed` audit entry, or
-- their last change.
ALTER TABLE records ADD COLUMN closed_at TEXT;
UPDATE records SET closed_at = COALESCE(
    (SELECT MAX(a.at) FROM audit_log a WHERE a.action = 'record.closed' AND a.subject = records.id),
    updated_at, created_at)
WHERE status = 'closed';

-- Per record kind: its filings are due for disposition `years` after the record closed.
CREATE TABLE retention_policies (
    kind       TEXT PRIMARY KEY CHECK (kind IN ('matter', 'case', 'contract')),
    years      BIGINT NOT NULL CHECK (years BETWEEN 1 AND 100),
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
);

-- Legal holds: on a record, or on a person (every filing whose message has the address in
-- From, To or Cc). In force until released.
CREATE TABLE legal_holds (
    id          TEXT PRIMARY KEY,
    scope       TEXT NOT NULL CHECK (scope IN ('record', 'person')),
    record_id   TEXT REFERENCES records(id),
    email       TEXT,
    reason      TEXT NOT NULL,
    placed_by   TEXT NOT NULL,
    placed_at   TEXT NOT NULL,
    released_by TEXT,
    released_at TEXT,
    CHECK ((scope = 'record' AND record_id IS NOT NULL) OR (scope = 'person' AND email IS NOT NULL))
);

-- Disposition lists: made by the daily evaluation, carried out only once an admin approves.
CREATE TABLE dispositions (
    id         TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_by TEXT,
    decided_at TEXT
);
CREATE TABLE disposition_items (
    disposition_id TEXT NOT NULL REFERENCES dispositions(id),
    record_id      TEXT NOT NULL REFERENCES records(id),
    -- The closure the listing was judged on: approval keeps a record closed again since.
    closed_at      TEXT NOT NULL,
    due_at         TEXT NOT NULL,
    -- Filings when listed; after approval, those deleted and those kept under a hold.
    filings        BIGINT NOT NULL,
    disposed       BIGINT,
    held           BIGINT,
    PRIMARY KEY (disposition_id, record_id)
);
