//! SQL of device authorizations (`kubehero login`), shared by both backends through [`device_store!`].
//!
//! Every state change is one conditional statement, so concurrent callers cannot both win:
//! - deciding is `UPDATE … WHERE user_code = $ AND status = 'pending' AND expires_at > $now RETURNING …`; when
//!   it matches nothing, a second read tells `NotFound` from `Conflict` (no longer pending, or expired);
//! - consuming is `UPDATE … SET status = 'consumed' WHERE device_hash = $ AND status = 'approved'`: of several
//!   concurrent pollers exactly one sees a changed row.
//!
//! A poll reads the row and records `last_poll_at` in one transaction, the read locking the row (`FOR UPDATE`
//! on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already holds the database write lock), so of two concurrent
//! polls the second sees the first one's time.
//!
//! Errors never name the device hash: it identifies the device code, a secret.

use crate::{DeviceAuthorization, DeviceStatus, Result, StoreError};

pub(crate) type DeviceRow =
    (String, String, String, Option<String>, Option<String>, String, Option<String>, i64, i64, Option<i64>);

const DEVICE_COLS: &str =
    "device_hash, user_code, status, sub, email, groups, issuer, created_at, expires_at, last_poll_at";

pub(crate) const INSERT_DEVICE: &str = "INSERT INTO device_authorizations \
     (device_hash, user_code, status, sub, email, groups, issuer, created_at, expires_at, last_poll_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
pub(crate) fn device_by_user_code_sql() -> String {
    format!("SELECT {DEVICE_COLS} FROM device_authorizations WHERE user_code = $1")
}
/// `lock` is `" FOR UPDATE"` where the backend supports it, else empty.
pub(crate) fn device_by_hash_sql(lock: &str) -> String {
    format!("SELECT {DEVICE_COLS} FROM device_authorizations WHERE device_hash = $1{lock}")
}
/// Approving records who: `$1` status, `$2` user_code, `$3` now, `$4` sub, `$5` email, `$6` groups, `$7` issuer.
/// Denying sets only the status (`$1`–`$3`).
pub(crate) fn decide_device_sql(approve: bool) -> String {
    let who = if approve { ", sub = $4, email = $5, groups = $6, issuer = $7" } else { "" };
    format!(
        "UPDATE device_authorizations SET status = $1{who} \
         WHERE user_code = $2 AND status = 'pending' AND expires_at > $3 RETURNING {DEVICE_COLS}"
    )
}
pub(crate) const DEVICE_STATE: &str = "SELECT status, expires_at FROM device_authorizations WHERE user_code = $1";
/// `$1` now, `$2` device_hash.
pub(crate) const PURGE_EXPIRED_DEVICES: &str = "DELETE FROM device_authorizations WHERE expires_at <= $1";
pub(crate) const COUNT_LIVE_DEVICES: &str = "SELECT COUNT(*) FROM device_authorizations WHERE expires_at > $1";
pub(crate) const POLL_DEVICE: &str = "UPDATE device_authorizations SET last_poll_at = $1 WHERE device_hash = $2";
pub(crate) const CONSUME_DEVICE: &str =
    "UPDATE device_authorizations SET status = 'consumed' WHERE device_hash = $1 AND status = 'approved'";

fn status_from_str(s: &str, user_code: &str) -> Result<DeviceStatus> {
    DeviceStatus::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("device authorization {user_code:?} has status {s:?}")))
}

pub(crate) fn device_from_row(row: DeviceRow) -> Result<DeviceAuthorization> {
    let (device_hash, user_code, status, sub, email, groups, issuer, created_at, expires_at, last_poll_at) = row;
    let status = status_from_str(&status, &user_code)?;
    let groups: Vec<String> = serde_json::from_str(&groups)
        .map_err(|e| StoreError::Corrupt(format!("groups of device authorization {user_code:?}: {e}")))?;
    Ok(DeviceAuthorization {
        device_hash,
        user_code,
        status,
        sub,
        email,
        groups,
        issuer,
        created_at,
        expires_at,
        last_poll_at,
    })
}

/// Why a decision matched no row: `NotFound`, or `Conflict` when the authorization is no longer pending or
/// has expired at `now`. `state` is the result of [`DEVICE_STATE`].
pub(crate) fn undecidable(user_code: &str, state: Option<(String, i64)>, now: i64) -> StoreError {
    let what = format!("device authorization {user_code:?}");
    match state {
        None => StoreError::NotFound(what),
        Some((status, _)) if status != DeviceStatus::Pending.as_str() => {
            StoreError::Conflict(format!("{what} is no longer pending (it is {status})"))
        }
        Some((_, expires_at)) if expires_at <= now => StoreError::Conflict(format!("{what} has expired")),
        // Pending and unexpired now: it changed between the two statements (cannot stay pending, but say so).
        Some(_) => StoreError::Conflict(format!("{what} changed concurrently; try again")),
    }
}

