//! Resolving credentials into principals, and the directory's admission of every person and key owner.

use crate::cache;
use crate::credential::{CredentialKind, SESSION_IDLE_SECS, SESSION_TOUCH_SECS};
use crate::directory::{merge_groups, Standing};
use crate::grants::Facts;
use crate::{Identity, IdentityError};
use kubehero_authn::{sha256_hex, AuthnError, VerifiedToken};
use kubehero_core::{AuthMethod, Principal, PrincipalKind, Role};
use kubehero_store::{SessionKind, SessionRecord, StoreError};
use std::sync::Arc;
use std::time::Instant;

pub(crate) fn refused(message: &str) -> IdentityError {
    IdentityError::Unauthenticated(message.to_string())
}

impl Identity {
    /// The principal behind a bearer token: a CLI token, a managed or static API key, or an IdP JWT (routed by
    /// its unverified `iss` to exactly one configured issuer). People and key owners then pass
    /// [`Identity::admit`].
    pub async fn bearer(&self, token: &str) -> Result<Principal, IdentityError> {
        let kind = CredentialKind::of_bearer(token);
        let r = match kind {
            CredentialKind::CliToken => self.cli_token(token).await.map(|(p, _)| p),
            CredentialKind::ClusterToken => Err(refused(
                "invalid bearer token: a per-cluster token (khx_) works only at /k8s/clusters/<its cluster>",
            )),
            CredentialKind::ApiKey if token.starts_with(crate::credential::API_KEY_PREFIX) => {
                match self.managed_api_key(token).await {
                    Ok(p) => self.admit(p).await,
                    Err(e) => Err(e),
                }
            }
            _ => match self.api_keys.lookup(token) {
                Some(m) => {
                    self.observer.authentication("api_key", "ok");
                    return Ok(self.key_principal(m.id, m.role, None, None));
                }
                None => return self.jwt(token).await,
            },
        };
        self.observer.authentication(kind.as_str(), if r.is_ok() { "ok" } else { "rejected" });
        r
    }

    /// No credential: the anonymous viewer in open mode, refused with `KUBEHERO_REQUIRE_AUTH=true`.
    pub fn anonymous(&self) -> Result<Principal, IdentityError> {
        if self.require_auth {
            self.observer.authentication("none", "missing_credential");
            return Err(IdentityError::Required);
        }
        self.observer.authentication("anonymous", "ok");
        Ok(Principal::anonymous())
    }

    async fn jwt(&self, token: &str) -> Result<Principal, IdentityError> {
        match self.verified(token).await {
            Ok(v) => {
                let p = self.admit(self.person_principal(&v)).await?;
                self.observer.authentication("jwt", "ok");
                Ok(p)
            }
            Err(e) => {
                self.observer.authentication("jwt", e.reason());
                tracing::info!(reason = e.reason(), "bearer token rejected");
                Err(IdentityError::Unauthenticated(format!("invalid bearer token: {e}")))
            }
        }
    }

    async fn verified(&self, token: &str) -> Result<Arc<VerifiedToken>, AuthnError> {
        let now = self.clock.now();
        if let Some(v) = self.token_cache.get(token, now) {
            return Ok(v);
        }
        let started = Instant::now();
        let v = self.verifier.verify(token, now).await;
        self.observer.verification(started.elapsed().as_secs_f64());
        let v = Arc::new(v?);
        self.token_cache.insert(token, v.clone());
        Ok(v)
    }

    fn person_principal(&self, v: &VerifiedToken) -> Principal {
        let grants = self.bindings.grants_for(&Facts {
            issuer: Some(&v.issuer),
            sub: &v.sub,
            email: v.email.as_deref(),
            groups: &v.groups,
            legacy_roles: &v.legacy_roles,
        });
        Principal {
            kind: PrincipalKind::Person,
            sub: v.sub.clone(),
            email: v.email.clone(),
            groups: v.groups.clone(),
            issuer: Some(v.issuer.clone()),
            auth_method: AuthMethod::Jwt,
            owner: None,
            grants,
            expires_at: Some(v.exp),
        }
    }

    fn key_principal(&self, id: String, role: Role, owner: Option<String>, expires_at: Option<i64>) -> Principal {
        let grants = self.bindings.grants_for_key(&id, role);
        Principal {
            kind: PrincipalKind::ApiKey,
            sub: id,
            email: None,
            groups: Vec::new(),
            issuer: None,
            auth_method: AuthMethod::ApiKey,
            owner,
            grants,
            expires_at,
        }
    }

    /// A `khk_…` key created through the API: looked up by its SHA-256 on every request, so revocation takes
    /// effect at once on every replica.
    async fn managed_api_key(&self, token: &str) -> Result<Principal, IdentityError> {
        let rec = self.store.find_api_key_by_hash(&sha256_hex(token)).await?;
        let now = self.clock.now();
        let Some(rec) = rec else {
            return Err(refused("invalid bearer token: unknown API key"));
        };
        if rec.revoked_at.is_some() {
            return Err(refused("invalid bearer token: API key revoked"));
        }
        if rec.expires_at.is_some_and(|e| now >= e) {
            return Err(refused("invalid bearer token: API key expired"));
        }
        Ok(self.key_principal(rec.id, rec.role, Some(rec.owner), rec.expires_at))
    }

