//! `kubehero token` (kubectl's exec credential plugin) and `kubehero kubeconfig` (contexts that use it).

use super::credentials::CredentialStore;
use super::{now, Target};
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A cached per-cluster token is used until this many seconds before it expires.
const REFRESH_BEFORE_SECS: i64 = 60;

fn short_hash(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The `ExecCredential` API version kubectl asked for (`KUBERNETES_EXEC_INFO`), v1 by default.
fn exec_api(info: Option<String>) -> String {
    info.and_then(|i| serde_json::from_str::<Value>(&i).ok())
        .and_then(|v| v["apiVersion"].as_str().map(str::to_string))
        .unwrap_or_else(|| "client.authentication.k8s.io/v1".into())
}

/// Whether kubectl ran the plugin with a person at the terminal (`spec.interactive` of `KUBERNETES_EXEC_INFO`).
pub fn interactive(info: Option<&str>) -> bool {
    info.and_then(|i| serde_json::from_str::<Value>(i).ok()).is_some_and(|v| v["spec"]["interactive"] == true)
}

/// `kubehero token --cluster NAME`: prints an `ExecCredential` holding a per-cluster token, from the cache when
/// it has more than a minute left. Parallel kubectl processes wait on one lock, so one of them mints and the
/// others read what it cached.
pub async fn token(
    store: &CredentialStore,
    t: &Target,
    cluster: &str,
    direct: bool,
    exec_info: Option<String>,
) -> anyhow::Result<ExitCode> {
    if !t.token.is_cli_token() {
        bail!(
            "kubehero token needs a CLI login (per-cluster tokens are minted from it): run `kubehero login --server {}`",
            t.api.server
        );
    }
    let kind = if direct { "direct-token" } else { "cluster-token" };
    let name = format!("{kind}-{}-{cluster}", short_hash(&t.api.server));
    let _held = store.lock_named(&name).await?;
    let login = t.token.id();
    let cached = store
        .read_private(&format!("{name}.json"))
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .filter(|v| v["login"].as_str() == Some(login.as_str()))
        .filter(|v| v["expires_at"].as_i64().is_some_and(|e| e - now() > REFRESH_BEFORE_SECS));
    let got = match cached {
        Some(v) => v,
        None => {
            let query = if direct { "?direct=true" } else { "" };
            let path = format!("/api/v1/clusters/{cluster}/token{query}");
            let minted = t.api.expect(Method::POST, &path, &t.token, None).await?;
            let v = json!({ "login": login, "token": minted["token"], "expires_at": minted["expires_at"] });
            store.write_private(&format!("{name}.json"), &v.to_string())?;
            v
        }
    };
    let credential = json!({
        "apiVersion": exec_api(exec_info),
        "kind": "ExecCredential",
        "status": { "token": got["token"], "expirationTimestamp": rfc3339(got["expires_at"].as_i64().unwrap_or(0)) },
    });
    println!("{credential}");
    Ok(ExitCode::SUCCESS)
}

/// Where `kubehero kubeconfig` writes: `-o FILE`, else the first file of `$KUBECONFIG`, else `~/.kube/config`.
fn kubeconfig_path(out: Option<PathBuf>, env: &dyn kubehero_server::config::Env) -> anyhow::Result<PathBuf> {
    if let Some(p) = out {
        return Ok(p);
    }
    if let Some(first) = env.var("KUBECONFIG").and_then(|k| k.split(':').find(|s| !s.is_empty()).map(PathBuf::from)) {
        return Ok(first);
    }
    let home = env.var("HOME").context("HOME is not set: pass -o FILE")?;
    Ok(Path::new(&home).join(".kube/config"))
}

/// Replaces the entry named `name` in the list `key` of a kubeconfig, or adds it.
fn upsert(doc: &mut Value, key: &str, entry: Value) {
    if !doc[key].is_array() {
        doc[key] = json!([]);
    }
    if let Some(list) = doc[key].as_array_mut() {
        list.retain(|e| e["name"] != entry["name"]);
        list.push(entry);
    }
}

/// Options of `kubehero kubeconfig`.
pub struct KubeconfigArgs {
    pub clusters: Vec<String>,
    pub out: Option<PathBuf>,
    pub exec_api: String,
    pub ca_file: Option<PathBuf>,
    /// Straight to each cluster's API server with direct tokens.
    pub direct: bool,
}

/// `kubehero kubeconfig`: one context per cluster (`kubehero-<name>`), each with a user that runs `kubehero
/// token`, merged into the kubeconfig (the previous file kept as `<file>.kubehero-backup`).
pub async fn kubeconfig(
    t: &Target,
    a: KubeconfigArgs,
    env: &dyn kubehero_server::config::Env,
) -> anyhow::Result<ExitCode> {
    let listed = t.api.expect(Method::GET, "/api/v1/clusters", &t.token, None).await?;
    let items: Vec<&Value> =
        listed["items"].as_array().into_iter().flatten().filter(|c| c["state"] != "removed").collect();
    let known: Vec<String> = items.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect();
    let names = if a.clusters.is_empty() { known.clone() } else { a.clusters.clone() };
    if let Some(missing) = names.iter().find(|n| !known.contains(n)) {
        bail!("{} has no cluster {missing:?} (`kubehero cluster list` shows them)", t.api.server);
    }
    if names.is_empty() {
        bail!("{} has no clusters yet", t.api.server);
    }
    let ca = match &a.ca_file {
        Some(f) => {
            use base64::Engine;
            let pem = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            Some(base64::engine::general_purpose::STANDARD.encode(pem))
        }
        None => None,
    };
    let exe = std::env::current_exe().map_or_else(|_| "kubehero".to_string(), |p| p.display().to_string());
    let path = kubeconfig_path(a.out, env)?;
    let mut doc: Value = match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            std::fs::write(path.with_extension("kubehero-backup"), &text)
                .with_context(|| format!("backing up {}", path.display()))?;
            serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not a kubeconfig", path.display()))?
        }
        _ => json!({ "apiVersion": "v1", "kind": "Config", "preferences": {} }),
    };
    for name in &names {
        let server = if a.direct {
            let entry = items.iter().find(|c| c["name"].as_str() == Some(name));
            match entry.and_then(|c| c["api_server_url"].as_str()) {
                Some(url) => url.to_string(),
                None => bail!(
                    "cluster {name} has no API server URL registered, which --direct needs: register it with \
                     `kubehero cluster add {name} --api-server-url https://…` (or leave out --direct to go through \
                     the proxy)"
                ),
            }
        } else {
            format!("{}/k8s/clusters/{name}", t.api.server)
        };
        let entry = kubehero_server::kube::kubeconfig::Entry {
            control_plane: &t.api.server,
            cluster: name,
            server: &server,
            ca_data: ca.as_deref(),
            exec_api: &a.exec_api,
            command: &exe,
            direct: a.direct,
        };
        for (key, value) in ["clusters", "users", "contexts"].into_iter().zip(entry.entries()) {
            upsert(&mut doc, key, value);
        }
    }
    if doc["current-context"].as_str().is_none_or(str::is_empty) {
        doc["current-context"] = json!(format!("kubehero-{}", names[0]));
    }
    let yaml = serde_yaml_ng::to_string(&doc).context("writing the kubeconfig")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_0600(&path, &yaml)?;
    println!("Wrote {} context(s) to {}:", names.len(), path.display());
    for n in &names {
        println!("  kubectl --context kubehero-{n} get namespaces");
    }
    Ok(ExitCode::SUCCESS)
}

fn write_0600(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("kubehero-tmp");
    let write = || -> std::io::Result<()> {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("writing {}", path.display()))
}
