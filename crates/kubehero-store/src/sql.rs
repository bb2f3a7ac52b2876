//! What the two backends share: the SQL text (numbered `$N` parameters, which SQLite accepts too), the row
//! shapes, their conversion into the crate's models, and the mapping of `sqlx` errors to [`StoreError`].
//!
//! The trait implementations themselves are written once in [`crate::sql_store`] and instantiated per
//! backend: `sqlx` is generic over the database, but spelling out the bounds for every query costs more
//! than it saves, while a macro expands to plain concrete code.

use crate::{ApiKeyRecord, Cluster, Policy, PolicyState, PolicyTransition, Result, StoreError, StoredBinding};
use kubehero_core::{Binding, BindingSubject, Role, Scope};

// ---- clusters ---------------------------------------------------------------------------------------------

pub(crate) type ClusterRow = (String, Option<String>, String, String, i64);

pub(crate) const LIST_CLUSTERS: &str =
    "SELECT name, api_server_url, labels, created_by, created_at FROM clusters ORDER BY name";
pub(crate) const GET_CLUSTER: &str =
    "SELECT name, api_server_url, labels, created_by, created_at FROM clusters WHERE name = $1";
pub(crate) const INSERT_CLUSTER: &str =
    "INSERT INTO clusters (name, api_server_url, labels, created_by, created_at) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const DELETE_CLUSTER: &str = "DELETE FROM clusters WHERE name = $1";

pub(crate) fn cluster_from_row(row: ClusterRow) -> Result<Cluster> {
    let (name, api_server_url, labels, created_by, created_at) = row;
    let labels =
        serde_json::from_str(&labels).map_err(|e| StoreError::Corrupt(format!("labels of cluster {name:?}: {e}")))?;
    Ok(Cluster { name, api_server_url, labels, created_by, created_at })
}

// ---- policies ---------------------------------------------------------------------------------------------

pub(crate) type PolicyRow = (String, String, String, Option<String>, String, String, String, i64, i64, i64);

const POLICY_COLS: &str = "id, name, cluster, namespace, owner, spec, state, version, created_at, updated_at";

pub(crate) fn list_policies_sql(filtered: bool) -> String {
    let filter = if filtered { " WHERE cluster = $1" } else { "" };
    format!("SELECT {POLICY_COLS} FROM policies{filter} ORDER BY created_at, id")
}
pub(crate) fn get_policy_sql() -> String {
    format!("SELECT {POLICY_COLS} FROM policies WHERE id = $1")
}
pub(crate) const INSERT_POLICY: &str = "INSERT INTO policies \
     (id, name, cluster, namespace, owner, spec, state, version, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
/// `$1` name, `$2` spec, `$3` updated_at, `$4` id, `$5` expected version.
pub(crate) fn update_policy_sql() -> String {
    format!(
        "UPDATE policies SET name = $1, spec = $2, version = version + 1, updated_at = $3 \
         WHERE id = $4 AND version = $5 AND state = 'draft' RETURNING {POLICY_COLS}"
    )
}
/// `$1` new state, `$2` updated_at, `$3` id, `$4` expected state.
pub(crate) fn transition_policy_sql() -> String {
    format!(
        "UPDATE policies SET state = $1, version = version + 1, updated_at = $2 \
         WHERE id = $3 AND state = $4 RETURNING {POLICY_COLS}"
    )
}
pub(crate) const POLICY_STATE_VERSION: &str = "SELECT state, version FROM policies WHERE id = $1";
pub(crate) const POLICY_EXISTS: &str = "SELECT id FROM policies WHERE id = $1";

pub(crate) fn policy_from_row(row: PolicyRow) -> Result<Policy> {
    let (id, name, cluster, namespace, owner, spec, state, version, created_at, updated_at) = row;
    let spec = json(&spec, || format!("spec of policy {id:?}"))?;
    let state = state_from_str(&state, || format!("state of policy {id:?}"))?;
    Ok(Policy { id, name, cluster, namespace, owner, spec, state, version, created_at, updated_at })
}

// ---- policy history ---------------------------------------------------------------------------------------

pub(crate) type TransitionRow = (String, i64, String, Option<String>, String, i64, String, String, i64);

pub(crate) const HISTORY: &str = "SELECT policy_id, seq, action, from_state, to_state, version, spec, actor, at \
     FROM policy_transitions WHERE policy_id = $1 ORDER BY seq";
