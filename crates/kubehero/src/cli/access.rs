//! `kubehero access request|approve|deny|list`: time-bound elevation through the API.

use super::Target;
use reqwest::Method;
use serde_json::{json, Value};
use std::process::ExitCode;

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// `kubehero access request`: prints the request's id for approvers.
pub async fn request(
    t: &Target,
    cluster: &str,
    namespace: Option<&str>,
    role: &str,
    duration: i64,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let body = json!({
        "cluster": cluster, "namespace": namespace, "role": role, "duration_secs": duration, "reason": reason,
    });
    let got = t.api.expect(Method::POST, "/api/v1/access-requests", &t.token, Some(&body)).await?;
    let place = namespace.map_or(cluster.to_string(), |n| format!("{cluster}/{n}"));
    println!(
        "Requested {role} on {place} for {duration} s: request {id}. An admin or owner there approves it with \
         `kubehero access approve {id}`.",
        id = text(&got["id"])
    );
    Ok(ExitCode::SUCCESS)
}

/// `kubehero access approve|deny ID`.
pub async fn decide(t: &Target, id: &str, verb: &str, comment: Option<String>) -> anyhow::Result<ExitCode> {
    let body = json!({ "comment": comment });
    let got =
        t.api.expect(Method::POST, &format!("/api/v1/access-requests/{id}/{verb}"), &t.token, Some(&body)).await?;
    match got["expires_at"].as_i64() {
        Some(until) => println!("Request {id}: {} until {until} (Unix seconds)", text(&got["state"])),
        None => println!("Request {id}: {}", text(&got["state"])),
    }
    Ok(ExitCode::SUCCESS)
}

/// `kubehero access list`: one's requests and those one may decide (`decide` in the state column; `deny-only`
/// when the cluster's access policy names other approvers, or wants a second one after yours).
pub async fn list(t: &Target) -> anyhow::Result<ExitCode> {
    let got = t.api.expect(Method::GET, "/api/v1/access-requests", &t.token, None).await?;
    println!("{:<26} {:<9} {:<8} {:<30} {:<8} {:<24} REASON", "ID", "STATE", "ROLE", "WHERE", "FOR", "WHO");
    for r in got["items"].as_array().into_iter().flatten() {
        let place = match r["namespace"].as_str() {
            Some(ns) => format!("{}/{ns}", text(&r["cluster"])),
            None => text(&r["cluster"]).to_string(),
        };
        let state = match (r["can_decide"] == true, r["can_approve"] == true) {
            (true, true) => "decide",
            (true, false) => "deny-only",
            _ => text(&r["state"]),
        };
        println!(
            "{:<26} {:<9} {:<8} {:<30} {:<8} {:<24} {}",
            text(&r["id"]),
            state,
            text(&r["role"]),
            place,
            format!("{}s", r["duration_secs"].as_i64().unwrap_or(0)),
            r["requester_email"].as_str().unwrap_or(text(&r["requester"])),
            text(&r["reason"])
        );
    }
    Ok(ExitCode::SUCCESS)
}
