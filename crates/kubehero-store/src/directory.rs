//! SQL of the SCIM directory (RFC 7643 §4 resources, RFC 7644 §3.4.2 listings), shared by both backends
//! through [`directory_store!`].
//!
//! - Identity keys: every user, live or tombstoned, has rows in `directory_keys` — `id:<externalId>`,
//!   `id:<subject>` (exact) and `name:<lowercase userName>`, `name:<lowercase email>` — rewritten with the
//!   user in one transaction. [`crate::DirectoryStore::find_people`] is one indexed lookup of at most three
//!   keys, so a credential of a deleted person still finds the tombstone.
//! - Case-insensitive names are lowered here, in Rust (`to_lowercase`, which handles non-ASCII text), and
//!   stored next to the name as given; SQL only compares the lowered column.
//! - Bulk writes (users, identity keys, memberships) are multi-row statements in chunks of at most
//!   [`MAX_PARAMS`] parameters, below SQLite's limit; member ids are checked to be live users in chunks too.
//! - Version checks read the row and write it in one transaction: SQLite's `BEGIN IMMEDIATE` holds the
//!   database write lock, PostgreSQL locks the row (`FOR UPDATE`). On PostgreSQL the users a group update
//!   adds are share-locked (`FOR SHARE`) before the group is locked, and a user deletion locks the user before
//!   its groups: both take users first, so they cannot deadlock, and a user being deleted cannot be added to
//!   a group at the same time.

use crate::{DirectoryGroup, DirectoryUser, GroupSelect, PersonMatch, Result, StoreError, UserOrigin, UserSelect};
use std::collections::{BTreeSet, HashSet};

/// Most parameters one statement binds: below SQLite's historic limit of 999, and plenty for PostgreSQL.
pub(crate) const MAX_PARAMS: usize = 900;

/// `n` numbered placeholders from `$from`: `$3, $4, $5`.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `ids` without repetitions, in their first order.
pub(crate) fn unique(ids: &[String]) -> Vec<&str> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter().map(String::as_str).filter(|id| seen.insert(*id)).collect()
}

/// The `(total, page)` of already ordered rows; a negative offset or limit counts as 0.
pub(crate) fn page<T>(rows: Vec<T>, offset: i64, limit: i64) -> (i64, Vec<T>) {
    let total = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    let skip = usize::try_from(offset.max(0)).unwrap_or(usize::MAX);
    let take = usize::try_from(limit.max(0)).unwrap_or(usize::MAX);
    (total, rows.into_iter().skip(skip).take(take).collect())
}

pub(crate) fn conflict(what: &str, stored: i64, expected: Option<i64>) -> Option<StoreError> {
    expected.filter(|e| *e != stored).map(|e| {
        StoreError::Conflict(format!(
            "{what} is at version {stored}, not {e}: it changed since it was read; fetch it again and retry"
        ))
    })
}

// ---- identity keys ----------------------------------------------------------------------------------------

fn id_key(id: &str) -> String {
    format!("id:{id}")
}

fn name_key(name: &str) -> String {
    format!("name:{}", name.to_lowercase())
}

/// The identity keys of a user (sorted, without repetitions; empty values have none).
pub(crate) fn user_keys(u: &DirectoryUser) -> BTreeSet<String> {
    let ids = [&u.external_id, &u.subject].into_iter().flatten().filter(|v| !v.is_empty()).map(|v| id_key(v));
    let names = std::iter::once(&u.user_name).chain(&u.emails).filter(|v| !v.is_empty()).map(|v| name_key(v));
    ids.chain(names).collect()
}

/// The keys [`crate::DirectoryStore::find_people`] looks up.
pub(crate) fn lookup_keys(ids: &[&str], names: &[&str]) -> Vec<String> {
    let ids = ids.iter().filter(|v| !v.is_empty()).map(|v| id_key(v));
    let names = names.iter().filter(|v| !v.is_empty()).map(|v| name_key(v));
    ids.chain(names).collect::<BTreeSet<_>>().into_iter().collect()
}

/// `INSERT` of `n` identity keys, `(key, user_id)` each.
pub(crate) fn insert_keys_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect();
    format!("INSERT INTO directory_keys (key, user_id) VALUES {}", rows.join(", "))
}
pub(crate) const DELETE_USER_KEYS: &str = "DELETE FROM directory_keys WHERE user_id = $1";

// ---- users ------------------------------------------------------------------------------------------------

pub(crate) type UserRow =
    (String, String, Option<String>, bool, Option<String>, String, String, String, i64, i64, i64, Option<i64>);

