-- KubeHero schema v2: the HMAC-chained audit log, its signed checkpoints and the forwarders' cursors.
-- body is the canonical record text the MAC covers; the other audit_log columns are copies for filters.

CREATE TABLE audit_log (
    seq         INTEGER NOT NULL PRIMARY KEY,
    event_id    TEXT    NOT NULL UNIQUE,
    time_ms     INTEGER NOT NULL,
    actor_sub   TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    cluster     TEXT,
    key_id      TEXT    NOT NULL,
    mac         TEXT    NOT NULL,
    body        TEXT    NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time_ms);
CREATE INDEX audit_log_actor ON audit_log (actor_sub, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);

-- The chain head: one row, locked by every append so that writers (several replicas) take turns.
CREATE TABLE audit_head (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    mac  TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, mac) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_checkpoints (
    seq         INTEGER NOT NULL,
    mac         TEXT    NOT NULL,
    time_ms     INTEGER NOT NULL,
    public_key  TEXT    NOT NULL,
    signature   TEXT    NOT NULL,
    PRIMARY KEY (seq, public_key)
);

CREATE TABLE audit_sink_cursors (
    sink        TEXT    NOT NULL PRIMARY KEY,
    seq         INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
