-- A tenant's Google service-account key for domain-wide delegation (thread filing),
-- sealed with the master key. NULL = not configured.
ALTER TABLE tenants ADD COLUMN delegation_key_enc BLOB;