/// Numbers the row `max(seq) + 1` within the writing transaction. The caller has already changed the policy
/// row in the same transaction, so concurrent writers of one policy are serialised by that row's lock (and,
/// on SQLite, by the database write lock): sequence numbers have neither gaps nor duplicates.
/// `$1` policy_id, `$2` action, `$3` from_state, `$4` to_state, `$5` version, `$6` spec, `$7` actor, `$8` at.
pub(crate) const INSERT_TRANSITION: &str = "INSERT INTO policy_transitions \
     (policy_id, seq, action, from_state, to_state, version, spec, actor, at) \
     SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6, $7, $8 \
     FROM policy_transitions WHERE policy_id = $1";

pub(crate) fn transition_from_row(row: TransitionRow) -> Result<PolicyTransition> {
    let (policy_id, seq, action, from_state, to_state, version, spec, actor, at) = row;
    let what = || format!("transition {seq} of policy {policy_id:?}");
    let from_state = from_state.map(|s| state_from_str(&s, what)).transpose()?;
    let to_state = state_from_str(&to_state, what)?;
    let spec = json(&spec, what)?;
    Ok(PolicyTransition { policy_id, seq, action, from_state, to_state, version, spec, actor, at })
}

// ---- role bindings ----------------------------------------------------------------------------------------

pub(crate) type BindingRow = (String, String, String, String, Option<String>, Option<String>, String, i64, Option<i64>);

pub(crate) const LIST_BINDINGS: &str = "SELECT id, subject_kind, subject, role, cluster, namespace, created_by, \
     created_at, expires_at FROM role_bindings ORDER BY created_at, id";
pub(crate) const INSERT_BINDING: &str = "INSERT INTO role_bindings \
     (id, subject_kind, subject, role, cluster, namespace, created_by, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub(crate) const DELETE_BINDING: &str = "DELETE FROM role_bindings WHERE id = $1";

/// `(kind, name)` of a subject as stored.
pub(crate) fn subject_parts(subject: &BindingSubject) -> (&'static str, &str) {
    match subject {
        BindingSubject::Group(g) => ("group", g),
        BindingSubject::User(u) => ("user", u),
    }
}

pub(crate) fn binding_from_row(row: BindingRow) -> Result<StoredBinding> {
    let (id, kind, subject, role, cluster, namespace, created_by, created_at, expires_at) = row;
    let subject = match kind.as_str() {
        "group" => BindingSubject::Group(subject),
        "user" => BindingSubject::User(subject),
        other => return Err(StoreError::Corrupt(format!("binding {id:?} has subject kind {other:?}"))),
    };
    let role = role_from_str(&role, || format!("role of binding {id:?}"))?;
    let binding = Binding { subject, role, scope: Scope::from_parts(cluster, namespace) };
    Ok(StoredBinding { id, binding, created_by, created_at, expires_at })
}

// ---- API keys ---------------------------------------------------------------------------------------------

pub(crate) type ApiKeyRow = (String, String, String, String, String, i64, Option<i64>, Option<i64>);

const API_KEY_COLS: &str = "id, hash, name, role, owner, created_at, expires_at, revoked_at";

pub(crate) const INSERT_API_KEY: &str = "INSERT INTO api_keys \
     (id, hash, name, role, owner, created_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(crate) fn api_key_by_sql(column: &str) -> String {
    format!("SELECT {API_KEY_COLS} FROM api_keys WHERE {column} = $1")
}
pub(crate) fn list_api_keys_sql(filtered: bool) -> String {
    let filter = if filtered { " WHERE owner = $1" } else { "" };
    format!("SELECT {API_KEY_COLS} FROM api_keys{filter} ORDER BY created_at DESC, id DESC")
}
/// Keeps the first revocation time: revoking twice is not an error and does not move the timestamp.
/// `$1` at, `$2` id.
pub(crate) fn revoke_api_key_sql() -> String {
    format!("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING {API_KEY_COLS}")
}

pub(crate) fn api_key_from_row(row: ApiKeyRow) -> Result<ApiKeyRecord> {
    let (id, hash, name, role, owner, created_at, expires_at, revoked_at) = row;
    let role = role_from_str(&role, || format!("role of API key {id:?}"))?;
    Ok(ApiKeyRecord { id, hash, name, role, owner, created_at, expires_at, revoked_at })
}