const USER_COLS: &str =
    "id, user_name, external_id, active, subject, emails, resource, origin, version, created_at, updated_at, deleted_at";

/// Parameters per row of [`insert_users_sql`]: id, user_name, user_name_lower, external_id, active, subject,
/// emails, resource, origin, created_at, updated_at. New users start at version 1, live.
pub(crate) const USER_PARAMS: usize = 11;

pub(crate) fn insert_users_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let b = i * USER_PARAMS;
            format!("({}, 1, ${}, ${}, NULL)", placeholders(b + 1, 9), b + 10, b + 11)
        })
        .collect();
    format!(
        "INSERT INTO directory_users (id, user_name, user_name_lower, external_id, active, subject, emails, \
         resource, origin, version, created_at, updated_at, deleted_at) VALUES {}",
        rows.join(", ")
    )
}
/// A live user; `lock` is `" FOR UPDATE"` where the backend supports it, else empty.
pub(crate) fn live_user_sql(lock: &str) -> String {
    format!("SELECT {USER_COLS} FROM directory_users WHERE id = $1 AND deleted_at IS NULL{lock}")
}
pub(crate) fn live_user_version_sql(lock: &str) -> String {
    format!("SELECT version FROM directory_users WHERE id = $1 AND deleted_at IS NULL{lock}")
}
/// `$1` user_name, `$2` user_name_lower, `$3` external_id, `$4` active, `$5` subject, `$6` emails,
/// `$7` resource, `$8` origin, `$9` updated_at, `$10` id.
pub(crate) fn update_user_sql() -> String {
    format!(
        "UPDATE directory_users SET user_name = $1, user_name_lower = $2, external_id = $3, active = $4, \
         subject = $5, emails = $6, resource = $7, origin = $8, version = version + 1, updated_at = $9 \
         WHERE id = $10 RETURNING {USER_COLS}"
    )
}
/// `$1` at, `$2` id.
pub(crate) const TOMBSTONE_USER: &str =
    "UPDATE directory_users SET deleted_at = $1, updated_at = $1, version = version + 1 WHERE id = $2";
/// Bumps every group of user `$2` (before its memberships go), `$1` at.
pub(crate) const BUMP_GROUPS_OF_USER: &str = "UPDATE directory_groups SET version = version + 1, updated_at = $1 \
     WHERE id IN (SELECT group_id FROM directory_members WHERE user_id = $2)";
pub(crate) const DELETE_USER_MEMBERSHIPS: &str = "DELETE FROM directory_members WHERE user_id = $1";
/// All rows minus the tombstones: SQLite counts a whole table without reading its rows, while counting the
/// live users would walk every entry of their index.
pub(crate) const COUNT_LIVE_USERS: &str = "SELECT (SELECT COUNT(*) FROM directory_users) \
     - (SELECT COUNT(*) FROM directory_users WHERE deleted_at IS NOT NULL)";
/// A page of live users, `$1` limit, `$2` offset. The offset is skipped in the index that covers the subquery;
/// only the page's rows are read.
pub(crate) fn live_users_page_sql() -> String {
    format!(
        "SELECT {USER_COLS} FROM directory_users WHERE id IN (SELECT id FROM directory_users \
         WHERE deleted_at IS NULL ORDER BY created_at, id LIMIT $1 OFFSET $2) ORDER BY created_at, id"
    )
}
/// The condition and its one parameter for a selector other than `All` (`None` for `All`).
pub(crate) fn user_filter(select: UserSelect<'_>) -> Option<(&'static str, String)> {
    Some(match select {
        UserSelect::All => return None,
        UserSelect::Id(id) => ("id = $1", id.to_string()),
        UserSelect::UserName(n) => ("user_name_lower = $1", n.to_lowercase()),
        UserSelect::ExternalId(e) => ("external_id = $1", e.to_string()),
        // `name:` keys hold user names too: the caller keeps only users with the email (see `has_email`).
        UserSelect::Email(e) => ("id IN (SELECT user_id FROM directory_keys WHERE key = $1)", name_key(e)),
    })
}
pub(crate) fn select_users_sql(condition: &str) -> String {
    format!("SELECT {USER_COLS} FROM directory_users WHERE deleted_at IS NULL AND {condition} ORDER BY created_at, id")
}
/// Whether the selector keeps `u`: an `Email` selection found through a `name:` key may be a user name.
pub(crate) fn selects_user(select: UserSelect<'_>, u: &DirectoryUser) -> bool {
    match select {
        UserSelect::Email(e) => {
            let e = e.to_lowercase();
            u.emails.iter().any(|x| x.to_lowercase() == e)
        }
        _ => true,
    }
}
/// Which of `n` ids (`$1…`) are live users; `lock` is `" FOR SHARE"` on PostgreSQL, else empty.
pub(crate) fn live_user_ids_sql(n: usize, lock: &str) -> String {
    format!("SELECT id FROM directory_users WHERE deleted_at IS NULL AND id IN ({}){lock}", placeholders(1, n))
}

