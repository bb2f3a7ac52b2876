//! The real npm `oidc-provider` as the test IdP. [`OidcProvider::start`] writes fresh keys, starts
//! `node server.mjs` on a free loopback port and waits for discovery; drop kills it.
//!
//! The package is installed once into `$KUBEHERO_PEERS_DIR/oidc` by `scripts/test` (`npm ci`-style, pinned
//! to 9.13.3); this module only checks it is there and says how to install it when it is not.

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const SERVER_MJS: &str = include_str!("../oidc/server.mjs");
const GEN_KEYS_MJS: &str = include_str!("../oidc/gen-keys.mjs");
const PACKAGE_JSON: &str = include_str!("../oidc/package.json");

/// Where peers are installed: `$KUBEHERO_PEERS_DIR`, default `~/.cache/kubehero-peers`.
pub fn peers_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KUBEHERO_PEERS_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("kubehero-peers")
}

/// The directory holding `node_modules/oidc-provider`.
pub fn oidc_dir() -> PathBuf {
    peers_dir().join("oidc")
}

/// Installs the provider's npm package into the peers dir if missing (used by `scripts/test`).
pub fn install() -> anyhow::Result<()> {
    let dir = oidc_dir();
    std::fs::create_dir_all(&dir)?;
    write_if_changed(&dir.join("package.json"), PACKAGE_JSON)?;
    if dir.join("node_modules/oidc-provider/package.json").exists() {
        return Ok(());
    }
    let st = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .context("running npm (install Node.js and npm)")?;
    if !st.success() {
        bail!("npm install oidc-provider failed in {}", dir.display());
    }
    Ok(())
}

