-- KubeHero schema v13: leases. Work that must happen once across replicas (signing audit checkpoints,
-- forwarding the audit log, the expiry sweeps) is done by the replica holding a lease; it renews the lease
-- well before expires_ms (Unix milliseconds), and another replica takes it once it has expired.
CREATE TABLE leases (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL
);