// ---- settings ---------------------------------------------------------------------------------------------

pub(crate) const GET_SETTING: &str = "SELECT value FROM settings WHERE key = $1";
pub(crate) const LIST_SETTINGS: &str = "SELECT key, value FROM settings ORDER BY key";
pub(crate) const PUT_SETTING: &str = "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";

// ---- helpers ----------------------------------------------------------------------------------------------

pub(crate) fn json(text: &str, what: impl FnOnce() -> String) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{}: {e}", what())))
}

pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    // Serialising a `Value` or a string map cannot fail; keep the error path anyway rather than panic.
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

fn state_from_str(s: &str, what: impl FnOnce() -> String) -> Result<PolicyState> {
    PolicyState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("{}: unknown policy state {s:?}", what())))
}

fn role_from_str(s: &str, what: impl FnOnce() -> String) -> Result<Role> {
    s.parse().map_err(|e| StoreError::Corrupt(format!("{}: {e}", what())))
}

/// Maps a `sqlx` error for an operation on `what` (e.g. `cluster "prod"`).
///
/// Unique violations become `AlreadyExists(what)`; unreachable servers, pool timeouts and other refusals
/// become `Unavailable`; undecodable rows become `Corrupt`. Messages come from the driver and never contain
/// the connection URL.
pub(crate) fn map_err(backend: &str, what: String, e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match e {
        E::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists(what),
        // PostgreSQL: 22021 character_not_in_repertoire (a NUL in text), 22P05 untranslatable_character.
        E::Database(db) if matches!(db.code().as_deref(), Some("22021" | "22P05")) => StoreError::Invalid(what),
        E::Database(db) => StoreError::Unavailable(format!("{backend} refused the operation on {what}: {db}")),
        E::RowNotFound => StoreError::NotFound(what),
        E::Decode(_)
        | E::ColumnDecode { .. }
        | E::ColumnNotFound(_)
        | E::ColumnIndexOutOfBounds { .. }
        | E::TypeNotFound { .. } => StoreError::Corrupt(format!("{what}: {e}")),
        E::Configuration(_) => StoreError::Config(format!("{backend}: {e}")),
        // Io, Tls, Protocol, PoolTimedOut, PoolClosed, WorkerCrashed, and whatever sqlx adds later.
        other => StoreError::Unavailable(format!("{backend} ({what}): {other}")),
    }
}

/// Implements every store trait for `$store`, which must have a `pool: sqlx::Pool<_>` field and an inherent
/// `async fn begin(&self) -> Result<sqlx::Transaction<'static, _>>`.
/// Where a person's subject is stored: (table, column, which rows).
pub(crate) const SUBJECT_COLUMNS: [(&str, &str, &str); 3] = [
    ("api_keys", "owner", "1 = 1"),
    ("policies", "owner", "1 = 1"),
    ("role_bindings", "subject", "subject_kind = 'user'"),
];