pub(crate) fn user_from_row(row: UserRow) -> Result<DirectoryUser> {
    let (
        id,
        user_name,
        external_id,
        active,
        subject,
        emails,
        resource,
        origin,
        version,
        created_at,
        updated_at,
        deleted_at,
    ) = row;
    let emails: Vec<String> =
        serde_json::from_str(&emails).map_err(|e| StoreError::Corrupt(format!("emails of user {id:?}: {e}")))?;
    let resource = crate::sql::json(&resource, || format!("resource of user {id:?}"))?;
    let origin =
        UserOrigin::parse(&origin).ok_or_else(|| StoreError::Corrupt(format!("user {id:?} has origin {origin:?}")))?;
    Ok(DirectoryUser {
        id,
        user_name,
        external_id,
        active,
        subject,
        emails,
        resource,
        origin,
        version,
        created_at,
        updated_at,
        deleted_at,
    })
}

// ---- people -----------------------------------------------------------------------------------------------

pub(crate) type PersonRow = (String, String, bool, Option<i64>);

/// Users, live or not, holding one of `n` keys (`$1…`).
pub(crate) fn find_people_sql(n: usize) -> String {
    format!(
        "SELECT id, user_name, active, deleted_at FROM directory_users \
         WHERE id IN (SELECT user_id FROM directory_keys WHERE key IN ({})) ORDER BY created_at, id",
        placeholders(1, n)
    )
}

pub(crate) fn person_from_row(row: PersonRow) -> PersonMatch {
    let (user_id, user_name, active, deleted_at) = row;
    PersonMatch { user_id, user_name, active, deleted: deleted_at.is_some(), groups: Vec::new() }
}

// ---- groups -----------------------------------------------------------------------------------------------

pub(crate) type GroupRow = (String, String, Option<String>, String, i64, i64, i64);

const GROUP_COLS: &str = "id, display_name, external_id, resource, version, created_at, updated_at";

/// `$1` id, `$2` display_name, `$3` display_name_lower, `$4` external_id, `$5` resource, `$6` created_at,
/// `$7` updated_at; version 1.
pub(crate) const INSERT_GROUP: &str = "INSERT INTO directory_groups \
     (id, display_name, display_name_lower, external_id, resource, version, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, 1, $6, $7)";
pub(crate) fn group_sql(lock: &str) -> String {
    format!("SELECT {GROUP_COLS} FROM directory_groups WHERE id = $1{lock}")
}
pub(crate) fn group_version_sql(lock: &str) -> String {
    format!("SELECT version FROM directory_groups WHERE id = $1{lock}")
}
/// `$1` display_name, `$2` display_name_lower, `$3` external_id, `$4` resource, `$5` updated_at, `$6` id.
pub(crate) fn update_group_sql() -> String {
    format!(
        "UPDATE directory_groups SET display_name = $1, display_name_lower = $2, external_id = $3, resource = $4, \
         version = version + 1, updated_at = $5 WHERE id = $6 RETURNING {GROUP_COLS}"
    )
}
pub(crate) const DELETE_GROUP: &str = "DELETE FROM directory_groups WHERE id = $1";
pub(crate) const GROUP_EXISTS: &str = "SELECT id FROM directory_groups WHERE id = $1";
pub(crate) const GROUP_NAMES: &str = "SELECT display_name FROM directory_groups ORDER BY display_name_lower, id";
pub(crate) const COUNT_GROUPS: &str = "SELECT COUNT(*) FROM directory_groups";
/// `$1` limit, `$2` offset.
pub(crate) fn groups_page_sql() -> String {
    format!("SELECT {GROUP_COLS} FROM directory_groups ORDER BY created_at, id LIMIT $1 OFFSET $2")
}
/// The condition and its one parameter for a selector other than `All` (`None` for `All`).
pub(crate) fn group_filter(select: GroupSelect<'_>) -> Option<(&'static str, String)> {
    Some(match select {
        GroupSelect::All => return None,
        GroupSelect::Id(id) => ("id = $1", id.to_string()),
        GroupSelect::DisplayName(n) => ("display_name_lower = $1", n.to_lowercase()),
        GroupSelect::ExternalId(e) => ("external_id = $1", e.to_string()),
        GroupSelect::Member(u) => ("id IN (SELECT group_id FROM directory_members WHERE user_id = $1)", u.to_string()),
    })
}
pub(crate) fn select_groups_sql(condition: &str) -> String {
    format!("SELECT {GROUP_COLS} FROM directory_groups WHERE {condition} ORDER BY created_at, id")
}

