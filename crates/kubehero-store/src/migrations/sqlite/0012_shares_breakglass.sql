-- KubeHero schema v12: share links, break-glass codes, and the first of two approvals of an elevation request. Times are Unix seconds; secrets are stored as their
-- SHA-256 only (token_hash, code_hash).

-- A link that gives whoever accepts it (or only the named recipients) a role on a cluster, or one namespace
-- of it, until expires_at. recipients is a JSON array of emails and "group:<name>"; [] lets anyone who signs in
-- accept. Accepting makes a role binding that ends with the share (share_grants); revoking deletes them.
CREATE TABLE shares (
    id               TEXT    NOT NULL PRIMARY KEY,
    token_hash       TEXT    NOT NULL UNIQUE,
    cluster          TEXT    NOT NULL,
    namespace        TEXT,
    role             TEXT    NOT NULL,
    created_by       TEXT    NOT NULL,
    created_by_email TEXT,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    max_uses         INTEGER,
    uses             INTEGER NOT NULL DEFAULT 0,
    recipients       TEXT    NOT NULL,
    revoked_at       INTEGER,
    revoked_by       TEXT,
    -- set once by the expiry sweep (with its share.expire audit row)
    expired_at       INTEGER
);
CREATE INDEX shares_cluster ON shares (cluster, created_at);

CREATE TABLE share_grants (
    share_id    TEXT    NOT NULL,
    binding_id  TEXT    NOT NULL PRIMARY KEY,
    subject     TEXT    NOT NULL,
    accepted_at INTEGER NOT NULL
);
CREATE INDEX share_grants_share ON share_grants (share_id);

-- One-time emergency codes: each gives owner on its cluster for ttl_secs once, with or without the IdP.
CREATE TABLE breakglass_codes (
    id              TEXT    NOT NULL PRIMARY KEY,
    code_hash       TEXT    NOT NULL UNIQUE,
    cluster         TEXT    NOT NULL,
    ttl_secs        INTEGER NOT NULL,
    created_by      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    used_at         INTEGER,
    reason          TEXT,
    used_from       TEXT,
    binding_id      TEXT,
    session_id      TEXT,
    expires_at      INTEGER,
    acknowledged_at INTEGER,
    acknowledged_by TEXT
);
CREATE INDEX breakglass_codes_cluster ON breakglass_codes (cluster, created_at);

-- A request whose cluster's access policy wants two approvals keeps its first approver here while pending.
ALTER TABLE access_requests ADD COLUMN first_approver TEXT;
