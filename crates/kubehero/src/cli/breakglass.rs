//! `kubehero breakglass create|list|use|ack|revoke`: one-time emergency codes that give owner on a cluster
//! for a while, with the IdP down.

use super::client::Api;
use super::credentials::{CredentialStore, StoredCredential, Token};
use super::Target;
use reqwest::Method;
use serde_json::{json, Value};
use std::process::ExitCode;

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// `kubehero breakglass create --cluster NAME`: prints the codes (shown once) for the owner to seal away.
pub async fn create(t: &Target, cluster: &str, count: usize, ttl: i64) -> anyhow::Result<ExitCode> {
    let body = json!({ "count": count, "ttl_secs": ttl });
    let got =
        t.api.expect(Method::POST, &format!("/api/v1/clusters/{cluster}/breakglass"), &t.token, Some(&body)).await?;
    println!(
        "Break-glass codes for {cluster}: each gives owner there for {ttl} s, once. They are shown only now: seal \
         them away (a safe, a password manager), not in a chat."
    );
    for c in got["codes"].as_array().into_iter().flatten() {
        println!("  {}  (id {})", text(&c["code"]), text(&c["id"]));
    }
    println!("Use one with: kubehero breakglass use CODE --server {} --reason \"INC-…\"", t.api.server);
    Ok(ExitCode::SUCCESS)
}

/// `kubehero breakglass list`: every code's state and use.
pub async fn list(t: &Target) -> anyhow::Result<ExitCode> {
    let got = t.api.expect(Method::GET, "/api/v1/breakglass", &t.token, None).await?;
    println!("{:<20} {:<20} {:<13} {:<8} {:<12} REASON", "ID", "CLUSTER", "STATE", "TTL", "USED AT");
    for c in got["items"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<20} {:<13} {:<8} {:<12} {}",
            text(&c["id"]),
            text(&c["cluster"]),
            text(&c["state"]),
            format!("{}s", c["ttl_secs"]),
            c["used_at"].as_i64().map_or("-".to_string(), |t| t.to_string()),
            c["reason"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kubehero breakglass ack ID` / `revoke ID`.
pub async fn act(t: &Target, id: &str, acknowledge: bool) -> anyhow::Result<ExitCode> {
    if acknowledge {
        t.api.expect(Method::POST, &format!("/api/v1/breakglass/{id}/acknowledge"), &t.token, Some(&json!({}))).await?;
        println!("Acknowledged the use of {id}: its banner is gone.");
    } else {
        t.api.expect(Method::DELETE, &format!("/api/v1/breakglass/{id}"), &t.token, None).await?;
        println!("Revoked {id}: it can no longer be used.");
    }
    Ok(ExitCode::SUCCESS)
}

/// `kubehero breakglass use CODE --reason …`: no login needed. The owner token it gives is stored as this
/// machine's credential for the server (until it ends); gives back the cluster it is for.
pub async fn use_code(store: &CredentialStore, api: &Api, code: &str, reason: &str) -> anyhow::Result<String> {
    let body = json!({ "code": code.trim(), "reason": reason });
    let a = api.call(Method::POST, "/api/v1/breakglass/use", None, Some(&body)).await.map_err(|e| e.with_hint())?;
    if !a.status.is_success() {
        anyhow::bail!("{} refused the code ({}): {}", api.server, a.status, text(&a.body["message"]));
    }
    let token = Token::new(text(&a.body["access_token"]));
    let expires_at = a.body["expires_at"].as_i64();
    let cred = StoredCredential { server: api.server.clone(), token, obtained_at: super::now(), expires_at };
    super::login::store_credential(store, cred).await?;
    let cluster = text(&a.body["cluster"]).to_string();
    eprintln!(
        "BREAK-GLASS: owner on cluster {cluster} until {} (Unix seconds). Every configured audit sink was alerted, and \
         the dashboard shows a banner until an owner acknowledges it. This token replaced the stored login for {}; \
         run `kubehero login` again when the IdP is back.",
        expires_at.unwrap_or_default(),
        api.server
    );
    Ok(cluster)
}
