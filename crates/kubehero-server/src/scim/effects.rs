//! What a SCIM change does to the credentials people hold, and the audit rows that say so.
//!
//! - deactivation (`active=false`) suspends: sessions, CLI tokens, owned API keys and the IdP's tokens for the
//!   person are refused by [`crate::directory::admit`] from now on; nothing is destroyed, so re-activation
//!   restores them. One `credential.suspend` row per credential (and one for the IdP's tokens);
//! - re-activation writes the matching `credential.restore` rows;
//! - deletion revokes sessions, CLI tokens and owned API keys for good (`credential.revoke` rows) and the
//!   tombstone keeps refusing the IdP's tokens;
//! - removal from a group writes one `person.group_removed` row per person: roles that group gave are gone on
//!   their next request.
//!
//! The rows are durable before the SCIM call is answered, like the call's own row.

use super::{Ctx, Failure};
use crate::state::AppState;
use kubehero_core::{AuditActor, AuditEvent, AuditOutcome, AuditResult, AuditTarget, Principal};
use kubehero_store::{DirectoryGroup, DirectoryUser, SessionKind};
use std::collections::BTreeSet;

/// Every subject key the person's credentials may carry as their subject or owner: the linked subject key; the
/// external id, the user name and the email addresses as subjects of the directory issuer (and bare, as
/// credentials made before issuers were recorded name them).
fn names(state: &AppState, u: &DirectoryUser) -> BTreeSet<String> {
    let mut bare = BTreeSet::new();
    bare.extend(u.external_id.clone());
    bare.insert(u.user_name.clone());
    bare.extend(u.emails.iter().cloned());
    let mut out = BTreeSet::new();
    out.extend(u.subject.clone());
    if let Some(iss) = state.identity.directory.issuer() {
        out.extend(bare.iter().map(|n| kubehero_core::subject_key(Some(iss), n)));
    }
    out.extend(bare);
    out
}

/// A credential a person holds: its kind and public id.
struct Held {
    kind: &'static str,
    id: String,
}

/// The unexpired, unrevoked sessions, CLI tokens and API keys of a person.
async fn held(state: &AppState, u: &DirectoryUser) -> Result<Vec<Held>, Failure> {
    let now = state.clock.now();
    let names = names(state, u);
    let emails: Vec<String> = u.emails.iter().map(|e| e.to_lowercase()).collect();
    let mut out = Vec::new();
    // Sessions carry the sign-in's email too: a person the IdP names differently in tokens is still found.
    for s in state.store.list_sessions(None).await? {
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
        for k in state.store.list_api_keys(Some(name)).await? {
            if k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now) {
                out.push(Held { kind: "api_key", id: k.id });
            }
        }
    }
    Ok(out)
}

fn event(state: &AppState, ctx: &Ctx, action: &str, kind: &str, id: &str) -> AuditEvent {
    AuditEvent {
        event_id: state.ids.next_id(),
        time_ms: state.clock.now_ms(),
        actor: AuditActor::of(&Principal::provisioner()),
        action: action.to_string(),
        target: AuditTarget { kind: Some(kind.to_string()), id: Some(id.to_string()), ..Default::default() },
        result: AuditResult { outcome: AuditOutcome::Ok, code: None, status: 200 },
        request_id: ctx.request_id.clone(),
        source: None,
        user_agent: None,
    }
}

async fn record(state: &AppState, events: Vec<AuditEvent>) -> Result<(), Failure> {
    if events.is_empty() {
        return Ok(());
    }
    match state.audit.record_all(events).await {
        Ok(seq) => {
            state.forward.set_head(seq);
            state.forward.notify();
            Ok(())
        }
        Err(e) => {
            state.metrics.audit_refused();
            tracing::error!(error = %e, "the audit rows of a deprovisioning could not be written");
            Err(Failure(kubehero_scim::ScimError {
                status: 503,
                scim_type: None,
                detail: "the audit log cannot be written; retry later".into(),
            }))
        }
    }
}

/// Rows for every credential of `u` under `action`, plus one for the IdP's tokens naming them.
fn rows_for(state: &AppState, ctx: &Ctx, action: &str, u: &DirectoryUser, held: &[Held]) -> Vec<AuditEvent> {
    let mut rows: Vec<AuditEvent> = held.iter().map(|h| event(state, ctx, action, h.kind, &h.id)).collect();
    rows.push(event(state, ctx, action, "idp_tokens", &u.user_name));
    rows
}

/// After a user was updated: suspension or restoration when `active` changed.
pub async fn user_changed(
    state: &AppState,
    ctx: &Ctx,
    before: &DirectoryUser,
    after: &DirectoryUser,
) -> Result<(), Failure> {
    let action = match (before.active, after.active) {
        (true, false) => "credential.suspend",
        (false, true) => "credential.restore",
        _ => return Ok(()),
    };
    let held = held(state, after).await?;
    tracing::info!(user = %after.id, credentials = held.len(), action, "SCIM changed a person's standing");
    record(state, rows_for(state, ctx, action, after, &held)).await
}

/// After a user was deleted: revokes what they hold for good.
pub async fn user_deleted(state: &AppState, ctx: &Ctx, u: &DirectoryUser) -> Result<(), Failure> {
    let held = held(state, u).await?;
    let now = state.clock.now();
    for h in &held {
        match h.kind {
            "api_key" => drop(state.store.revoke_api_key(&h.id, now).await?),
            _ => drop(state.store.revoke_session(&h.id, now).await?),
        }
    }
    tracing::info!(user = %u.id, credentials = held.len(), "SCIM deleted a person; their credentials are revoked");
    record(state, rows_for(state, ctx, "credential.revoke", u, &held)).await
}

/// After people left a group (membership edit, replace or the group's deletion).
pub async fn members_removed(
    state: &AppState,
    ctx: &Ctx,
    group: &DirectoryGroup,
    user_ids: &[String],
) -> Result<(), Failure> {
    let rows = user_ids
        .iter()
        .map(|u| event(state, ctx, "person.group_removed", "membership", &format!("{}/{u}", group.display_name)))
        .collect();
    record(state, rows).await
}