    /// The person behind a dashboard session secret, checking revocation, idle expiry and the absolute cap,
    /// and sliding the idle expiry (at most one store write a minute). The caller checks CSRF on writes.
    pub async fn session(&self, secret: &str) -> Result<(Principal, Arc<SessionRecord>), IdentityError> {
        let r = self.session_inner(secret).await;
        self.observer.authentication("session", if r.is_ok() { "ok" } else { "rejected" });
        r
    }

    async fn session_inner(&self, secret: &str) -> Result<(Principal, Arc<SessionRecord>), IdentityError> {
        let now = self.clock.now();
        let invalid = || refused("session expired or signed out; sign in again at /login");
        let key = cache::key(secret);
        let mut session = self.lookup(&key, secret).await?.ok_or_else(invalid)?;
        if session.kind != SessionKind::Session
            || session.revoked_at.is_some()
            || now >= session.expires_at
            || now >= session.absolute_expires_at
        {
            return Err(invalid());
        }
        if now - session.last_seen_at >= SESSION_TOUCH_SECS {
            let expires = (now + SESSION_IDLE_SECS).min(session.absolute_expires_at);
            session = self.renew(&key, &session, now, expires).await?;
        }
        let principal = self.admit(self.person(&session, AuthMethod::Session)).await?;
        Ok((principal, session))
    }

    /// A CLI token (`khc_…`): looked up by its SHA-256, so rotation and revocation apply at once.
    /// `last_seen_at` is written at most once a minute.
    pub async fn cli_token(&self, token: &str) -> Result<(Principal, Arc<SessionRecord>), IdentityError> {
        let now = self.clock.now();
        let invalid = || refused("invalid bearer token: CLI token unknown, revoked or expired");
        let key = cache::key(token);
        let mut t = self.lookup(&key, token).await?.ok_or_else(invalid)?;
        if t.kind != SessionKind::CliToken || t.revoked_at.is_some() || now >= t.expires_at {
            return Err(invalid());
        }
        if now - t.last_seen_at >= SESSION_TOUCH_SECS {
            t = self.renew(&key, &t, now, t.expires_at).await?;
        }
        let principal = self.admit(self.person(&t, AuthMethod::CliToken)).await?;
        Ok((principal, t))
    }

    /// The person a session or CLI token belongs to, with the grants their sign-in groups hold now.
    pub(crate) fn person(&self, r: &SessionRecord, method: AuthMethod) -> Principal {
        let grants = self.bindings.grants_for(&Facts {
            issuer: r.issuer.as_deref(),
            sub: &r.sub,
            email: r.email.as_deref(),
            groups: &r.groups,
            legacy_roles: &[],
        });
        Principal {
            kind: PrincipalKind::Person,
            sub: r.sub.clone(),
            email: r.email.clone(),
            groups: r.groups.clone(),
            issuer: r.issuer.clone(),
            auth_method: method,
            owner: None,
            grants,
            expires_at: Some(r.expires_at),
        }
    }

    /// A session or CLI token by its secret (and that secret's cache key): from the short-lived cache, else
    /// from the store.
    async fn lookup(&self, key: &[u8; 32], secret: &str) -> Result<Option<Arc<SessionRecord>>, IdentityError> {
        self.lookup_digest(key, &sha256_hex(secret)).await
    }

    /// [`Identity::lookup`] by the secret's digest (as bytes and as hex), when only the digest is known (a
    /// per-cluster token names its CLI login by it).
    pub(crate) async fn lookup_digest(
        &self,
        key: &[u8; 32],
        hex: &str,
    ) -> Result<Option<Arc<SessionRecord>>, IdentityError> {
        if let Some(r) = self.credentials.get(key) {
            return Ok(Some(r));
        }
        let found = self.store.find_session_by_hash(hex).await?.map(Arc::new);
        if let Some(r) = &found {
            self.credentials.put(*key, Arc::clone(r));
        }
        Ok(found)
    }

    /// Slides a session or CLI token: one store write, counted.
    async fn renew(
        &self,
        key: &[u8; 32],
        r: &SessionRecord,
        now: i64,
        expires_at: i64,
    ) -> Result<Arc<SessionRecord>, IdentityError> {
        self.store.touch_session(&r.id, now, expires_at).await?;
        self.observer.session_renewal();
        let renewed = Arc::new(SessionRecord { last_seen_at: now, expires_at, ..r.clone() });
        self.credentials.touched(key, Arc::clone(&renewed));
        Ok(renewed)
    }