pub(crate) fn write_if_changed(path: &Path, content: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(content) {
        return Ok(());
    }
    // Write-then-rename so concurrent test processes never see a half-written file.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A free loopback port (bound then released), for a server a test starts afterwards.
///
/// Ports come from below the kernel's ephemeral range, one after another from a start that depends on the
/// process: the kernel never hands those to an outgoing connection or to a `bind(0)`, so another test running
/// at the same time cannot take the port between this pick and the server's own bind (that race once stopped a
/// replica of the HA test, whose ports are fixed before it starts). Falls back to `bind(0)` when the range is
/// unknown or too low.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const BASE: u32 = 10_000;
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    if low > BASE + 1_000 {
        let span = low - BASE;
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span.min(4_000) {
            let port = BASE + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            let port = u16::try_from(port)?;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running provider.
pub struct OidcProvider {
    pub issuer: String,
    pub port: u16,
    /// Base URLs of KubeHero servers whose dashboard may sign in here (their `/api/auth/callback` is a
    /// registered redirect URI of the `kubehero` and `kubehero-es` clients, `/login` a post-logout one).
    pub dashboards: Vec<String>,
    keys_file: PathBuf,
    _dir: tempfile::TempDir,
    child: Option<Child>,
    http: reqwest::Client,
}

/// Tokens from the authorization-code flow.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub id_token: String,
    pub access_token: String,
}

impl OidcProvider {
    /// Starts a provider on a free port with fresh keys.
    pub async fn start() -> anyhow::Result<OidcProvider> {
        Self::start_on(free_port()?).await
    }

    /// Starts a provider on `port` (a test may pick the port first to start the IdP *after* KubeHero).
    pub async fn start_on(port: u16) -> anyhow::Result<OidcProvider> {
        Self::start_for(port, &[]).await
    }

    /// Starts a provider on `port` that accepts sign-ins from the KubeHero dashboards at `dashboards`.
    pub async fn start_for(port: u16, dashboards: &[String]) -> anyhow::Result<OidcProvider> {
        let dir = tempfile::tempdir()?;
        let keys_file = dir.path().join("jwks.json");
        let mut p = OidcProvider {
            issuer: format!("http://127.0.0.1:{port}"),
            port,
            dashboards: dashboards.to_vec(),
            keys_file,
            _dir: dir,
            child: None,
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?,
        };
        p.generate_keys().await?;
        p.spawn().await?;
        Ok(p)
    }

    async fn generate_keys(&self) -> anyhow::Result<()> {
        let script = self._dir.path().join("gen-keys.mjs");
        std::fs::write(&script, GEN_KEYS_MJS)?;
        let st = Command::new("node").arg(&script).arg(&self.keys_file).status().await.context("running node")?;
        if !st.success() {
            bail!("generating IdP keys failed");
        }
        Ok(())
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let dir = oidc_dir();
        if !dir.join("node_modules/oidc-provider").exists() {
            bail!(
                "the npm oidc-provider is not installed in {}: run scripts/test (or `npm install` there)",
                dir.display()
            );
        }
        let script = dir.join("server.mjs");
        write_if_changed(&script, SERVER_MJS)?;
        let log = std::fs::File::create(self._dir.path().join("server.log"))?;
        let child = Command::new("node")
            .arg(&script)
            .env("PORT", self.port.to_string())
            .env("JWKS_FILE", &self.keys_file)
            .env("DASHBOARD_URLS", self.dashboards.join(","))
            .current_dir(&dir)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting node server.mjs")?;
        self.child = Some(child);
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    let log = std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default();
                    bail!("oidc-provider exited ({st}): {log}");
                }
            }
            if Instant::now() > deadline {
                bail!("oidc-provider did not answer discovery within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the provider (the port is then closed: "IdP down").
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    /// Restarts on the same port; with `rotate` the signing keys (and so the kids) are new.
    pub async fn restart(&mut self, rotate: bool) -> anyhow::Result<()> {
        self.stop().await;
        if rotate {
            self.generate_keys().await?;
        }
        self.spawn().await
    }

    /// A signer holding the provider's own ES256 key, for benches that need tens of thousands of distinct,
    /// valid tokens faster than the provider can issue them (same key, same `kid`, same issuer).
    pub fn es256_minter(&self) -> anyhow::Result<Es256Minter> {
        let jwks: serde_json::Value = serde_json::from_slice(&std::fs::read(&self.keys_file)?)?;
        let jwk = jwks["keys"]
            .as_array()
            .and_then(|k| k.iter().find(|k| k["alg"] == "ES256"))
            .ok_or_else(|| anyhow!("no ES256 key in the provider's key set"))?;
        let b64 = |name: &str| -> anyhow::Result<Vec<u8>> {
            let v = jwk[name].as_str().ok_or_else(|| anyhow!("ES256 JWK without {name}"))?;
            Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v)?)
        };
        let public = [vec![4u8], b64("x")?, b64("y")?].concat();
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &b64("d")?,
            &public,
            &rng,
        )
        .map_err(|e| anyhow!("ES256 key rejected: {e}"))?;
        let kid = jwk["kid"].as_str().unwrap_or_default().to_string();
        Ok(Es256Minter { issuer: self.issuer.clone(), kid, key, rng })
    }

    /// How many times `/jwks` was fetched since this process started.
    pub async fn jwks_hits(&self) -> anyhow::Result<u64> {
        let v: serde_json::Value =
            self.http.get(format!("{}/__test/jwks-hits", self.issuer)).send().await?.json().await?;
        v["hits"].as_u64().ok_or_else(|| anyhow!("bad jwks-hits answer"))
    }

    /// A JWT access token from the client-credentials grant (`aud` = kubehero; RS256 for client
    /// `kubehero`, ES256 for `kubehero-es`).
    pub async fn client_credentials(&self, client_id: &str, secret: &str) -> anyhow::Result<String> {
        let r: serde_json::Value = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "kube")])
            .send()
            .await?
            .json()
            .await?;
        r["access_token"].as_str().map(str::to_string).ok_or_else(|| anyhow!("no access_token in {r}"))
    }

    /// Drives the authorization-code flow with PKCE over HTTP, exactly as a browser would through the
    /// provider's devInteractions login and consent pages, and exchanges the code.
    pub async fn authcode(&self, login: &str, client_id: &str, secret: &str) -> anyhow::Result<TokenSet> {
        let redirect = "http://127.0.0.1:8000/callback";
        let verifier = random_b64(48)?;
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
        let mut jar = Jar::default();
        let auth = format!(
            "{}/auth?client_id={client_id}&response_type=code&scope=openid%20email%20profile%20groups&prompt=consent\
             &redirect_uri={redirect}&state=st123&nonce=n123&code_challenge={challenge}&code_challenge_method=S256",
            self.issuer
        );
        let mut loc = jar.go(&self.http, &self.issuer, reqwest::Method::GET, &auth, None).await?;
        loc = self.interact(&mut jar, &loc, login).await?;
        let code = loc
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("code="))
            .ok_or_else(|| anyhow!("no code in the final redirect {loc}"))?
            .to_string();
        let r: serde_json::Value = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth(client_id, Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("code_verifier", &verifier),
            ])
            .send()
            .await?
            .json()
            .await?;
        Ok(TokenSet {
            id_token: r["id_token"].as_str().ok_or_else(|| anyhow!("no id_token in {r}"))?.to_string(),
            access_token: r["access_token"].as_str().unwrap_or_default().to_string(),
        })
    }
}

