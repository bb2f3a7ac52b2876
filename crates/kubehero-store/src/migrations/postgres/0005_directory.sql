-- KubeHero schema v5 (PostgreSQL): the SCIM directory (RFC 7643/7644): users, groups and memberships.
--
-- Deleting a user leaves a tombstone (deleted_at set): the row and its identity keys stay, so the IdP's
-- tokens for a deleted person keep being found (and refused); tombstones are invisible to SCIM reads and to
-- userName uniqueness (a partial unique index over live users). Case-insensitive names are stored lowered
-- (by the application, which also lowers non-ASCII text) next to the name as given. Identifiers and names use
-- the "C" collation so that ordering and comparison are bytewise, as on SQLite, whatever the database locale.
-- emails is a JSON array of strings, resource a JSON object; times are Unix seconds.

CREATE TABLE directory_users (
    id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_name        TEXT COLLATE "C" NOT NULL,
    user_name_lower  TEXT COLLATE "C" NOT NULL,
    external_id      TEXT COLLATE "C",
    active           BOOLEAN NOT NULL,
    subject          TEXT COLLATE "C",
    emails           TEXT    NOT NULL,
    resource         TEXT    NOT NULL,
    origin           TEXT    NOT NULL CHECK (origin IN ('scim', 'jit')),
    version          BIGINT  NOT NULL,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    deleted_at       BIGINT
);

CREATE UNIQUE INDEX directory_users_user_name ON directory_users (user_name_lower) WHERE deleted_at IS NULL;
-- Listing order of live users (`WHERE deleted_at IS NULL ORDER BY created_at, id`), covering the page's id
-- subquery; live users are counted as all rows minus the tombstones (their own index).
CREATE INDEX directory_users_list ON directory_users (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX directory_users_deleted ON directory_users (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX directory_users_external_id ON directory_users (external_id);

-- The identity keys of every user, live or tombstoned, for finding a person from a credential:
-- `id:<externalId>`, `id:<subject>` (exact) and `name:<lowercase userName>`, `name:<lowercase email>`.
CREATE TABLE directory_keys (
    key      TEXT COLLATE "C" NOT NULL,
    user_id  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (key, user_id)
);

CREATE INDEX directory_keys_user ON directory_keys (user_id);

CREATE TABLE directory_groups (
    id                  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    display_name        TEXT COLLATE "C" NOT NULL,
    display_name_lower  TEXT COLLATE "C" NOT NULL UNIQUE,
    external_id         TEXT COLLATE "C",
    resource            TEXT    NOT NULL,
    version             BIGINT  NOT NULL,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL
);

CREATE INDEX directory_groups_created ON directory_groups (created_at, id);
CREATE INDEX directory_groups_external_id ON directory_groups (external_id);

-- Memberships are deleted explicitly with their group or user, as on SQLite.
CREATE TABLE directory_members (
    group_id  TEXT COLLATE "C" NOT NULL,
    user_id   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

CREATE INDEX directory_members_user ON directory_members (user_id, group_id);
