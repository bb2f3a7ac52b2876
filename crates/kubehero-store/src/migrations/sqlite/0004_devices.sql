-- KubeHero schema v4: device authorizations for `kubehero login` (RFC 8628-shaped). Only the SHA-256 of the
-- device code is stored; the user code is what the person types. groups is a JSON array of strings (empty
-- until approved); times are Unix seconds.

CREATE TABLE device_authorizations (
    device_hash   TEXT    NOT NULL PRIMARY KEY,
    user_code     TEXT    NOT NULL UNIQUE,
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'consumed')),
    sub           TEXT,
    email         TEXT,
    groups        TEXT    NOT NULL,
    issuer        TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    last_poll_at  INTEGER
);
