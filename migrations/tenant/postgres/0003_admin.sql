-- Tenant administration: groups, record teams and ethical walls, routing rules, local admin
-- accounts (passwords, TOTP, sessions, access tokens), login audit and reset requests.

-- Groups of users (seeded below; admins can add and rename).
CREATE TABLE groups (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id),
    user_id  TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);
INSERT INTO groups (id, name, created_at) VALUES
    ('partners', 'Partners', '1970-01-01T00:00:00Z'),
    ('attorneys', 'Attorneys', '1970-01-01T00:00:00Z'),
    ('paralegals', 'Paralegals', '1970-01-01T00:00:00Z'),
    ('assistants', 'Assistants', '1970-01-01T00:00:00Z');

-- Record teams. A record is visible to everyone in the tenant when firm_wide = 1, else only
-- to its team (users and groups with effect 'member'). An 'excluded' row (ethical wall)
-- beats any grant, firm-wide included.
ALTER TABLE records ADD COLUMN firm_wide INTEGER NOT NULL DEFAULT 1;
ALTER TABLE records ADD COLUMN updated_at TEXT;
CREATE TABLE record_access (
    record_id      TEXT NOT NULL REFERENCES records(id),
    principal_kind TEXT NOT NULL CHECK (principal_kind IN ('user', 'group')),
    principal_id   TEXT NOT NULL,
    effect         TEXT NOT NULL CHECK (effect IN ('member', 'excluded')),
    PRIMARY KEY (record_id, principal_kind, principal_id)
);
CREATE INDEX record_access_principal ON record_access (principal_kind, principal_id, effect);

-- Routing rules, evaluated in `position` order.
CREATE TABLE rules (
    id          TEXT PRIMARY KEY,
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    -- JSON array of conditions; see src/rules.rs.
    conditions  TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('suggest', 'auto_file', 'never_auto_file')),
    -- JSON array of record ids.
    targets     TEXT NOT NULL,
    stop        INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- Local sign-in for the console and admin API (one row per user who has a password).
CREATE TABLE local_accounts (
    user_id          TEXT PRIMARY KEY REFERENCES users(id),
    password_hash    TEXT NOT NULL,
    failed_logins    INTEGER NOT NULL DEFAULT 0,
    -- Set when the third consecutive failure suspends the account; cleared on reactivation.
    locked_at        TEXT,
    -- TOTP secret sealed with the tenant's data key; NULL until enrolment is confirmed.
    totp_secret_enc  BYTEA,
    -- Secret proposed at enrolment, confirmed by the first valid code.
    totp_pending_enc BYTEA,
    totp_last_step   INTEGER,
    password_set_at  TEXT NOT NULL
);
CREATE TABLE recovery_codes (
    user_id   TEXT NOT NULL REFERENCES users(id),
    code_hash TEXT NOT NULL,
    used_at   TEXT,
    PRIMARY KEY (user_id, code_hash)
);

-- Console/API sessions: only the SHA-256 of the cookie token is stored.
CREATE TABLE sessions (
    id_hash      TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    csrf         TEXT NOT NULL,
    mfa          INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    reauth_at    TEXT,
    ip           TEXT NOT NULL,
    user_agent   TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Personal access tokens: only the SHA-256 of the secret is stored.
CREATE TABLE access_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    revoked_at   TEXT,
    last_used_at TEXT,
    last_used_ip TEXT
);
CREATE INDEX access_tokens_user ON access_tokens (user_id);

-- Every sign-in attempt, successful or not.
CREATE TABLE login_attempts (
    id         TEXT PRIMARY KEY,
    at         TEXT NOT NULL,
    email      TEXT NOT NULL,
    user_id    TEXT,
    result     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    ip         TEXT NOT NULL,
    user_agent TEXT NOT NULL
);
CREATE INDEX login_attempts_at ON login_attempts (at);
CREATE INDEX login_attempts_ip ON login_attempts (ip, at);

-- "Forgot password" requests, reviewed by the tenant's admins.
CREATE TABLE reset_requests (
    id           TEXT PRIMARY KEY,
    email        TEXT NOT NULL,
    user_id      TEXT,
    requested_at TEXT NOT NULL,
    ip           TEXT NOT NULL,
    user_agent   TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('open', 'issued', 'dismissed', 'used')),
    handled_by   TEXT,
    handled_at   TEXT,
    token_hash   TEXT UNIQUE,
    expires_at   TEXT,
    used_at      TEXT
);
CREATE INDEX reset_requests_status ON reset_requests (status, requested_at);

-- Messages filed automatically by a rule are filed by this system user.
INSERT INTO users (id, email, display_name, role, status, created_at)
VALUES ('system', 'system@docket.invalid', 'docket (automatic filing)', 'filer', 'disabled', '1970-01-01T00:00:00Z');