pub(crate) fn group_from_row(row: GroupRow) -> Result<DirectoryGroup> {
    let (id, display_name, external_id, resource, version, created_at, updated_at) = row;
    let resource = crate::sql::json(&resource, || format!("resource of group {id:?}"))?;
    Ok(DirectoryGroup { id, display_name, external_id, resource, version, created_at, updated_at })
}

// ---- memberships ------------------------------------------------------------------------------------------

/// Adds `n` members (`$2…`) to group `$1`; existing members are left alone.
pub(crate) fn add_members_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n).map(|i| format!("($1, ${})", i + 2)).collect();
    format!("INSERT INTO directory_members (group_id, user_id) VALUES {} ON CONFLICT DO NOTHING", rows.join(", "))
}
/// Removes `n` users (`$2…`) from group `$1`; non-members are ignored.
pub(crate) fn remove_members_sql(n: usize) -> String {
    format!("DELETE FROM directory_members WHERE group_id = $1 AND user_id IN ({})", placeholders(2, n))
}
pub(crate) const CLEAR_MEMBERS: &str = "DELETE FROM directory_members WHERE group_id = $1";
pub(crate) const TAKE_MEMBERS: &str = "DELETE FROM directory_members WHERE group_id = $1 RETURNING user_id";
pub(crate) const GROUP_MEMBERS: &str = "SELECT m.user_id, u.user_name FROM directory_members m \
     JOIN directory_users u ON u.id = m.user_id WHERE m.group_id = $1";
/// `(user_id, group_id, display_name)` of the memberships of `n` users (`$1…`).
pub(crate) fn memberships_sql(n: usize) -> String {
    format!(
        "SELECT m.user_id, m.group_id, g.display_name FROM directory_members m \
         JOIN directory_groups g ON g.id = m.group_id WHERE m.user_id IN ({})",
        placeholders(1, n)
    )
}