    /// Lets an authenticated principal through the directory: refuses deprovisioned people (and keys they
    /// own) and merges a provisioned person's SCIM groups into their groups and grants.
    pub async fn admit(&self, mut p: Principal) -> Result<Principal, IdentityError> {
        let dir = &self.directory;
        if !dir.enabled() {
            return Ok(p);
        }
        let standing = match p.kind {
            PrincipalKind::Person => dir.standing(p.issuer.as_deref(), &p.sub, p.email.as_deref()).await?,
            PrincipalKind::ApiKey => match &p.owner {
                Some(owner) => {
                    let (issuer, sub) = kubehero_core::split_subject_key(owner);
                    dir.standing(issuer, sub, None).await?
                }
                None => return Ok(p),
            },
            _ => return Ok(p),
        };
        match &*standing {
            Standing::Unknown => Ok(p),
            Standing::Inactive | Standing::Deleted if p.kind == PrincipalKind::ApiKey => {
                self.observer.authentication("api_key", "owner_deprovisioned");
                Err(refused("invalid bearer token: the API key's owner was deprovisioned by the IdP"))
            }
            Standing::Inactive | Standing::Deleted => {
                self.observer.authentication(p.auth_method.as_str(), "deprovisioned");
                Err(refused("this person was deprovisioned by the identity provider"))
            }
            Standing::Active { groups } if p.kind == PrincipalKind::Person => {
                let managed = dir.managed_groups().await?;
                let merged = merge_groups(&p.groups, groups, &managed);
                if merged != p.groups {
                    p.grants = self.bindings.grants_for(&Facts {
                        issuer: p.issuer.as_deref(),
                        sub: &p.sub,
                        email: p.email.as_deref(),
                        groups: &merged,
                        legacy_roles: &[],
                    });
                    p.groups = merged;
                }
                Ok(p)
            }
            Standing::Active { .. } => Ok(p),
        }
    }

    /// Records a person's subject key as the subject of the directory entry their email or user name found,
    /// when that entry has none yet: API keys name their owner by subject key only, and must find them later.
    pub async fn link_subject(&self, p: &Principal) -> Result<(), StoreError> {
        if !self.directory.enabled() {
            return Ok(());
        }
        let found = self.directory.find(p.issuer.as_deref(), &p.sub, p.email.as_deref()).await?;
        let live: Vec<_> = found.into_iter().filter(|m| !m.deleted).collect();
        let [only] = live.as_slice() else {
            return Ok(());
        };
        let user = self.store.get_user(&only.user_id).await?;
        if user.subject.is_some() {
            return Ok(());
        }
        let linked = kubehero_store::DirectoryUser { subject: Some(p.subject_key()), ..user.clone() };
        match self.store.update_user(&linked, Some(user.version)).await {
            // Changed meanwhile: SCIM's write wins; the link is made on the next key.
            Ok(_) | Err(StoreError::Conflict(_)) => {
                self.directory.changed();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the directory entry of a person who signs in before the IdP provisioned them (just-in-time),
    /// so that SCIM can adopt them later. The caller has found the identity unknown to the directory; does
    /// nothing when SCIM is off.
    pub async fn provision_at_sign_in(
        &self,
        issuer: &str,
        sub: &str,
        email: Option<&str>,
    ) -> Result<Option<kubehero_store::DirectoryUser>, IdentityError> {
        if !self.directory.enabled() {
            return Ok(None);
        }
        let now = self.clock.now();
        let user_name = email.unwrap_or(sub).to_string();
        let mut resource = serde_json::json!({
            "schemas": [kubehero_scim::schema::USER_SCHEMA],
            "userName": user_name,
            "active": true,
        });
        if let Some(e) = email {
            resource["emails"] = serde_json::json!([{ "value": e, "primary": true }]);
        }
        let user = kubehero_store::DirectoryUser {
            id: crate::credential::random_uuid()?,
            user_name,
            external_id: None,
            active: true,
            subject: Some(kubehero_core::subject_key(Some(issuer), sub)),
            emails: email.map(|e| vec![e.to_string()]).unwrap_or_default(),
            resource,
            origin: kubehero_store::UserOrigin::Jit,
            version: 1,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        // The entry and its audit row (`directory.jit_provision`, by the person) commit together.
        let row = kubehero_core::AuditEvent {
            event_id: self.ids.next_id(),
            time_ms: self.clock.now_ms(),
            actor: kubehero_core::AuditActor {
                sub: sub.to_string(),
                issuer: Some(issuer.to_string()),
                email: email.map(str::to_string),
                kind: "person".into(),
                auth_method: "jit".into(),
                ..Default::default()
            },
            action: "directory.jit_provision".into(),
            target: kubehero_core::AuditTarget {
                kind: Some("scim_user".into()),
                id: Some(user.id.clone()),
                ..Default::default()
            },
            result: kubehero_core::AuditResult::ok(200),
            request_id: self.ids.next_id(),
            source: None,
            user_agent: None,
        };
        match self.apply(kubehero_store::Change::CreateUsers(std::slice::from_ref(&user)), row).await {
            Ok(_) => {
                self.directory.changed();
                Ok(Some(user))
            }
            // Signed in twice at once, or the name is taken by someone the identity did not match: keep theirs.
            Err(StoreError::AlreadyExists(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
