-- KubeHero schema v3: server-side sessions and CLI tokens (only the SHA-256 of the secret is stored), and
-- pending IdP sign-ins (single use). groups is a JSON array of strings; times are Unix seconds.

CREATE TABLE sessions (
    id                   TEXT    NOT NULL PRIMARY KEY,
    hash                 TEXT    NOT NULL UNIQUE,
    kind                 TEXT    NOT NULL CHECK (kind IN ('session', 'cli_token')),
    sub                  TEXT    NOT NULL,
    email                TEXT,
    groups               TEXT    NOT NULL,
    issuer               TEXT,
    csrf                 TEXT,
    created_at           INTEGER NOT NULL,
    last_seen_at         INTEGER NOT NULL,
    expires_at           INTEGER NOT NULL,
    absolute_expires_at  INTEGER NOT NULL,
    revoked_at           INTEGER,
    user_agent           TEXT
);

CREATE INDEX sessions_sub ON sessions (sub);

CREATE TABLE login_attempts (
    id             TEXT    NOT NULL PRIMARY KEY,
    issuer         TEXT    NOT NULL,
    pkce_verifier  TEXT    NOT NULL,
    nonce          TEXT    NOT NULL,
    return_to      TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
);
