//! The CLI side of login with the real binaries: `kubehero login` runs the device flow against a real
//! `kubehero serve` while the test approves the code through the npm oidc-provider's sign-in pages; then
//! `whoami`, `auth rotate`, `auth sessions` and `logout`. Twenty concurrent logins share one device
//! authorization. `--token-stdin` stores an API key. `--browser` signs in through the loopback redirect with
//! PKCE, the test playing the browser.

use crate::support::*;
use kubehero_testkit::oidc::{free_port, OidcProvider};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// A `kubehero serve` with browser sign-in against a fresh IdP, and a CLI config dir.
struct Setup {
    serve: Serve,
    idp: OidcProvider,
    db: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    let port = free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let idp = OidcProvider::start_for(free_port().unwrap(), std::slice::from_ref(&base)).await.unwrap();
    let mut env = base_env(dir.path(), &db);
    for (k, v) in [
        ("KUBEHERO_PUBLIC_URL", base.as_str()),
        ("OIDC_ISSUER_URL", idp.issuer.as_str()),
        ("OIDC_AUDIENCE", "kubehero"),
        ("KUBEHERO_OIDC_CLIENT_ID", "kubehero"),
        ("KUBEHERO_OIDC_CLIENT_SECRET", "kubehero-secret"),
        ("KUBEHERO_GROUP_ROLES", "kubehero-admins=admin"),
    ] {
        env.insert(k.into(), v.into());
    }
    let serve = Serve::start_on(&env, port).await;
    // Sign-in needs the IdP's discovery document and keys.
    for _ in 0..100 {
        let r: serde_json::Value =
            reqwest::get(format!("{}/readyz", serve.url)).await.unwrap().json().await.unwrap_or_default();
        if r["issuers"][0]["healthy"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config = dir.path().join("cli-config");
    Setup { serve, idp, db, config, _dir: dir }
}

/// The CLI with nothing but its config dir in the environment.
fn cli(config: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env_clear().env("KUBEHERO_CONFIG_DIR", config).env("KUBEHERO_LOG", "warn").kill_on_drop(true);
    c
}

/// Runs the CLI to completion: (exit code, stdout, stderr).
async fn run(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), cli(config).args(args).output()).await.unwrap().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// A `kubehero login` running in the background; its stderr is collected, and the user code it prints (if
/// it starts a device authorization) is sent on `codes`.
fn start_login(
    config: &Path,
    server: &str,
    codes: tokio::sync::mpsc::UnboundedSender<String>,
) -> (Child, tokio::task::JoinHandle<String>) {
    let mut child = cli(config).args(["login", "--server", server]).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let collect = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(code) = user_code_in(&line) {
                let _ = codes.send(code);
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (child, collect)
}

/// The code from "Open URL and confirm code ABCD-EFGH".
fn user_code_in(line: &str) -> Option<String> {
    let at = line.find("confirm code ")? + "confirm code ".len();
    Some(line[at..].split_whitespace().next()?.to_string())
}

/// The value of the form field `name` in the `/device` page.
fn field(html: &str, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    let at = html.find(&key).unwrap_or_else(|| panic!("no {name} field in {html}")) + key.len();
    html[at..at + html[at..].find('"').unwrap()].to_string()
}

/// What a person does in the browser: sign in as `login`, open the confirmation page, approve `code`.
async fn approve(idp: &OidcProvider, base: &str, code: &str, login: &str) {
    // `sign_in` expects its start page to redirect to the IdP: `/login`, returning to the confirmation page.
    let start = format!("/login?return_to=%2Fdevice%3Fuser_code%3D{code}");
    let s = idp.sign_in(base, &start, login).await.unwrap();
    let cookie = s.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = http.get(format!("{base}/device?user_code={code}")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert_eq!(field(&page, "user_code"), code);
    let form = [("csrf", field(&page, "csrf")), ("user_code", code.to_string()), ("decision", "approve".into())];
    let r = http.post(format!("{base}/device")).header("cookie", &cookie).form(&form).send().await.unwrap();
    let status = r.status();
    assert!(status.is_success(), "{status}: {}", r.text().await.unwrap());
}

/// The credentials file, and the token stored for `server` (if any).
fn stored(config: &Path, server: &str) -> (serde_json::Value, Option<String>) {
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config.join("credentials.json")).unwrap()).unwrap();
    let token = file["servers"][server]["token"].as_str().map(str::to_string);
    (file, token)
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

async fn whoami_status(server: &str, token: &str) -> u16 {
    let r = reqwest::Client::new().get(format!("{server}/api/v1/whoami")).bearer_auth(token).send().await.unwrap();
    r.status().as_u16()
}

#[tokio::test]
async fn device_login_whoami_rotate_sessions_logout() {
    let s = setup().await;
    let url = s.serve.url.clone();
    let (tx, mut codes) = tokio::sync::mpsc::unbounded_channel();
    let (mut login, stderr) = start_login(&s.config, &url, tx);
    let code = tokio::time::timeout(Duration::from_secs(30), codes.recv()).await.unwrap().unwrap();
    approve(&s.idp, &url, &code, "alice").await;
    let status = tokio::time::timeout(Duration::from_secs(60), login.wait()).await.unwrap().unwrap();
    let stderr = stderr.await.unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{url}/device?user_code={code}")), "the complete URL is shown: {stderr}");

    let (file, token) = stored(&s.config, &url);
    let first = token.unwrap();
    assert!(first.starts_with("khc_"));
    assert!(!stderr.contains(&first), "login never prints the token");
    assert!(
        file["servers"][&url]["expires_at"].as_i64().unwrap() > file["servers"][&url]["obtained_at"].as_i64().unwrap()
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&s.config.join("credentials.json")), 0o600);
        assert_eq!(mode(&s.config), 0o700);
    }

