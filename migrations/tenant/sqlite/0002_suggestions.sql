-- Indexes and columns the add-on's suggestions and "already filed" need.
ALTER TABLE messages ADD COLUMN from_addr TEXT;
CREATE INDEX messages_from_addr ON messages (from_addr);
CREATE INDEX messages_message_id ON messages (message_id);
CREATE INDEX filings_filed_by ON filings (filed_by, record_id);
CREATE INDEX records_reference ON records (reference);

-- Per-tenant settings (e.g. the subject pattern for record references).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
