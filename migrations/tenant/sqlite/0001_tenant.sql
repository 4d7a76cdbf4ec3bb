-- One tenant's own database: people, records, messages, filings and its audit chain.
CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    email        TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL DEFAULT '',
    role         TEXT NOT NULL CHECK (role IN ('admin', 'filer', 'viewer')),
    status       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'disabled')),
    -- Bound on first sign-in: the Google identity is iss+sub, not the email.
    google_iss   TEXT,
    google_sub   TEXT,
    created_at   TEXT NOT NULL,
    UNIQUE (google_iss, google_sub)
);

CREATE TABLE records (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('matter', 'case', 'contract')),
    reference  TEXT NOT NULL,
    title      TEXT NOT NULL,
    client     TEXT NOT NULL DEFAULT '',
    status     TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at TEXT NOT NULL,
    UNIQUE (kind, reference)
);

-- Addresses (`a@acme.com`) and domains (`acme.com`) tied to a record.
CREATE TABLE record_contacts (
    record_id TEXT NOT NULL REFERENCES records(id),
    kind      TEXT NOT NULL CHECK (kind IN ('address', 'domain')),
    value     TEXT NOT NULL,
    PRIMARY KEY (record_id, kind, value)
);
CREATE INDEX record_contacts_value ON record_contacts (value);

-- A parsed email, stored once per tenant whatever the number of records it is filed to.
CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    -- `mid:<Message-ID>` or `sha256:<hash of the CRLF-canonical raw bytes>`.
    dedup_key        TEXT NOT NULL UNIQUE,
    message_id       TEXT,
    subject          TEXT,
    from_json        TEXT NOT NULL,
    to_json          TEXT NOT NULL,
    cc_json          TEXT NOT NULL,
    sent_at          TEXT,
    in_reply_to_json TEXT NOT NULL,
    references_json  TEXT NOT NULL,
    raw_size         INTEGER NOT NULL,
    raw_sha256       TEXT NOT NULL,
    gmail_message_id TEXT,
    gmail_thread_id  TEXT,
    created_at       TEXT NOT NULL
);
CREATE INDEX messages_gmail_thread ON messages (gmail_thread_id);

CREATE TABLE message_attachments (
    message_id   TEXT NOT NULL REFERENCES messages(id),
    idx          INTEGER NOT NULL,
    display_name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    PRIMARY KEY (message_id, idx)
);

-- One message filed to one record.
CREATE TABLE filings (
    id         TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages(id),
    record_id  TEXT NOT NULL REFERENCES records(id),
    filed_by   TEXT NOT NULL REFERENCES users(id),
    filed_at   TEXT NOT NULL,
    note       TEXT,
    UNIQUE (message_id, record_id)
);
CREATE INDEX filings_record ON filings (record_id, filed_at);

-- Which attachments a filing kept (their blobs are stored).
CREATE TABLE filing_attachments (
    filing_id TEXT NOT NULL REFERENCES filings(id),
    idx       INTEGER NOT NULL,
    PRIMARY KEY (filing_id, idx)
);

-- Tamper-evident audit chain: hash = SHA-256(prev_hash ‖ length-prefixed fields).
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

-- Single row: the chain head. Every append updates it first, which serialises appends
-- (SQLite write lock; PostgreSQL row lock held to commit, across processes).
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
