//! `kubehero login`: get a credential for a server and store it.
//!
//! Any number of concurrent `kubehero login` processes run at most one interactive sign-in (device
//! authorization or, with `--browser`, loopback redirect): each takes `login.lock` before looking at the
//! credentials file, and whoever gets it after a successful login finds that login's token, checks it with
//! the server and stops there (unless `--force`).

use super::client::{server_message, Api};
use super::credentials::{CredentialStore, StoredCredential, Token};
use super::now;
use super::{browser, device};
use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::process::ExitCode;

/// How a person signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The device authorization grant (the default): confirm a code from any browser.
    Device,
    /// `--browser`: a loopback redirect with PKCE; `open` tries to start a browser.
    Browser { open: bool },
}

/// An interactive sign-in, run under `login.lock`.
pub async fn interactive_login(
    store: &CredentialStore,
    api: &Api,
    flow: Flow,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let server = api.server.clone();
    let _login = store.lock_login().await?;
    if !force {
        // Another process may have logged in while this one waited for the lock.
        let creds = store.load()?;
        if let Some(c) = creds.servers.get(&server).filter(|c| c.is_fresh(now())) {
            let a = api.call(Method::GET, "/api/v1/whoami", Some(&c.token), None).await.map_err(|e| e.with_hint())?;
            if a.status.is_success() {
                eprintln!(
                    "Already logged in to {server} as {}; `kubehero login --force` signs in again.",
                    describe(&a.body)
                );
                return Ok(ExitCode::SUCCESS);
            }
            if a.status != StatusCode::UNAUTHORIZED {
                return Err(api.refusal(&a, &c.token));
            }
            // Revoked or expired on the server: sign in again.
        }
    }
    let t = match flow {
        Flow::Device => device::authorize(api).await?,
        Flow::Browser { open } => browser::authorize(api, open).await?,
    };
    let obtained_at = now();
    let cred = StoredCredential {
        server: server.clone(),
        token: t.access_token,
        obtained_at,
        expires_at: t.expires_in.map(|e| obtained_at + e),
    };
    store_credential(store, cred.clone()).await?;
    match api.expect(Method::GET, "/api/v1/whoami", &cred.token, None).await {
        Ok(me) => eprintln!("Logged in to {server} as {}.", describe(&me)),
        Err(e) => eprintln!("Logged in to {server} (token stored), but whoami failed: {e:#}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `--token-stdin`: store an API key or an IdP token read from stdin, once the server accepts it.
pub async fn stdin_login(store: &CredentialStore, api: &Api) -> anyhow::Result<ExitCode> {
    let server = api.server.clone();
    let raw = tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin()))
        .await
        .context("the stdin task failed")?
        .context("reading the token from stdin")?;
    let raw = raw.trim();
    if raw.is_empty() {
        bail!("no token on stdin: pipe an API key or an IdP token, e.g. `kubehero login --server {server} --token-stdin < key.txt`");
    }
    if raw.contains(char::is_whitespace) {
        bail!("stdin holds more than one word: pass only the API key or token");
    }
    let token = Token::new(raw);
    let a = api.call(Method::GET, "/api/v1/whoami", Some(&token), None).await.map_err(|e| e.with_hint())?;
    if a.status == StatusCode::UNAUTHORIZED {
        bail!(
            "{server} rejected the {} read from stdin ({}): check that it is valid for this server and not expired",
            token.kind(),
            server_message(&a)
        );
    }
    if !a.status.is_success() {
        return Err(api.refusal(&a, &token));
    }
    let kind = token.kind();
    let cred = StoredCredential { server: server.clone(), expires_at: token.jwt_expiry(), token, obtained_at: now() };
    store_credential(store, cred).await?;
    eprintln!("Logged in to {server} as {}; the {kind} is stored.", describe(&a.body));
    Ok(ExitCode::SUCCESS)
}

/// Adds or replaces the entry for `cred.server`.
pub async fn store_credential(store: &CredentialStore, cred: StoredCredential) -> anyhow::Result<()> {
    let held = store.lock_credentials().await?;
    let mut creds = store.load()?;
    creds.servers.insert(cred.server.clone(), cred);
    store.save(&held, &creds)
}

/// "alice (role admin)" from a whoami answer.
pub fn describe(me: &Value) -> String {
    let who = me["email"].as_str().filter(|e| !e.is_empty()).or(me["sub"].as_str()).unwrap_or("an unnamed principal");
    match me["role"].as_str() {
        Some(r) => format!("{who} (role {r})"),
        None => who.to_string(),
    }
}
