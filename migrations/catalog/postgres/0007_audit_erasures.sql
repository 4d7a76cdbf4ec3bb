-- Fields of tenants' audit entries erased by a GDPR erasure (src/gdpr.rs), recorded outside
-- the tenant's own database: `docket audit verify` accepts an erased field only when it is
-- listed here, so someone who can write a tenant database cannot blank an entry's actor,
-- subject or detail and pass it off as an erasure.
CREATE TABLE audit_erasures (
    tenant_id TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    field     TEXT NOT NULL,
    erased_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq, field)
);
