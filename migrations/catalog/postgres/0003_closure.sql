-- Tenant closure: when it was terminated, by whom, and the date its data is due for purge
-- (90 days later). The purge job itself reads purge_after.
ALTER TABLE tenants ADD COLUMN terminated_at TEXT;
ALTER TABLE tenants ADD COLUMN terminated_by TEXT;
ALTER TABLE tenants ADD COLUMN purge_after TEXT;