/// Implements [`crate::DirectoryStore`] for a store with a `pool` field, `begin()` and `err()` (from
/// `sql_store!`). `$conn` is the backend's connection type; `$lock` (`" FOR UPDATE"` or `""`) is appended to
/// the read that precedes a versioned write, `$share` (`" FOR SHARE"` or `""`) to the check that members are
/// live users.
macro_rules! directory_store {
    ($store:ty, $conn:ty, $lock:expr, $share:expr) => {
        impl $store {
            async fn dir_create_users_on(conn: &mut $conn, users: &[$crate::DirectoryUser]) -> $crate::Result<()> {
                let what = match users {
                    [u] => format!("user {:?} (or userName {:?})", u.id, u.user_name),
                    _ => format!("one of {} users (an id, or a userName among live users)", users.len()),
                };
                for chunk in users.chunks($crate::directory::MAX_PARAMS / $crate::directory::USER_PARAMS) {
                    let sql = $crate::directory::insert_users_sql(chunk.len());
                    let mut q = sqlx::query(&sql);
                    for u in chunk {
                        q = q
                            .bind(&u.id)
                            .bind(&u.user_name)
                            .bind(u.user_name.to_lowercase())
                            .bind(&u.external_id)
                            .bind(u.active)
                            .bind(&u.subject)
                            .bind($crate::sql::to_json(&u.emails)?)
                            .bind($crate::sql::to_json(&u.resource)?)
                            .bind(u.origin.as_str())
                            .bind(u.created_at)
                            .bind(u.updated_at);
                    }
                    q.execute(&mut *conn).await.map_err(Self::err(what.clone()))?;
                }
                Self::dir_insert_keys(conn, users).await?;
                Ok(())
            }

            async fn dir_update_user_on(
                conn: &mut $conn,
                user: &$crate::DirectoryUser,
                expected_version: Option<i64>,
            ) -> $crate::Result<$crate::DirectoryUser> {
                let what = format!("user {:?}", user.id);
                let sql = $crate::directory::live_user_version_sql($lock);
                Self::dir_expect_version_on(conn, &sql, &user.id, &what, expected_version).await?;
                let row: $crate::directory::UserRow = sqlx::query_as(&$crate::directory::update_user_sql())
                    .bind(&user.user_name)
                    .bind(user.user_name.to_lowercase())
                    .bind(&user.external_id)
                    .bind(user.active)
                    .bind(&user.subject)
                    .bind($crate::sql::to_json(&user.emails)?)
                    .bind($crate::sql::to_json(&user.resource)?)
                    .bind(user.origin.as_str())
                    .bind(user.updated_at)
                    .bind(&user.id)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(Self::err(format!("userName {:?}", user.user_name)))?;
                let stored = $crate::directory::user_from_row(row)?;
                sqlx::query($crate::directory::DELETE_USER_KEYS)
                    .bind(&user.id)
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err(what.clone()))?;
                Self::dir_insert_keys(conn, std::slice::from_ref(&stored)).await?;
                Ok(stored)
            }

            async fn dir_delete_user_on(
                conn: &mut $conn,
                id: &str,
                expected_version: Option<i64>,
                at: i64,
            ) -> $crate::Result<$crate::DirectoryUser> {
                let what = format!("user {id:?}");
                let row: Option<$crate::directory::UserRow> = sqlx::query_as(&$crate::directory::live_user_sql($lock))
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Self::err(what.clone()))?;
                let row = row.ok_or_else(|| $crate::StoreError::NotFound(what.clone()))?;
                let user = $crate::directory::user_from_row(row)?;
                if let Some(e) = $crate::directory::conflict(&what, user.version, expected_version) {
                    return Err(e);
                }
                for sql in [$crate::directory::TOMBSTONE_USER, $crate::directory::BUMP_GROUPS_OF_USER] {
                    sqlx::query(sql).bind(at).bind(id).execute(&mut *conn).await.map_err(Self::err(what.clone()))?;
                }
                sqlx::query($crate::directory::DELETE_USER_MEMBERSHIPS)
                    .bind(id)
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err(what.clone()))?;
                Ok(user)
            }

            async fn dir_create_group_on(
                conn: &mut $conn,
                group: &$crate::DirectoryGroup,
                members: &[String],
            ) -> $crate::Result<()> {
                let what = format!("group {:?} (or displayName {:?})", group.id, group.display_name);
                let members = $crate::directory::unique(members);
                Self::dir_check_live(conn, &members).await?;
                sqlx::query($crate::directory::INSERT_GROUP)
                    .bind(&group.id)
                    .bind(&group.display_name)
                    .bind(group.display_name.to_lowercase())
                    .bind(&group.external_id)
                    .bind($crate::sql::to_json(&group.resource)?)
                    .bind(group.created_at)
                    .bind(group.updated_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err(what.clone()))?;
                Self::dir_add_members(conn, &group.id, &members).await?;
                Ok(())
            }

            async fn dir_update_group_on(
                conn: &mut $conn,
                group: &$crate::DirectoryGroup,
                members: $crate::MemberChange<'_>,
                expected_version: Option<i64>,
            ) -> $crate::Result<$crate::DirectoryGroup> {
                use $crate::MemberChange;
                let what = format!("group {:?}", group.id);
                let (added, removed) = match members {
                    MemberChange::Keep => (Vec::new(), Vec::new()),
                    MemberChange::Replace(ids) => ($crate::directory::unique(ids), Vec::new()),
                    MemberChange::Edit { add, remove } => {
                        ($crate::directory::unique(add), $crate::directory::unique(remove))
                    }
                };
                // Users before the group: the lock order of `delete_user` (see the module docs).
                Self::dir_check_live(conn, &added).await?;
                let sql = $crate::directory::group_version_sql($lock);
                Self::dir_expect_version_on(conn, &sql, &group.id, &what, expected_version).await?;
                let row: $crate::directory::GroupRow = sqlx::query_as(&$crate::directory::update_group_sql())
                    .bind(&group.display_name)
                    .bind(group.display_name.to_lowercase())
                    .bind(&group.external_id)
                    .bind($crate::sql::to_json(&group.resource)?)
                    .bind(group.updated_at)
                    .bind(&group.id)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(Self::err(format!("displayName {:?}", group.display_name)))?;
                if matches!(members, MemberChange::Replace(_)) {
                    sqlx::query($crate::directory::CLEAR_MEMBERS)
                        .bind(&group.id)
                        .execute(&mut *conn)
                        .await
                        .map_err(Self::err(what.clone()))?;
                }
                // Removals first: an id both removed and added ends up a member.
                Self::dir_remove_members(conn, &group.id, &removed).await?;
                Self::dir_add_members(conn, &group.id, &added).await?;
                $crate::directory::group_from_row(row)
            }

            async fn dir_delete_group_on(
                conn: &mut $conn,
                id: &str,
                expected_version: Option<i64>,
            ) -> $crate::Result<($crate::DirectoryGroup, Vec<String>)> {
                let what = format!("group {id:?}");
                let row: Option<$crate::directory::GroupRow> = sqlx::query_as(&$crate::directory::group_sql($lock))
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Self::err(what.clone()))?;
                let row = row.ok_or_else(|| $crate::StoreError::NotFound(what.clone()))?;
                let group = $crate::directory::group_from_row(row)?;
                if let Some(e) = $crate::directory::conflict(&what, group.version, expected_version) {
                    return Err(e);
                }
                let mut members: Vec<String> = sqlx::query_scalar($crate::directory::TAKE_MEMBERS)
                    .bind(id)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(Self::err(what.clone()))?;
                sqlx::query($crate::directory::DELETE_GROUP)
                    .bind(id)
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err(what.clone()))?;
                members.sort();
                Ok((group, members))
            }

            /// Reads (and locks) a row's version with `sql`: `NotFound(what)` when absent, `Conflict` when it is
            /// not `expected` (when given).
            async fn dir_expect_version_on(
                conn: &mut $conn,
                sql: &str,
                id: &str,
                what: &str,
                expected: Option<i64>,
            ) -> $crate::Result<()> {
                let version: Option<i64> = sqlx::query_scalar(sql)
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Self::err(what.to_string()))?;
                let version = version.ok_or_else(|| $crate::StoreError::NotFound(what.to_string()))?;
                match $crate::directory::conflict(what, version, expected) {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }

            /// `NotFound("user …")` for the first of `ids` (without repetitions) that is not a live user.
            async fn dir_check_live(conn: &mut $conn, ids: &[&str]) -> $crate::Result<()> {
                for chunk in ids.chunks($crate::directory::MAX_PARAMS) {
                    let sql = $crate::directory::live_user_ids_sql(chunk.len(), $share);
                    let mut q = sqlx::query_scalar::<_, String>(&sql);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    let found = q.fetch_all(&mut *conn).await.map_err(Self::err("users"))?;
                    if found.len() < chunk.len() {
                        let found: std::collections::HashSet<&str> = found.iter().map(String::as_str).collect();
                        if let Some(missing) = chunk.iter().find(|id| !found.contains(**id)) {
                            return Err($crate::StoreError::NotFound(format!("user {missing:?}")));
                        }
                    }
                }
                Ok(())
            }

            async fn dir_add_members(conn: &mut $conn, group_id: &str, ids: &[&str]) -> $crate::Result<()> {
                for chunk in ids.chunks($crate::directory::MAX_PARAMS - 1) {
                    let sql = $crate::directory::add_members_sql(chunk.len());
                    let mut q = sqlx::query(&sql).bind(group_id);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    q.execute(&mut *conn).await.map_err(Self::err(format!("members of group {group_id:?}")))?;
                }
                Ok(())
            }

            async fn dir_remove_members(conn: &mut $conn, group_id: &str, ids: &[&str]) -> $crate::Result<()> {
                for chunk in ids.chunks($crate::directory::MAX_PARAMS - 1) {
                    let sql = $crate::directory::remove_members_sql(chunk.len());
                    let mut q = sqlx::query(&sql).bind(group_id);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    q.execute(&mut *conn).await.map_err(Self::err(format!("members of group {group_id:?}")))?;
                }
                Ok(())
            }

            /// Inserts the identity keys of `users` (whose old keys, if any, are already gone).
            async fn dir_insert_keys(conn: &mut $conn, users: &[$crate::DirectoryUser]) -> $crate::Result<()> {
                let keys: Vec<(String, &str)> = users
                    .iter()
                    .flat_map(|u| $crate::directory::user_keys(u).into_iter().map(|k| (k, u.id.as_str())))
                    .collect();
                for chunk in keys.chunks($crate::directory::MAX_PARAMS / 2) {
                    let sql = $crate::directory::insert_keys_sql(chunk.len());
                    let mut q = sqlx::query(&sql);
                    for (key, user_id) in chunk {
                        q = q.bind(key).bind(*user_id);
                    }
                    q.execute(&mut *conn).await.map_err(Self::err("identity keys of users"))?;
                }
                Ok(())
            }

            /// The memberships of `user_ids` (without repetitions), through the pool.
            async fn dir_memberships(&self, user_ids: &[&str]) -> $crate::Result<Vec<$crate::Membership>> {
                let mut out = Vec::new();
                for chunk in user_ids.chunks($crate::directory::MAX_PARAMS) {
                    let sql = $crate::directory::memberships_sql(chunk.len());
                    let mut q = sqlx::query_as::<_, (String, String, String)>(&sql);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    let rows = q.fetch_all(&self.pool).await.map_err(Self::err("memberships"))?;
                    out.extend(rows.into_iter().map(|(user_id, group_id, display_name)| $crate::Membership {
                        user_id,
                        group_id,
                        display_name,
                    }));
                }
                Ok(out)
            }
        }

        #[async_trait::async_trait]
        impl $crate::DirectoryStore for $store {
            async fn create_users(&self, users: &[$crate::DirectoryUser]) -> $crate::Result<()> {
                $crate::ChangeStore::apply(self, $crate::change::Change::CreateUsers(users), None).await.map(drop)
            }

            async fn get_user(&self, id: &str) -> $crate::Result<$crate::DirectoryUser> {
                let row: Option<$crate::directory::UserRow> = sqlx::query_as(&$crate::directory::live_user_sql(""))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err(format!("user {id:?}")))?;
                let row = row.ok_or_else(|| $crate::StoreError::NotFound(format!("user {id:?}")))?;
                $crate::directory::user_from_row(row)
            }

            async fn update_user(
                &self,
                user: &$crate::DirectoryUser,
                expected_version: Option<i64>,
            ) -> $crate::Result<$crate::DirectoryUser> {
                $crate::change::changed_user(
                    $crate::ChangeStore::apply(
                        self,
                        $crate::change::Change::UpdateUser { user, expected_version },
                        None,
                    )
                    .await?
                    .0,
                )
            }

            async fn delete_user(
                &self,
                id: &str,
                expected_version: Option<i64>,
                at: i64,
            ) -> $crate::Result<$crate::DirectoryUser> {
                $crate::change::changed_user(
                    $crate::ChangeStore::apply(
                        self,
                        $crate::change::Change::DeleteUser { id, expected_version, at },
                        None,
                    )
                    .await?
                    .0,
                )
            }

            async fn select_users(
                &self,
                select: $crate::UserSelect<'_>,
                offset: i64,
                limit: i64,
            ) -> $crate::Result<(i64, Vec<$crate::DirectoryUser>)> {
                let Some((condition, arg)) = $crate::directory::user_filter(select) else {
                    let total: i64 = sqlx::query_scalar($crate::directory::COUNT_LIVE_USERS)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(Self::err("users"))?;
                    let rows: Vec<$crate::directory::UserRow> =
                        sqlx::query_as(&$crate::directory::live_users_page_sql())
                            .bind(limit.max(0))
                            .bind(offset.max(0))
                            .fetch_all(&self.pool)
                            .await
                            .map_err(Self::err("users"))?;
                    let users =
                        rows.into_iter().map($crate::directory::user_from_row).collect::<$crate::Result<_>>()?;
                    return Ok((total, users));
                };
                let rows: Vec<$crate::directory::UserRow> =
                    sqlx::query_as(&$crate::directory::select_users_sql(condition))
                        .bind(arg)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(Self::err("users"))?;
                let mut users = Vec::with_capacity(rows.len());
                for row in rows {
                    let u = $crate::directory::user_from_row(row)?;
                    if $crate::directory::selects_user(select, &u) {
                        users.push(u);
                    }
                }
                Ok($crate::directory::page(users, offset, limit))
            }

            async fn memberships(&self, user_ids: &[String]) -> $crate::Result<Vec<$crate::Membership>> {
                self.dir_memberships(&$crate::directory::unique(user_ids)).await
            }

            async fn find_people_by(&self, ids: &[&str], names: &[&str]) -> $crate::Result<Vec<$crate::PersonMatch>> {
                let keys = $crate::directory::lookup_keys(ids, names);
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = $crate::directory::find_people_sql(keys.len());
                let mut q = sqlx::query_as::<_, $crate::directory::PersonRow>(&sql);
                for k in &keys {
                    q = q.bind(k);
                }
                let rows = q.fetch_all(&self.pool).await.map_err(Self::err("people"))?;
                let mut people: Vec<$crate::PersonMatch> =
                    rows.into_iter().map($crate::directory::person_from_row).collect();
                let live: Vec<&str> = people.iter().filter(|p| !p.deleted).map(|p| p.user_id.as_str()).collect();
                let memberships = if live.is_empty() { Vec::new() } else { self.dir_memberships(&live).await? };
                for p in &mut people {
                    p.groups = memberships
                        .iter()
                        .filter(|m| !p.deleted && m.user_id == p.user_id)
                        .map(|m| m.display_name.clone())
                        .collect();
                    p.groups.sort();
                }
                Ok(people)
            }

            async fn create_group(&self, group: &$crate::DirectoryGroup, members: &[String]) -> $crate::Result<()> {
                $crate::ChangeStore::apply(self, $crate::change::Change::CreateGroup { group, members }, None)
                    .await
                    .map(drop)
            }

            async fn get_group(&self, id: &str) -> $crate::Result<$crate::DirectoryGroup> {
                let row: Option<$crate::directory::GroupRow> = sqlx::query_as(&$crate::directory::group_sql(""))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err(format!("group {id:?}")))?;
                let row = row.ok_or_else(|| $crate::StoreError::NotFound(format!("group {id:?}")))?;
                $crate::directory::group_from_row(row)
            }

            async fn update_group(
                &self,
                group: &$crate::DirectoryGroup,
                members: $crate::MemberChange<'_>,
                expected_version: Option<i64>,
            ) -> $crate::Result<$crate::DirectoryGroup> {
                $crate::change::changed_group(
                    $crate::ChangeStore::apply(
                        self,
                        $crate::change::Change::UpdateGroup { group, members, expected_version },
                        None,
                    )
                    .await?
                    .0,
                )
            }

            async fn delete_group(
                &self,
                id: &str,
                expected_version: Option<i64>,
            ) -> $crate::Result<($crate::DirectoryGroup, Vec<String>)> {
                $crate::change::changed_deleted_group(
                    $crate::ChangeStore::apply(
                        self,
                        $crate::change::Change::DeleteGroup { id, expected_version },
                        None,
                    )
                    .await?
                    .0,
                )
            }

            async fn select_groups(
                &self,
                select: $crate::GroupSelect<'_>,
                offset: i64,
                limit: i64,
            ) -> $crate::Result<(i64, Vec<$crate::DirectoryGroup>)> {
                let Some((condition, arg)) = $crate::directory::group_filter(select) else {
                    let total: i64 = sqlx::query_scalar($crate::directory::COUNT_GROUPS)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(Self::err("groups"))?;
                    let rows: Vec<$crate::directory::GroupRow> = sqlx::query_as(&$crate::directory::groups_page_sql())
                        .bind(limit.max(0))
                        .bind(offset.max(0))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(Self::err("groups"))?;
                    let groups =
                        rows.into_iter().map($crate::directory::group_from_row).collect::<$crate::Result<_>>()?;
                    return Ok((total, groups));
                };
                let rows: Vec<$crate::directory::GroupRow> =
                    sqlx::query_as(&$crate::directory::select_groups_sql(condition))
                        .bind(arg)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(Self::err("groups"))?;
                let groups = rows.into_iter().map($crate::directory::group_from_row).collect::<$crate::Result<_>>()?;
                Ok($crate::directory::page(groups, offset, limit))
            }

            async fn group_members(&self, id: &str) -> $crate::Result<Vec<$crate::GroupMember>> {
                let what = format!("group {id:?}");
                let exists: Option<String> = sqlx::query_scalar($crate::directory::GROUP_EXISTS)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err(what.clone()))?;
                if exists.is_none() {
                    return Err($crate::StoreError::NotFound(what));
                }
                let rows: Vec<(String, String)> = sqlx::query_as($crate::directory::GROUP_MEMBERS)
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err(what))?;
                let mut members: Vec<$crate::GroupMember> =
                    rows.into_iter().map(|(user_id, user_name)| $crate::GroupMember { user_id, user_name }).collect();
                // Case-insensitively (as userName compares), then bytewise: the same on every backend and locale.
                members.sort_by_cached_key(|m| (m.user_name.to_lowercase(), m.user_name.clone(), m.user_id.clone()));
                Ok(members)
            }

            async fn group_names(&self) -> $crate::Result<Vec<String>> {
                sqlx::query_scalar($crate::directory::GROUP_NAMES)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("group names"))
            }
        }
    };
}
pub(crate) use directory_store;
