-- KubeHero schema v1 (SQLite). JSON columns are TEXT; times are Unix seconds.

CREATE TABLE clusters (
    name            TEXT    NOT NULL PRIMARY KEY,
    api_server_url  TEXT,
    labels          TEXT    NOT NULL,
    created_by      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);

CREATE TABLE policies (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    cluster     TEXT    NOT NULL,
    namespace   TEXT,
    owner       TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('draft', 'armed', 'disarmed')),
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (cluster, name)
);

CREATE TABLE policy_transitions (
    policy_id   TEXT    NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    from_state  TEXT,
    to_state    TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    spec        TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (policy_id, seq)
);

CREATE TABLE role_bindings (
    id            TEXT    NOT NULL PRIMARY KEY,
    subject_kind  TEXT    NOT NULL CHECK (subject_kind IN ('group', 'user')),
    subject       TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    cluster       TEXT,
    namespace     TEXT,
    created_by    TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

-- NULLs are distinct in UNIQUE constraints: compare the scope through COALESCE so that two global bindings
-- of the same subject and role collide.
CREATE UNIQUE INDEX role_bindings_unique
    ON role_bindings (subject_kind, subject, role, COALESCE(cluster, ''), COALESCE(namespace, ''));

CREATE TABLE api_keys (
    id          TEXT    NOT NULL PRIMARY KEY,
    hash        TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);

CREATE INDEX api_keys_owner ON api_keys (owner, created_at);

CREATE TABLE settings (
    key         TEXT    NOT NULL PRIMARY KEY,
    value       TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
);
