//! What a directory change does to the credentials people hold, and the audit rows that say so.
//!
//! - deactivation (`active=false`) suspends: sessions, CLI tokens, owned API keys and the IdP's tokens for the
//!   person are refused by [`Identity::admit`] from now on; nothing is destroyed, so re-activation restores
//!   them. One `credential.suspend` row per credential (and one for the IdP's tokens);
//! - re-activation writes the matching `credential.restore` rows;
//! - deletion revokes sessions, CLI tokens and owned API keys for good (`credential.revoke` rows) and the
//!   tombstone keeps refusing the IdP's tokens;
//! - removal from a group writes one `person.group_removed` row per person: roles that group gave are gone on
//!   their next request.
//!
//! A person's credentials are found by indexed queries (their subjects and sign-in emails), never by reading
//! every session. The rows are durable before the caller answers, like the call's own row.

use crate::{Identity, IdentityError};
use kubehero_core::{AuditActor, AuditEvent, AuditResult, AuditTarget, Principal};
use kubehero_store::{DirectoryGroup, DirectoryUser, SessionKind};
use std::collections::BTreeSet;

/// A credential a person holds: its kind and public id.
struct Held {
    kind: &'static str,
    id: String,
}

impl Identity {
    /// Every subject key the person's credentials may carry as their subject or owner: the linked subject key;
    /// the external id, the user name and the email addresses as subjects of the directory issuer (and bare, as
    /// credentials made before issuers were recorded name them).
    fn names(&self, u: &DirectoryUser) -> BTreeSet<String> {
        let mut bare = BTreeSet::new();
        bare.extend(u.external_id.clone());
        bare.insert(u.user_name.clone());
        bare.extend(u.emails.iter().cloned());
        let mut out = BTreeSet::new();
        out.extend(u.subject.clone());
        if let Some(iss) = self.directory.issuer() {
            out.extend(bare.iter().map(|n| kubehero_core::subject_key(Some(iss), n)));
        }
        out.extend(bare);
        out
    }

    /// The unexpired, unrevoked sessions, CLI tokens and API keys of a person.
    async fn held(&self, u: &DirectoryUser) -> Result<Vec<Held>, IdentityError> {
        let now = self.clock.now();
        let names = self.names(u);
        let emails: Vec<String> = u.emails.iter().map(|e| e.to_lowercase()).collect();
        // Sessions carry the sign-in's email too: a person the IdP names differently in tokens is still found.
        let subs: BTreeSet<&str> = names.iter().map(|n| kubehero_core::split_subject_key(n).1).collect();
        let subs: Vec<&str> = subs.into_iter().collect();
        let email_refs: Vec<&str> = emails.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        for s in self.store.sessions_of(&subs, &email_refs).await? {
            let theirs = names.contains(&kubehero_core::subject_key(s.issuer.as_deref(), &s.sub))
                || s.email.as_ref().is_some_and(|e| emails.contains(&e.to_lowercase()));
            if theirs && s.revoked_at.is_none() && s.expires_at > now {
                let kind = match s.kind {
                    SessionKind::Session => "session",
                    SessionKind::CliToken => "cli_token",
                };
                out.push(Held { kind, id: s.id });
            }
        }
        for name in &names {
            for k in self.store.list_api_keys(Some(name)).await? {
                if k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now) {
                    out.push(Held { kind: "api_key", id: k.id });
                }
            }
        }
        Ok(out)
    }

    /// One row of the provisioner's about a credential or membership.
    fn effect(&self, request_id: &str, action: &str, kind: &str, id: &str) -> AuditEvent {
        AuditEvent {
            event_id: self.ids.next_id(),
            time_ms: self.clock.now_ms(),
            actor: AuditActor::of(&Principal::provisioner()),
            action: action.to_string(),
            target: AuditTarget { kind: Some(kind.to_string()), id: Some(id.to_string()), ..Default::default() },
            result: AuditResult::ok(200),
            request_id: request_id.to_string(),
            source: None,
            user_agent: None,
        }
    }

    /// Rows for every credential of `u` under `action`, plus one for the IdP's tokens naming them.
    fn rows_for(&self, request_id: &str, action: &str, u: &DirectoryUser, held: &[Held]) -> Vec<AuditEvent> {
        let mut rows: Vec<AuditEvent> = held.iter().map(|h| self.effect(request_id, action, h.kind, &h.id)).collect();
        rows.push(self.effect(request_id, action, "idp_tokens", &u.user_name));
        rows
    }

    /// After a directory user was updated: suspension or restoration rows when `active` changed.
    pub async fn user_changed(
        &self,
        request_id: &str,
        before: &DirectoryUser,
        after: &DirectoryUser,
    ) -> Result<(), IdentityError> {
        let action = match (before.active, after.active) {
            (true, false) => "credential.suspend",
            (false, true) => "credential.restore",
            _ => return Ok(()),
        };
        let held = self.held(after).await?;
        tracing::info!(user = %after.id, credentials = held.len(), action, "the directory changed a person's standing");
        self.record_all(self.rows_for(request_id, action, after, &held)).await
    }

    /// After a directory user was deleted: revokes what they hold for good, each revocation in one transaction
    /// with its audit row.
    pub async fn user_deleted(&self, request_id: &str, u: &DirectoryUser) -> Result<(), IdentityError> {
        let held = self.held(u).await?;
        let now = self.clock.now();
        for h in &held {
            let change = match h.kind {
                "api_key" => kubehero_store::Change::RevokeApiKey { id: &h.id, at: now },
                _ => kubehero_store::Change::RevokeSession { id: &h.id, at: now },
            };
            self.apply(change, self.effect(request_id, "credential.revoke", h.kind, &h.id)).await?;
            self.credentials.forget_id(&h.id);
        }
        tracing::info!(user = %u.id, credentials = held.len(), "a person was deleted; their credentials are revoked");
        self.record_all(vec![self.effect(request_id, "credential.revoke", "idp_tokens", &u.user_name)]).await
    }

    /// After people left a group (membership edit, replace or the group's deletion).
    pub async fn members_removed(
        &self,
        request_id: &str,
        group: &DirectoryGroup,
        user_ids: &[String],
    ) -> Result<(), IdentityError> {
        let rows = user_ids
            .iter()
            .map(|u| {
                let target = format!("{}/{u}", group.display_name);
                self.effect(request_id, "person.group_removed", "membership", &target)
            })
            .collect();
        self.record_all(rows).await
    }

    /// Records rows that must be durable before the caller answers (they share group commits).
    pub async fn record_all(&self, events: Vec<AuditEvent>) -> Result<(), IdentityError> {
        if events.is_empty() {
            return Ok(());
        }
        self.audit.record_all(events).await.map(drop).map_err(|e| {
            tracing::error!(error = %e, "audit rows of a directory change could not be written");
            IdentityError::AuditUnavailable(e.to_string())
        })
    }
}
