//! `kubehero share create|list|revoke` and `kubehero kubeconfig --share LINK`: share links through the API.

use super::Target;
use reqwest::Method;
use serde_json::{json, Value};
use std::process::ExitCode;

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// What `kubehero share create` sends.
pub struct NewShare {
    pub role: String,
    pub expires: i64,
    pub max_uses: Option<i64>,
    pub to: Vec<String>,
    pub namespace: Option<String>,
}

/// `kubehero share create NAME`: prints the link (shown once).
pub async fn create(t: &Target, cluster: &str, s: NewShare) -> anyhow::Result<ExitCode> {
    let body = json!({
        "role": s.role, "expires_in_secs": s.expires, "max_uses": s.max_uses, "to": s.to, "namespace": s.namespace,
    });
    let got = t.api.expect(Method::POST, &format!("/api/v1/clusters/{cluster}/shares"), &t.token, Some(&body)).await?;
    let place = s.namespace.as_deref().map_or(cluster.to_string(), |n| format!("{cluster}/{n}"));
    println!("Share {} gives {} on {place} until {}:", text(&got["id"]), s.role, got["expires_at"]);
    println!("  {}", text(&got["url"]));
    println!("The link is shown only now. Whoever accepts it (after signing in) can run:");
    println!("  kubehero kubeconfig --share {}", text(&got["url"]));
    Ok(ExitCode::SUCCESS)
}

/// `kubehero share list NAME`: one's shares of the cluster (admins: everyone's).
pub async fn list(t: &Target, cluster: &str) -> anyhow::Result<ExitCode> {
    let got = t.api.expect(Method::GET, &format!("/api/v1/clusters/{cluster}/shares"), &t.token, None).await?;
    println!("{:<24} {:<8} {:<8} {:<16} {:<6} {:<24} ACCEPTED BY", "ID", "STATE", "ROLE", "NAMESPACE", "USES", "BY");
    for s in got["items"].as_array().into_iter().flatten() {
        let uses = match s["max_uses"].as_i64() {
            Some(m) => format!("{}/{m}", s["uses"]),
            None => s["uses"].to_string(),
        };
        let accepted: Vec<&str> = s["accepted_by"].as_array().into_iter().flatten().map(text).collect();
        println!(
            "{:<24} {:<8} {:<8} {:<16} {:<6} {:<24} {}",
            text(&s["id"]),
            text(&s["state"]),
            text(&s["role"]),
            s["namespace"].as_str().unwrap_or("-"),
            uses,
            s["created_by_email"].as_str().unwrap_or(text(&s["created_by"])),
            accepted.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kubehero share revoke NAME ID`: every grant made from it ends.
pub async fn revoke(t: &Target, cluster: &str, id: &str) -> anyhow::Result<ExitCode> {
    let got = t.api.expect(Method::DELETE, &format!("/api/v1/clusters/{cluster}/shares/{id}"), &t.token, None).await?;
    println!("Share {id} revoked; {} grant(s) made from it ended.", got["grants_ended"]);
    Ok(ExitCode::SUCCESS)
}

/// The control plane a share link points at (`https://cp.example.com` of `https://cp.example.com/share/khl_…`).
pub fn server_of(link: &str) -> anyhow::Result<String> {
    let (base, token) = link
        .trim()
        .rsplit_once("/share/")
        .ok_or_else(|| anyhow::anyhow!("{link:?} is not a share link (https://<server>/share/khl_…)"))?;
    if !token.starts_with("khl_") || !(base.starts_with("https://") || base.starts_with("http://")) {
        anyhow::bail!("{link:?} is not a share link (https://<server>/share/khl_…)");
    }
    Ok(base.to_string())
}

/// Accepts a share link; gives back the cluster it is for.
pub async fn accept(t: &Target, link: &str) -> anyhow::Result<String> {
    let got =
        t.api.expect(Method::POST, "/api/v1/shares/accept", &t.token, Some(&json!({ "token": link.trim() }))).await?;
    let place = got["namespace"]
        .as_str()
        .map_or(text(&got["cluster"]).to_string(), |n| format!("namespace {n} of {}", text(&got["cluster"])));
    println!(
        "Accepted: {} on {place}, shared by {}, until {} (Unix seconds).",
        text(&got["role"]),
        text(&got["shared_by"]),
        got["expires_at"]
    );
    Ok(text(&got["cluster"]).to_string())
}
