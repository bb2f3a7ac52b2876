//! `kubehero cluster add | list | remove | join-token | revoke`: clusters through the API, with the stored
//! credential (an admin's for changes).

use super::Target;
use reqwest::Method;
use serde_json::{json, Value};
use std::process::ExitCode;

/// A duration: `90s`, `45m`, `1h`, `7d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 30m, 1h, 7d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?} is not a duration (e.g. 30m, 1h, 7d)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too long"))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_join(j: &Value) {
    println!("Join token (shown once, single use, expires at {}):", text(&j["expires_at"]));
    println!("  {}", text(&j["token"]));
    println!("Agent CA hash: {}", text(&j["ca_hash"]));
    println!("\nRun the agent with a kubeconfig for a service account of the cluster:");
    println!("  {} --kubeconfig FILE", text(&j["agent_command"]));
    println!("\nor install it in the cluster:");
    println!("  {}", text(&j["helm_command"]));
}

/// `kubehero cluster add NAME`.
pub async fn add(
    t: &Target,
    name: &str,
    api_server_url: Option<&str>,
    join_ttl: i64,
    labels: serde_json::Map<String, Value>,
) -> anyhow::Result<ExitCode> {
    let mut body = json!({ "name": name, "join": true, "join_ttl_secs": join_ttl, "labels": labels });
    if let Some(u) = api_server_url {
        body["api_server_url"] = json!(u);
    }
    let got = t.api.expect(Method::POST, "/api/v1/clusters", &t.token, Some(&body)).await?;
    println!("Registered cluster {name}.\n");
    print_join(&got["join"]);
    Ok(ExitCode::SUCCESS)
}

/// `kubehero cluster add --direct`: what the cluster's API server needs to trust KubeHero's tokens directly.
pub async fn direct(t: &Target, name: &str) -> anyhow::Result<()> {
    let got = t.api.expect(Method::GET, &format!("/api/v1/clusters/{name}/direct"), &t.token, None).await?;
    println!("\nFor kubectl straight to the API server (kubehero kubeconfig --direct), start kube-apiserver with:");
    for f in got["flags"].as_array().into_iter().flatten() {
        println!("  {}", text(f));
    }
    if let Some(pem) = got["ca_pem"].as_str() {
        println!("\nwith {} holding KubeHero's CA:\n{pem}", text(&got["ca_file"]));
    }
    println!(
        "\nOr, on Kubernetes 1.30 and later, --authentication-config=FILE with:\n\n{}",
        text(&got["authentication_configuration"])
    );
    println!("{}", text(&got["note"]));
    Ok(())
}

/// `kubehero cluster add --webhook`: the webhook kubeconfig and flags for the cluster's API server.
pub async fn webhook(t: &Target, name: &str) -> anyhow::Result<()> {
    let got = t.api.expect(Method::POST, &format!("/api/v1/clusters/{name}/webhook"), &t.token, None).await?;
    println!(
        "\nFor KubeHero's TokenReview webhook, save this as {} on the API server's hosts (it holds a private \
         key: 0600):\n\n{}",
        text(&got["kubeconfig_file"]),
        text(&got["kubeconfig"])
    );
    println!("and start kube-apiserver with:");
    for f in got["flags"].as_array().into_iter().flatten() {
        println!("  {}", text(f));
    }
    println!("\n{}", text(&got["note"]));
    Ok(())
}

/// `kubehero cluster rbac diff NAME`: the steps that would bring the cluster's managed RBAC objects (read
/// through the proxy) to what KubeHero wants. Exit code 0 when in step, 1 when there are changes.
pub async fn rbac_diff(t: &Target, name: &str) -> anyhow::Result<ExitCode> {
    use kubehero_agent::rbac::{plan, MANAGED_BY_KEY, MANAGED_BY_VALUE};
    let want = t.api.expect(Method::GET, &format!("/api/v1/clusters/{name}/rbac"), &t.token, None).await?;
    let desired: Vec<Value> = want["objects"].as_array().cloned().unwrap_or_default();
    let mut current = Vec::new();
    for (resource, kind) in [
        ("clusterroles", "ClusterRole"),
        ("clusterrolebindings", "ClusterRoleBinding"),
        ("rolebindings", "RoleBinding"),
    ] {
        let path = format!(
            "/k8s/clusters/{name}/apis/rbac.authorization.k8s.io/v1/{resource}?labelSelector={MANAGED_BY_KEY}%3D{MANAGED_BY_VALUE}"
        );
        let listed = t.api.expect(Method::GET, &path, &t.token, None).await?;
        for mut item in listed["items"].as_array().cloned().unwrap_or_default() {
            item["kind"] = json!(kind);
            current.push(item);
        }
    }
    let steps = plan(&desired, &current);
    if steps.is_empty() {
        println!("cluster {name}: RBAC is in step with KubeHero ({} objects)", desired.len());
        return Ok(ExitCode::SUCCESS);
    }
    println!("cluster {name}: RBAC sync would");
    for s in &steps {
        println!("  {}", s.describe());
    }
    Ok(ExitCode::from(1))
}

/// `kubehero cluster join-token NAME`: a new join token for a re-install.
pub async fn join_token(t: &Target, name: &str, join_ttl: i64) -> anyhow::Result<ExitCode> {
    let body = json!({ "join_ttl_secs": join_ttl });
    let got =
        t.api.expect(Method::POST, &format!("/api/v1/clusters/{name}/join-tokens"), &t.token, Some(&body)).await?;
    print_join(&got);
    Ok(ExitCode::SUCCESS)
}

fn when(v: &Value) -> String {
    v.as_i64()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

/// `kubehero cluster list`.
pub async fn list(t: &Target) -> anyhow::Result<ExitCode> {
    let got = t.api.expect(Method::GET, "/api/v1/clusters", &t.token, None).await?;
    println!(
        "{:<24} {:<13} {:<21} {:<21} {:<12} {:<10} CERT NOT AFTER",
        "NAME", "STATE", "SINCE", "LAST SEEN", "KUBERNETES", "AGENT"
    );
    for c in got["items"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<13} {:<21} {:<21} {:<12} {:<10} {}",
            text(&c["name"]),
            text(&c["state"]),
            when(&c["since"]),
            when(&c["last_seen"]),
            text(&c["kubernetes_version"]),
            text(&c["agent_version"]),
            when(&c["cert_not_after"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kubehero cluster remove NAME`.
pub async fn remove(t: &Target, name: &str) -> anyhow::Result<ExitCode> {
    t.api.expect(Method::DELETE, &format!("/api/v1/clusters/{name}"), &t.token, None).await?;
    println!("Removed cluster {name}: its agent certificates are revoked and its tunnel is closed.");
    Ok(ExitCode::SUCCESS)
}

/// `kubehero cluster revoke NAME [--serial S]`.
pub async fn revoke(t: &Target, name: &str, serial: Option<&str>) -> anyhow::Result<ExitCode> {
    let body = match serial {
        Some(s) => json!({ "serial": s }),
        None => json!({}),
    };
    let got = t
        .api
        .expect(Method::POST, &format!("/api/v1/clusters/{name}/certificates/revoke"), &t.token, Some(&body))
        .await?;
    println!(
        "Revoked {} certificate(s) of cluster {name}; its tunnel is closed. The agent needs a new join token \
         (`kubehero cluster join-token {name}`) to come back.",
        text(&got["revoked"])
    );
    Ok(ExitCode::SUCCESS)
}
