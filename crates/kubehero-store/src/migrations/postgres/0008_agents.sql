-- KubeHero schema v8: cluster agents. The agent CA (its private key sealed under a key derived from
-- AUDIT_HMAC_KEY, never in the clear), one-time join tokens (only their SHA-256), the client certificates issued
-- to agents (serial, cluster, not-after, revocation) and each cluster's last known connection state. Times are
-- Unix seconds.

CREATE TABLE agent_cas (
    id          TEXT    NOT NULL PRIMARY KEY,
    cert_pem    TEXT    NOT NULL,
    sealed_key  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    -- NULL while staged (trusted and handed to agents, not yet signing); the most recently activated signs.
    activated_at BIGINT,
    -- Set when the CA is dropped: no longer trusted.
    retired_at  BIGINT
);

CREATE TABLE agent_join_tokens (
    hash        TEXT    NOT NULL PRIMARY KEY,
    cluster     TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    used_at     BIGINT
);
CREATE INDEX agent_join_tokens_cluster ON agent_join_tokens (cluster);

CREATE TABLE agent_certs (
    serial      TEXT    NOT NULL PRIMARY KEY,
    cluster     TEXT    NOT NULL,
    issued_at   BIGINT  NOT NULL,
    not_after   BIGINT  NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX agent_certs_cluster ON agent_certs (cluster);

CREATE TABLE cluster_status (
    cluster             TEXT    NOT NULL PRIMARY KEY,
    state               TEXT    NOT NULL CHECK (state IN ('connected', 'disconnected', 'removed')),
    since               BIGINT  NOT NULL,
    last_seen           BIGINT,
    agent_version       TEXT,
    kubernetes_version  TEXT,
    cert_not_after      BIGINT
);
