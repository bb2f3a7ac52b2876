//! `kubehero whoami`, `logout`, `auth rotate` and `auth sessions [revoke ID]`: what the signed-in user does
//! with their own credentials. Output for reading goes to stdout, progress and notes to stderr.

use super::client::{server_message, Api};
use super::credentials::{CredentialStore, StoredCredential};
use super::device::TokenResponse;
use super::{now, resolve_server, Target};
use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::process::ExitCode;

/// `kubehero whoami`.
pub async fn whoami(t: &Target) -> anyhow::Result<ExitCode> {
    let me = t.api.expect(Method::GET, "/api/v1/whoami", &t.token, None).await?;
    let rows = [
        ("sub", text(&me["sub"])),
        ("email", text(&me["email"])),
        ("role", text(&me["role"])),
        ("roles", text(&me["roles"])),
        ("groups", text(&me["groups"])),
        ("auth", text(&me["auth_method"])),
        ("server", t.api.server.clone()),
    ];
    for (k, v) in rows {
        println!("{:<8}{v}", format!("{k}:"));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kubehero logout`: revoke the stored CLI token on the server (a 401 or 404 means it is already dead),
/// then remove it from the file. API keys and IdP tokens are only forgotten: they are not this machine's to
/// revoke.
pub async fn logout(store: &CredentialStore, server: Option<&str>) -> anyhow::Result<ExitCode> {
    let held = store.lock_credentials().await?;
    let mut creds = store.load()?;
    let server = resolve_server(&creds, server)?;
    let Some(c) = creds.servers.get(&server).cloned() else {
        eprintln!("Not logged in to {server}; nothing to do.");
        return Ok(ExitCode::SUCCESS);
    };
    if c.token.is_cli_token() {
        let api = Api::new(&server)?;
        let path = format!("/api/v1/auth/sessions/{}", c.token.id());
        let a = api.call(Method::DELETE, &path, Some(&c.token), None).await.map_err(|e| {
            anyhow!("{e}; the token is still stored: run `kubehero logout` again once the server is reachable")
        })?;
        match a.status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => {
                eprintln!("The server no longer accepted the token ({}); removing it here.", server_message(&a))
            }
            _ => return Err(api.refusal(&a, &c.token).context("the token is still stored")),
        }
    } else {
        eprintln!(
            "The stored credential is an {}, which stays valid on the server: revoke it there if it is no longer \
             needed.",
            c.token.kind()
        );
    }
    creds.servers.remove(&server);
    store.save(&held, &creds)?;
    eprintln!("Logged out of {server}.");
    Ok(ExitCode::SUCCESS)
}

/// `kubehero auth rotate`: the server issues a new CLI token and revokes the old one in the same step, so
/// the file is locked from before the request until the new token is stored (two concurrent rotations
/// cannot both use the old token, and none loses the other's result).
pub async fn rotate(store: &CredentialStore, t: &Target) -> anyhow::Result<ExitCode> {
    let server = &t.api.server;
    if !t.token.is_cli_token() {
        bail!(
            "the credential stored for {server} is an {}, not a CLI token: only CLI tokens rotate (API keys are \
             replaced with `kubehero apikey` on the server host)",
            t.token.kind()
        );
    }
    let held = store.lock_credentials().await?;
    // Re-read under the lock: another process may have rotated since `t` was read.
    let mut creds = store.load()?;
    let Some(current) = creds.servers.get(server).cloned() else {
        bail!(
            "not logged in to {server} any more (another command logged out): run `kubehero login --server {server}`"
        );
    };
    let body = t.api.expect(Method::POST, "/api/v1/auth/rotate", &current.token, Some(&serde_json::json!({}))).await?;
    let issued: TokenResponse = serde_json::from_value(body)
        .with_context(|| format!("{server} answered the rotation with an unexpected body; run `kubehero login`"))?;
    if !issued.token_type.eq_ignore_ascii_case("bearer") || !issued.access_token.is_cli_token() {
        bail!("{server} issued an unusable token on rotation; run `kubehero login --server {server}`");
    }
    let obtained_at = now();
    let fresh = StoredCredential {
        server: server.clone(),
        token: issued.access_token,
        obtained_at,
        expires_at: issued.expires_in.map(|e| obtained_at + e),
    };
    let id = fresh.token.id();
    let expires = fresh.expires_at.map(|e| format!(", expires {}", when(e))).unwrap_or_default();
    creds.servers.insert(server.clone(), fresh);
    store.save(&held, &creds).with_context(|| {
        format!("the server rotated the token but it could not be stored: run `kubehero login --server {server}`")
    })?;
    eprintln!("Rotated the CLI token for {server} (new id {id}{expires}); the old one no longer works.");
    Ok(ExitCode::SUCCESS)
}

/// `kubehero auth sessions [--all]`: a table of browser sessions and CLI tokens.
pub async fn sessions(t: &Target, all: bool) -> anyhow::Result<ExitCode> {
    let path = if all { "/api/v1/auth/sessions?all=true" } else { "/api/v1/auth/sessions" };
    let body = t.api.expect(Method::GET, path, &t.token, None).await?;
    let Some(items) = body["items"].as_array() else {
        bail!("{} answered the session list with an unexpected body", t.api.server);
    };
    if items.is_empty() {
        eprintln!("No browser sessions or CLI tokens.");
        return Ok(ExitCode::SUCCESS);
    }
    let mine = t.token.id();
    let now = now();
    let mut rows = vec![["ID", "KIND", "USER", "CREATED", "LAST SEEN", "EXPIRES", "STATE", "CLIENT"].map(String::from)];
    for i in items {
        let id = text(&i["id"]);
        let state = if !i["revoked_at"].is_null() {
            "revoked"
        } else if unix(&i["expires_at"]).is_some_and(|e| e <= now) {
            "expired"
        } else if id == mine {
            "current"
        } else {
            "active"
        };
        rows.push([
            id,
            text(&i["kind"]),
            text(&i["sub"]),
            time_text(&i["created_at"]),
            time_text(&i["last_seen_at"]),
            time_text(&i["expires_at"]),
            state.to_string(),
            text(&i["user_agent"]),
        ]);
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// `kubehero auth sessions revoke ID`. Revoking this machine's own token also forgets it locally.
pub async fn revoke(store: &CredentialStore, t: &Target, id: &str) -> anyhow::Result<ExitCode> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        bail!("{id:?} is not a session id: use an ID that `kubehero auth sessions` lists");
    }
    let path = format!("/api/v1/auth/sessions/{id}");
    t.api.expect(Method::DELETE, &path, &t.token, None).await?;
    eprintln!("Revoked {id}.");
    if let Some(stored) = t.stored.as_ref().filter(|s| s.token.id() == id) {
        let held = store.lock_credentials().await?;
        let mut creds = store.load()?;
        if creds.servers.get(&stored.server).is_some_and(|c| c.token == stored.token) {
            creds.servers.remove(&stored.server);
            store.save(&held, &creds)?;
            eprintln!("That was this machine's token; it is removed here too. Run `kubehero login` to sign in again.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON value for a table cell: strings as they are, lists joined, nothing as "-".
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// Unix seconds from a number (seconds, or milliseconds when that large) or an RFC 3339 string.
fn unix(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().map(|n| if n > 100_000_000_000 { n / 1000 } else { n }),
        Value::String(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp()),
        _ => None,
    }
}

fn time_text(v: &Value) -> String {
    unix(v).map(when).unwrap_or_else(|| text(v))
}

/// `2026-04-14 12:03 UTC`.
fn when(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => {
            format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
        }
        Err(_) => secs.to_string(),
    }
}

/// Left-aligned columns, two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_render_lists_times_and_gaps() {
        assert_eq!(text(&json!(["kubehero-admins", "dev"])), "kubehero-admins, dev");
        assert_eq!(text(&json!(null)), "-");
        assert_eq!(time_text(&json!(0)), "1970-01-01 00:00 UTC");
        assert_eq!(time_text(&json!(1_700_000_000_000_i64)), time_text(&json!(1_700_000_000)));
        assert_eq!(time_text(&json!("2026-04-14T12:03:09Z")), "2026-04-14 12:03 UTC");
        assert_eq!(unix(&json!("not a time")), None);
    }

    #[test]
    fn tables_align() {
        let rows = [["ID".to_string(), "KIND".to_string()], ["abc".to_string(), "session".to_string()]];
        assert_eq!(table(&rows), "ID   KIND\nabc  session\n");
    }
}
