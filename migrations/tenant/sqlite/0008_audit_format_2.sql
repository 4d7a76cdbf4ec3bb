-- Audit chain format 2 (src/audit/mod.rs): personal fields (actor, subject, detail) enter an
-- entry's hash through salted digests, so a person's data can be erased from the chain
-- while it still verifies. Existing entries stay format 1 until docket upgrades the chain
-- when the tenant is opened (one transaction; an `audit.upgraded` entry records it).
ALTER TABLE audit_log ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
-- JSON {"actor": hex, "subject": hex, "detail": hex}: each field's salt (16 bytes).
ALTER TABLE audit_log ADD COLUMN salts TEXT;
-- JSON {field: digest}: the kept digests of erased fields (their salts are deleted).
ALTER TABLE audit_log ADD COLUMN erased TEXT;
