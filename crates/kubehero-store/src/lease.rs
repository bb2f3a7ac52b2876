//! Leases: which replica does the work that must happen once. Taking or renewing one is a single upsert that
//! succeeds only for its holder or once the lease has expired, so two replicas never both hold it (as long as
//! their clocks agree to within the margin between renewal and expiry).

use crate::Result;

/// Taking, renewing and giving up leases.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes or renews lease `name` for `holder` until `expires_ms`, if it is free, expired at `now_ms`, or
    /// already `holder`'s. Gives back whether `holder` holds it now.
    async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, expires_ms: i64) -> Result<bool>;
    /// Gives lease `name` up, if `holder` holds it (a clean shutdown: another replica takes over at once).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
}

/// `$1` name, `$2` holder, `$3` expires, `$4` now.
pub(crate) const ACQUIRE: &str = "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
     WHERE leases.holder = excluded.holder OR leases.expires_ms < $4";
pub(crate) const RELEASE: &str = "DELETE FROM leases WHERE name = $1 AND holder = $2";

/// Implements [`LeaseStore`] for a store with a `pool` field and `err()` (from `sql_store!`).
macro_rules! lease_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::lease::LeaseStore for $store {
            async fn acquire_lease(
                &self,
                name: &str,
                holder: &str,
                now_ms: i64,
                expires_ms: i64,
            ) -> $crate::Result<bool> {
                let done = sqlx::query($crate::lease::ACQUIRE)
                    .bind(name)
                    .bind(holder)
                    .bind(expires_ms)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(Self::err(format!("lease {name:?}")))?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_lease(&self, name: &str, holder: &str) -> $crate::Result<()> {
                sqlx::query($crate::lease::RELEASE)
                    .bind(name)
                    .bind(holder)
                    .execute(&self.pool)
                    .await
                    .map_err(Self::err(format!("lease {name:?}")))?;
                Ok(())
            }
        }
    };
}
pub(crate) use lease_store;