macro_rules! sql_store {
    ($store:ty, $backend:literal) => {
        impl $store {
            const BACKEND: &'static str = $backend;

            fn err(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> $crate::StoreError {
                let what = what.into();
                move |e| $crate::sql::map_err($backend, what, e)
            }
        }

        #[async_trait::async_trait]
        impl $crate::ClusterStore for $store {
            async fn list_clusters(&self) -> $crate::Result<Vec<$crate::Cluster>> {
                let rows: Vec<$crate::sql::ClusterRow> = sqlx::query_as($crate::sql::LIST_CLUSTERS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("clusters"))?;
                rows.into_iter().map($crate::sql::cluster_from_row).collect()
            }

            async fn get_cluster(&self, name: &str) -> $crate::Result<$crate::Cluster> {
                let row: $crate::sql::ClusterRow = sqlx::query_as($crate::sql::GET_CLUSTER)
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(Self::err(format!("cluster {name:?}")))?;
                $crate::sql::cluster_from_row(row)
            }

            async fn create_cluster(&self, c: &$crate::Cluster) -> $crate::Result<()> {
                $crate::ChangeStore::apply(self, $crate::Change::CreateCluster(c), None).await.map(drop)
            }

            async fn delete_cluster(&self, name: &str, at: i64) -> $crate::Result<()> {
                $crate::ChangeStore::apply(self, $crate::Change::DeleteCluster { name, at }, None).await.map(drop)
            }
        }

        #[async_trait::async_trait]
        impl $crate::PolicyStore for $store {
            async fn list_policies(&self, cluster: Option<&str>) -> $crate::Result<Vec<$crate::Policy>> {
                let sql = $crate::sql::list_policies_sql(cluster.is_some());
                let mut q = sqlx::query_as::<_, $crate::sql::PolicyRow>(&sql);
                if let Some(c) = cluster {
                    q = q.bind(c);
                }
                let rows = q.fetch_all(&self.pool).await.map_err(Self::err("policies"))?;
                rows.into_iter().map($crate::sql::policy_from_row).collect()
            }

            async fn get_policy(&self, id: &str) -> $crate::Result<$crate::Policy> {
                let row: $crate::sql::PolicyRow = sqlx::query_as(&$crate::sql::get_policy_sql())
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(Self::err(format!("policy {id:?}")))?;
                $crate::sql::policy_from_row(row)
            }

            async fn create_policy(&self, p: &$crate::Policy) -> $crate::Result<()> {
                $crate::ChangeStore::apply(self, $crate::Change::CreatePolicy(p), None).await.map(drop)
            }

            async fn update_policy(
                &self,
                id: &str,
                expected_version: i64,
                name: &str,
                spec: &serde_json::Value,
                actor: &str,
                at: i64,
            ) -> $crate::Result<$crate::Policy> {
                let change = $crate::Change::UpdatePolicy { id, expected_version, name, spec, actor, at };
                $crate::changed_policy($crate::ChangeStore::apply(self, change, None).await?.0)
            }

            async fn transition_policy(
                &self,
                id: &str,
                from: $crate::PolicyState,
                to: $crate::PolicyState,
                action: &str,
                actor: &str,
                at: i64,
            ) -> $crate::Result<$crate::Policy> {
                let change = $crate::Change::TransitionPolicy { id, from, to, action, actor, at };
                $crate::changed_policy($crate::ChangeStore::apply(self, change, None).await?.0)
            }

            async fn policy_history(&self, id: &str) -> $crate::Result<Vec<$crate::PolicyTransition>> {
                let what = format!("policy {id:?}");
                let rows: Vec<$crate::sql::TransitionRow> = sqlx::query_as($crate::sql::HISTORY)
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err(what.clone()))?;
                if rows.is_empty() {
                    // Every policy has at least its `create` row; tell "no history" from "no policy".
                    let exists: Option<(String,)> = sqlx::query_as($crate::sql::POLICY_EXISTS)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(Self::err(what.clone()))?;
                    if exists.is_none() {
                        return Err($crate::StoreError::NotFound(what));
                    }
                }
                rows.into_iter().map($crate::sql::transition_from_row).collect()
            }
        }

        #[async_trait::async_trait]
        impl $crate::BindingStore for $store {
            async fn list_bindings(&self) -> $crate::Result<Vec<$crate::StoredBinding>> {
                let rows: Vec<$crate::sql::BindingRow> = sqlx::query_as($crate::sql::LIST_BINDINGS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("role bindings"))?;
                rows.into_iter().map($crate::sql::binding_from_row).collect()
            }

            async fn create_binding(&self, b: &$crate::StoredBinding) -> $crate::Result<()> {
                $crate::ChangeStore::apply(self, $crate::Change::CreateBinding(b), None).await.map(drop)
            }

            async fn delete_binding(&self, id: &str) -> $crate::Result<()> {
                $crate::ChangeStore::apply(self, $crate::Change::DeleteBinding(id), None).await.map(drop)
            }
        }

        #[async_trait::async_trait]
        impl $crate::ApiKeyStore for $store {
            async fn create_api_key(&self, k: &$crate::ApiKeyRecord) -> $crate::Result<()> {
                $crate::ChangeStore::apply(self, $crate::Change::CreateApiKey(k), None).await.map(drop)
            }

            async fn revoke_api_key(&self, id: &str, at: i64) -> $crate::Result<$crate::ApiKeyRecord> {
                $crate::changed_api_key(
                    $crate::ChangeStore::apply(self, $crate::Change::RevokeApiKey { id, at }, None).await?.0,
                )
            }

            async fn find_api_key_by_hash(&self, hash: &str) -> $crate::Result<Option<$crate::ApiKeyRecord>> {
                let row: Option<$crate::sql::ApiKeyRow> = sqlx::query_as(&$crate::sql::api_key_by_sql("hash"))
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err("API key"))?;
                row.map($crate::sql::api_key_from_row).transpose()
            }

            async fn list_api_keys(&self, owner: Option<&str>) -> $crate::Result<Vec<$crate::ApiKeyRecord>> {
                let sql = $crate::sql::list_api_keys_sql(owner.is_some());
                let mut q = sqlx::query_as::<_, $crate::sql::ApiKeyRow>(&sql);
                if let Some(o) = owner {
                    q = q.bind(o);
                }
                let rows = q.fetch_all(&self.pool).await.map_err(Self::err("API keys"))?;
                rows.into_iter().map($crate::sql::api_key_from_row).collect()
            }

            async fn get_api_key(&self, id: &str) -> $crate::Result<$crate::ApiKeyRecord> {
                let row: $crate::sql::ApiKeyRow = sqlx::query_as(&$crate::sql::api_key_by_sql("id"))
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(Self::err(format!("API key {id:?}")))?;
                $crate::sql::api_key_from_row(row)
            }
        }

        impl $store {
            /// The legacy person subjects of each (table, column, condition) [`crate::sql::SUBJECT_COLUMNS`] names,
            /// with how many rows hold each.
            async fn legacy_subjects(
                &self,
            ) -> $crate::Result<Vec<(&'static str, &'static str, &'static str, String, i64)>> {
                let mut out = Vec::new();
                for (table, col, cond) in $crate::sql::SUBJECT_COLUMNS {
                    let sql = format!("SELECT {col}, COUNT(*) FROM {table} WHERE {cond} GROUP BY {col}");
                    let values: Vec<(String, i64)> =
                        sqlx::query_as(&sql).fetch_all(&self.pool).await.map_err(Self::err(table))?;
                    out.extend(
                        values
                            .into_iter()
                            .filter(|(v, _)| $crate::is_legacy_person_subject(v))
                            .map(|(v, n)| (table, col, cond, v, n)),
                    );
                }
                Ok(out)
            }
        }

        #[async_trait::async_trait]
        impl $crate::SubjectStore for $store {
            async fn qualify_legacy_subjects(&self, issuer: &str) -> $crate::Result<u64> {
                let mut changed = 0;
                for (table, col, cond, v, _) in self.legacy_subjects().await? {
                    let sql = format!("UPDATE {table} SET {col} = $1 WHERE {col} = $2 AND {cond}");
                    let done = sqlx::query(&sql)
                        .bind(kubehero_core::subject_key(Some(issuer), &v))
                        .bind(&v)
                        .execute(&self.pool)
                        .await
                        .map_err(Self::err(table))?;
                    changed += done.rows_affected();
                }
                Ok(changed)
            }

            async fn count_legacy_subjects(&self) -> $crate::Result<u64> {
                Ok(self.legacy_subjects().await?.iter().map(|(.., n)| *n as u64).sum())
            }
        }

        #[async_trait::async_trait]
        impl $crate::SettingsStore for $store {
            async fn get_setting(&self, key: &str) -> $crate::Result<Option<serde_json::Value>> {
                let what = format!("setting {key:?}");
                let row: Option<(String,)> = sqlx::query_as($crate::sql::GET_SETTING)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err(what.clone()))?;
                row.map(|(v,)| $crate::sql::json(&v, || what)).transpose()
            }

            async fn list_settings(&self) -> $crate::Result<Vec<(String, serde_json::Value)>> {
                let rows: Vec<(String, String)> = sqlx::query_as($crate::sql::LIST_SETTINGS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("settings"))?;
                rows.into_iter()
                    .map(|(k, v)| {
                        let value = $crate::sql::json(&v, || format!("setting {k:?}"))?;
                        Ok((k, value))
                    })
                    .collect()
            }

            async fn put_setting(&self, key: &str, value: &serde_json::Value, at: i64) -> $crate::Result<()> {
                $crate::ChangeStore::apply(self, $crate::Change::PutSetting { key, value, at }, None).await.map(drop)
            }
        }

        #[async_trait::async_trait]
        impl $crate::Store for $store {
            async fn ping(&self) -> $crate::Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await.map_err(Self::err("ping"))?;
                self.check_after_commit()
            }

            fn backend(&self) -> &'static str {
                $backend
            }
        }
    };
}

pub(crate) use sql_store;