/// Implements [`crate::DeviceStore`] for a store with a `pool` field, `begin()` and `err()` (from
/// `sql_store!`). `$lock` is appended to the read that precedes a poll's write: `" FOR UPDATE"` or `""`.
macro_rules! device_store {
    ($store:ty, $conn:ty, $lock:expr) => {
        impl $store {
            /// Approves or denies a pending, unexpired authorization (see [`crate::DeviceStore::decide_device`]).
            async fn decide_device_on(
                conn: &mut $conn,
                user_code: &str,
                approve: bool,
                who: Option<&$crate::SessionRecord>,
                now: i64,
            ) -> $crate::Result<$crate::DeviceAuthorization> {
                let what = format!("device authorization {user_code:?}");
                let status = if approve { $crate::DeviceStatus::Approved } else { $crate::DeviceStatus::Denied };
                let sql = $crate::device::decide_device_sql(approve);
                let mut q = sqlx::query_as::<_, $crate::device::DeviceRow>(&sql)
                    .bind(status.as_str())
                    .bind(user_code)
                    .bind(now);
                if approve {
                    let groups = who.map_or(Ok("[]".to_string()), |w| $crate::sql::to_json(&w.groups))?;
                    q = q
                        .bind(who.map(|w| w.sub.clone()))
                        .bind(who.and_then(|w| w.email.clone()))
                        .bind(groups)
                        .bind(who.and_then(|w| w.issuer.clone()));
                }
                let row = q.fetch_optional(&mut *conn).await.map_err(Self::err(what.clone()))?;
                if let Some(row) = row {
                    return $crate::device::device_from_row(row);
                }
                let state: Option<(String, i64)> = sqlx::query_as($crate::device::DEVICE_STATE)
                    .bind(user_code)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Self::err(what))?;
                Err($crate::device::undecidable(user_code, state, now))
            }
        }

        #[async_trait::async_trait]
        impl $crate::DeviceStore for $store {
            async fn purge_expired_devices(&self, now: i64) -> $crate::Result<u64> {
                let done = sqlx::query($crate::device::PURGE_EXPIRED_DEVICES)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(Self::err("expired device authorizations"))?;
                Ok(done.rows_affected())
            }

            async fn count_live_devices(&self, now: i64) -> $crate::Result<i64> {
                sqlx::query_scalar($crate::device::COUNT_LIVE_DEVICES)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(Self::err("device authorizations"))
            }

            async fn create_device(&self, d: &$crate::DeviceAuthorization) -> $crate::Result<()> {
                sqlx::query($crate::device::INSERT_DEVICE)
                    .bind(&d.device_hash)
                    .bind(&d.user_code)
                    .bind(d.status.as_str())
                    .bind(&d.sub)
                    .bind(&d.email)
                    .bind($crate::sql::to_json(&d.groups)?)
                    .bind(&d.issuer)
                    .bind(d.created_at)
                    .bind(d.expires_at)
                    .bind(d.last_poll_at)
                    .execute(&self.pool)
                    .await
                    // Never name the device hash: it identifies the secret.
                    .map_err(Self::err(format!("device authorization {:?}", d.user_code)))?;
                Ok(())
            }

            async fn find_device_by_user_code(
                &self,
                user_code: &str,
            ) -> $crate::Result<Option<$crate::DeviceAuthorization>> {
                let row: Option<$crate::device::DeviceRow> = sqlx::query_as(&$crate::device::device_by_user_code_sql())
                    .bind(user_code)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err(format!("device authorization {user_code:?}")))?;
                row.map($crate::device::device_from_row).transpose()
            }

            async fn decide_device(
                &self,
                user_code: &str,
                approve: bool,
                who: Option<&$crate::SessionRecord>,
                now: i64,
            ) -> $crate::Result<$crate::DeviceAuthorization> {
                let change = $crate::Change::DecideDevice { user_code, approve, who, now };
                $crate::changed_device($crate::ChangeStore::apply(self, change, None).await?.0)
            }

            async fn poll_device(
                &self,
                device_hash: &str,
                now: i64,
            ) -> $crate::Result<Option<$crate::DeviceAuthorization>> {
                let what = "device authorization";
                let mut tx = self.begin().await?;
                let row: Option<$crate::device::DeviceRow> = sqlx::query_as(&$crate::device::device_by_hash_sql($lock))
                    .bind(device_hash)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Self::err(what))?;
                let Some(row) = row else {
                    tx.rollback().await.map_err(Self::err(what))?;
                    return Ok(None);
                };
                sqlx::query($crate::device::POLL_DEVICE)
                    .bind(now)
                    .bind(device_hash)
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::err(what))?;
                tx.commit().await.map_err(Self::err(what))?;
                $crate::device::device_from_row(row).map(Some)
            }

            async fn consume_device(&self, device_hash: &str) -> $crate::Result<bool> {
                let done = sqlx::query($crate::device::CONSUME_DEVICE)
                    .bind(device_hash)
                    .execute(&self.pool)
                    .await
                    .map_err(Self::err("device authorization"))?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use device_store;
