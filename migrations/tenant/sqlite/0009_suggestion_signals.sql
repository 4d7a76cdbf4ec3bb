-- What the suggestion model (src/suggest) reads besides contacts and filings:
-- * record_terms: the words of each record's title and client (suggest::terms), so that
--   a subject such as "Northwind - lease renewal" finds the record "Northwind lease";
-- * message_parties: each stored message's participants (From, To, Cc, and the senders of
--   forwarded mail quoted in its body), lowercased, so that history can be asked by
--   address and by domain.
-- Both are written with the record or message they derive from, and rebuilt from them
-- when the tenant is opened and `suggest_index_version` (settings) is not docket's.
CREATE TABLE record_terms (
    record_id TEXT NOT NULL REFERENCES records(id),
    term      TEXT NOT NULL,
    field     TEXT NOT NULL CHECK (field IN ('title', 'client')),
    PRIMARY KEY (record_id, field, term)
);
CREATE INDEX record_terms_term ON record_terms (term, record_id);

CREATE TABLE message_parties (
    message_id TEXT NOT NULL REFERENCES messages(id),
    address    TEXT NOT NULL,
    domain     TEXT NOT NULL,
    -- When the message was stored (RFC 3339): history reads each address's and domain's
    -- latest messages only, so a busy domain costs no more than a quiet one.
    at         TEXT NOT NULL,
    PRIMARY KEY (message_id, address)
);
CREATE INDEX message_parties_address ON message_parties (address, at, message_id);
CREATE INDEX message_parties_domain ON message_parties (domain, at, message_id);

-- "The records you file to": a user's latest filings.
CREATE INDEX filings_filer_recent ON filings (filed_by, filed_at);