    let (code, out, err) = run(&s.config, &["whoami"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice") && out.contains("admin"), "{out}");
    assert!(!out.contains(&first) && !err.contains(&first));

    // A second login finds the valid token and starts no device authorization.
    let (code, _, err) = run(&s.config, &["login", "--server", &url]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Already logged in") && !err.contains("confirm code"), "{err}");

    let (code, _, err) = run(&s.config, &["auth", "rotate"]).await;
    assert_eq!(code, 0, "{err}");
    let second = stored(&s.config, &url).1.unwrap();
    assert_ne!(first, second);
    assert!(!err.contains(&second));
    assert_eq!(whoami_status(&url, &first).await, 401, "the old token stops working at once");
    assert_eq!(whoami_status(&url, &second).await, 200);

    let (code, out, err) = run(&s.config, &["auth", "sessions"]).await;
    assert_eq!(code, 0, "{err}");
    let second_id = kubehero_authn::sha256_hex(&second)[..16].to_string();
    let line = out.lines().find(|l| l.starts_with(&second_id)).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("cli_token") && line.contains("current"), "{out}");
    let first_id = kubehero_authn::sha256_hex(&first)[..16].to_string();
    assert!(out.lines().any(|l| l.starts_with(&first_id) && l.contains("revoked")), "{out}");

    let (code, _, err) = run(&s.config, &["logout"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(whoami_status(&url, &second).await, 401);
    let (file, token) = stored(&s.config, &url);
    assert_eq!(token, None, "{file}");
    let (code, _, err) = run(&s.config, &["whoami"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("kubehero login --server"), "{err}");
}

#[tokio::test]
async fn twenty_concurrent_logins_run_one_device_authorization() {
    let s = setup().await;
    let url = s.serve.url.clone();
    let (tx, mut codes) = tokio::sync::mpsc::unbounded_channel();
    let logins: Vec<_> = (0..20).map(|_| start_login(&s.config, &url, tx.clone())).collect();
    drop(tx);
    let code = tokio::time::timeout(Duration::from_secs(30), codes.recv()).await.unwrap().unwrap();
    approve(&s.idp, &url, &code, "alice").await;
    let mut printed = Vec::new();
    for (mut child, stderr) in logins {
        let status = tokio::time::timeout(Duration::from_secs(120), child.wait()).await.unwrap().unwrap();
        let stderr = stderr.await.unwrap();
        assert!(status.success(), "{stderr}");
        printed.extend(stderr.lines().filter_map(user_code_in));
    }
    assert_eq!(printed, [code], "exactly one process started a device authorization");
    assert_eq!(codes.recv().await, None);

    // The server agrees: one device code issued, one CLI token, and it is the stored one.
    let store = kubehero_store::open(&s.db).await.unwrap();
    let q = kubehero_store::AuditQuery { action: Some("auth.device_code".into()), limit: 100, ..Default::default() };
    assert_eq!(store.query_audit(&q).await.unwrap().len(), 1);
    let token = stored(&s.config, &url).1.unwrap();
    let tokens: HashSet<String> = store
        .list_sessions(Some("alice"))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == kubehero_store::SessionKind::CliToken)
        .map(|r| r.id)
        .collect();
    assert_eq!(tokens, HashSet::from([kubehero_authn::sha256_hex(&token)[..16].to_string()]));
    assert_eq!(whoami_status(&url, &token).await, 200);
}

#[tokio::test]
async fn token_stdin_stores_an_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    let serve = Serve::start(&base_env(dir.path(), &db)).await;
    let url = serve.url.clone();
    let config = dir.path().join("cli-config");
    let login = |key: &'static str| {
        let mut c = cli(&config);
        c.args(["login", "--server", &format!("{url}/"), "--token-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        async move {
            let mut child = c.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(format!("{key}\n").as_bytes()).await.unwrap();
            drop(stdin);
            let out = child.wait_with_output().await.unwrap();
            (out.status.code().unwrap_or(-1), String::from_utf8(out.stderr).unwrap())
        }
    };

    let (code, err) = login("wrong-key-0123456789abcdef").await;
    assert_ne!(code, 0);
    assert!(err.contains("rejected") && !err.contains("wrong-key-0123456789abcdef"), "{err}");
    assert!(!config.join("credentials.json").exists());

    let (code, err) = login(ADMIN).await;
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(ADMIN), "{err}");
    assert_eq!(stored(&config, &url).1.as_deref(), Some(ADMIN), "stored under the normalised URL");
    #[cfg(unix)]
    assert_eq!(mode(&config.join("credentials.json")), 0o600);

    let (code, out, err) = run(&config, &["whoami"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("admin") && !out.contains(ADMIN), "{out}");

    let (code, _, err) = run(&config, &["auth", "rotate"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("only CLI tokens rotate"), "{err}");

    // KUBEHERO_TOKEN wins over the file, and needs no login.
    let empty = dir.path().join("empty-config");
    let out = cli(&empty).env("KUBEHERO_TOKEN", ADMIN).args(["whoami", "--server", &url]).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!empty.exists(), "no config dir is created for KUBEHERO_TOKEN");

    let (code, _, err) = run(&config, &["logout"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("stays valid on the server"), "{err}");
    assert_eq!(stored(&config, &url).1, None);
    assert_eq!(whoami_status(&url, ADMIN).await, 200, "a static key is not this machine's to revoke");
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of the hidden field `name` in a page (the page escapes `&` in values).
fn hidden(html: &str, name: &str) -> String {
    field(html, name).replace("&amp;", "&")
}

#[tokio::test]
async fn browser_login_uses_the_loopback_redirect_with_pkce() {
    let s = setup().await;
    let url = s.serve.url.clone();
    let mut login = cli(&s.config)
        .env("KUBEHERO_NO_BROWSER", "1")
        .args(["login", "--browser", "--server", &url])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, mut authorize_urls) = tokio::sync::mpsc::unbounded_channel();
    let mut lines = BufReader::new(login.stderr.take().unwrap()).lines();
    let collect = tokio::spawn(async move {
        let mut all = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.find(&format!("{url}/cli/authorize?")) {
                let _ = tx.send(line[at..].split_whitespace().next().unwrap().to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let url = s.serve.url.clone();
    let authorize = tokio::time::timeout(Duration::from_secs(30), authorize_urls.recv()).await.unwrap().unwrap();
    let path_and_query = &authorize[url.len()..];
    assert!(path_and_query.contains("code_challenge_method=S256"), "{authorize}");
    assert!(path_and_query.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"), "{authorize}");

    // The person signs in and lands on the approval page.
    let start = format!("/login?return_to={}", urlencode(path_and_query));
    let signed_in = s.idp.sign_in(&url, &start, "alice").await.unwrap();
    let cookie = format!("kh_session={}", signed_in.cookies["kh_session"]);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = http.get(format!("{url}{path_and_query}")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let form = |decision: &str| {
        let mut f: Vec<(String, String)> = ["csrf", "redirect_uri", "state", "code_challenge"]
            .iter()
            .map(|n| (n.to_string(), hidden(&page, n)))
            .collect();
        f.push(("decision".into(), decision.into()));
        f
    };
    let r = http.post(format!("{url}/cli/authorize")).header("cookie", &cookie).form(&form("approve")).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 303);
    let callback = r.headers()["location"].to_str().unwrap().to_string();
    assert!(callback.starts_with("http://127.0.0.1:") && callback.contains("/callback?code="), "{callback}");

    // A callback with another state is refused, and the CLI keeps waiting for the right one.
    let (good, state) = callback.split_once("&state=").unwrap();
    let forged = format!("{good}&state={}", state.chars().rev().collect::<String>());
    let r = http.get(&forged).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http.get(callback.replace("/callback?", "/elsewhere?")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(login.try_wait().unwrap().is_none(), "the CLI still waits after a wrong state");

    // The browser follows the redirect: the CLI redeems the code with its verifier.
    let r = http.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Signed in"));
    let status = tokio::time::timeout(Duration::from_secs(60), login.wait()).await.unwrap().unwrap();
    let stderr = collect.await.unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("wrong state") && stderr.contains("Logged in to"), "{stderr}");
    assert!(!stderr.contains("confirm code"), "no device authorization: {stderr}");
    let token = stored(&s.config, &url).1.unwrap();
    assert!(token.starts_with("khc_") && !stderr.contains(&token));
    let code = callback.split("code=").nth(1).unwrap().split('&').next().unwrap();
    assert!(!stderr.contains(code), "the code is not printed");

    let (code, out, err) = run(&s.config, &["whoami"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice"), "{out}");

    // The code was for one use.
    let code = callback.split("code=").nth(1).unwrap().split('&').next().unwrap();
    let replay = serde_json::json!({ "code": code, "code_verifier": "a".repeat(64) });
    let r = http.post(format!("{url}/api/auth/cli/token")).json(&replay).send().await.unwrap();
    assert_eq!(r.status(), 400);
}