impl OidcProvider {
    /// From the provider's first interaction page: submits devInteractions' login form as `login` and the
    /// consent form, returning where the provider then redirects (the client's redirect URI with a code).
    async fn interact(&self, jar: &mut Jar, interaction: &str, login: &str) -> anyhow::Result<String> {
        let form = [("prompt", "login"), ("login", login), ("password", "x")];
        let mut loc = jar.go(&self.http, &self.issuer, reqwest::Method::POST, interaction, Some(&form)).await?;
        loc = jar.go(&self.http, &self.issuer, reqwest::Method::GET, &loc, None).await?;
        loc = jar.go(&self.http, &self.issuer, reqwest::Method::POST, &loc, Some(&[("prompt", "consent")])).await?;
        jar.go(&self.http, &self.issuer, reqwest::Method::GET, &loc, None).await
    }
}

/// The outcome of a dashboard sign-in driven over HTTP.
#[derive(Debug, Clone)]
pub struct SignIn {
    /// Cookies KubeHero set (`kh_session`, …), by name.
    pub cookies: HashMap<String, String>,
    /// Where KubeHero sent the browser after the callback.
    pub location: String,
}

impl OidcProvider {
    /// Signs `login` in to the KubeHero dashboard at `kubehero` the way a browser does: `start` (e.g.
    /// `/login?return_to=/`) redirects here, the provider's devInteractions login and consent pages are
    /// submitted, and the redirect back to `/api/auth/callback` is followed once.
    pub async fn sign_in(&self, kubehero: &str, start: &str, login: &str) -> anyhow::Result<SignIn> {
        let mut jar = Jar::default();
        let mut loc = jar.go(&self.http, kubehero, reqwest::Method::GET, start, None).await?;
        loc = jar.go(&self.http, &self.issuer, reqwest::Method::GET, &loc, None).await?;
        loc = self.interact(&mut jar, &loc, login).await?;
        if !loc.starts_with(kubehero) {
            bail!("the provider did not send the browser back to KubeHero: {loc}");
        }
        let location = jar.go(&self.http, kubehero, reqwest::Method::GET, &loc, None).await?;
        Ok(SignIn { cookies: jar.0, location })
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

fn random_b64(n: usize) -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut b).map_err(|_| anyhow!("no randomness"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// A minimal cookie jar for driving the provider's pages.
#[derive(Default)]
struct Jar(HashMap<String, String>);

impl Jar {
    /// Sends one request with the jar's cookies, stores new cookies, returns the absolute redirect target.
    async fn go(
        &mut self,
        http: &reqwest::Client,
        base: &str,
        method: reqwest::Method,
        url: &str,
        form: Option<&[(&str, &str)]>,
    ) -> anyhow::Result<String> {
        let url = if url.starts_with('/') { format!("{base}{url}") } else { url.to_string() };
        let cookie = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let mut rb = http.request(method, &url).header("cookie", cookie);
        if let Some(f) = form {
            rb = rb.form(f);
        }
        let r = rb.send().await?;
        for sc in r.headers().get_all("set-cookie") {
            if let Some((kv, _)) = sc.to_str().unwrap_or_default().split_once(';') {
                if let Some((k, v)) = kv.split_once('=') {
                    self.0.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        let status = r.status();
        let loc = r.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_string);
        match loc {
            Some(l) if l.starts_with('/') => Ok(format!("{base}{l}")),
            Some(l) => Ok(l),
            None => bail!("expected a redirect from {url}, got {status}: {}", r.text().await.unwrap_or_default()),
        }
    }
}

/// Signs ES256 JWTs with an [`OidcProvider`]'s own key (see [`OidcProvider::es256_minter`]).
pub struct Es256Minter {
    issuer: String,
    kid: String,
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl Es256Minter {
    /// The uncompressed P-256 public key (for a raw verification baseline).
    pub fn public_key(&self) -> Vec<u8> {
        use ring::signature::KeyPair;
        self.key.public_key().as_ref().to_vec()
    }

    /// A token for `sub` with audience `aud`, valid for an hour, unique by its `jti`.
    pub fn mint(&self, sub: &str, aud: &str, jti: u64) -> anyhow::Result<String> {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let header = serde_json::json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid });
        let claims = serde_json::json!({
            "iss": self.issuer, "sub": sub, "aud": aud, "iat": now, "exp": now + 3600, "jti": jti.to_string(),
        });
        let input = format!("{}.{}", b64(&serde_json::to_vec(&header)?), b64(&serde_json::to_vec(&claims)?));
        let sig = self.key.sign(&self.rng, input.as_bytes()).map_err(|_| anyhow!("signing failed"))?;
        Ok(format!("{input}.{}", b64(sig.as_ref())))
    }
}
