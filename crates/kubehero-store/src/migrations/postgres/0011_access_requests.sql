-- KubeHero schema v11: time-bound elevation. A person asks for a role on a cluster (or one namespace) for a
-- while, with a reason; an admin or owner of that scope (never the requester) approves or denies. Approval
-- creates a role binding that expires on its own (role_bindings.expires_at), in the same transaction. Times
-- are Unix seconds.

CREATE TABLE access_requests (
    id              TEXT    NOT NULL PRIMARY KEY,
    requester       TEXT    NOT NULL,
    requester_email TEXT,
    cluster         TEXT    NOT NULL,
    namespace       TEXT,
    role            TEXT    NOT NULL,
    duration_secs   BIGINT  NOT NULL,
    reason          TEXT    NOT NULL,
    -- pending, approved or denied
    state           TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    decided_by      TEXT,
    decided_at      BIGINT,
    comment         TEXT,
    binding_id      TEXT,
    expires_at      BIGINT
);
CREATE INDEX access_requests_state ON access_requests (state, created_at);
