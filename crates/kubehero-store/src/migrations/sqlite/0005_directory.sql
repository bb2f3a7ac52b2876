-- KubeHero schema v5: the SCIM directory (RFC 7643/7644): users, groups and memberships.
--
-- Deleting a user leaves a tombstone (deleted_at set): the row and its identity keys stay, so the IdP's
-- tokens for a deleted person keep being found (and refused); tombstones are invisible to SCIM reads and to
-- userName uniqueness (a partial unique index over live users). Case-insensitive names are stored lowered
-- (by the application, which also lowers non-ASCII text) next to the name as given. emails is a JSON array
-- of strings, resource a JSON object; times are Unix seconds.

CREATE TABLE directory_users (
    id               TEXT    NOT NULL PRIMARY KEY,
    user_name        TEXT    NOT NULL,
    user_name_lower  TEXT    NOT NULL,
    external_id      TEXT,
    active           INTEGER NOT NULL CHECK (active IN (0, 1)),
    subject          TEXT,
    emails           TEXT    NOT NULL,
    resource         TEXT    NOT NULL,
    origin           TEXT    NOT NULL CHECK (origin IN ('scim', 'jit')),
    version          INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    deleted_at       INTEGER
);

CREATE UNIQUE INDEX directory_users_user_name ON directory_users (user_name_lower) WHERE deleted_at IS NULL;
-- Listing order of live users (`WHERE deleted_at IS NULL ORDER BY created_at, id`). It covers the page's id
-- subquery (deleted_at included for that), so a deep page skips index entries, not table rows. Live users are
-- counted as all rows (a b-tree count) minus the tombstones (their own index).
CREATE INDEX directory_users_list ON directory_users (created_at, id, deleted_at) WHERE deleted_at IS NULL;
CREATE INDEX directory_users_deleted ON directory_users (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX directory_users_external_id ON directory_users (external_id);

-- The identity keys of every user, live or tombstoned, for finding a person from a credential:
-- `id:<externalId>`, `id:<subject>` (exact) and `name:<lowercase userName>`, `name:<lowercase email>`.
CREATE TABLE directory_keys (
    key      TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (key, user_id)
) WITHOUT ROWID;

CREATE INDEX directory_keys_user ON directory_keys (user_id);

CREATE TABLE directory_groups (
    id                  TEXT    NOT NULL PRIMARY KEY,
    display_name        TEXT    NOT NULL,
    display_name_lower  TEXT    NOT NULL UNIQUE,
    external_id         TEXT,
    resource            TEXT    NOT NULL,
    version             INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);

CREATE INDEX directory_groups_created ON directory_groups (created_at, id);
CREATE INDEX directory_groups_external_id ON directory_groups (external_id);

-- Memberships are deleted explicitly with their group or user (no foreign keys to rely on).
CREATE TABLE directory_members (
    group_id  TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;

CREATE INDEX directory_members_user ON directory_members (user_id, group_id);
