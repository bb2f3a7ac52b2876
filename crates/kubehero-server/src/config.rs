//! Control-plane configuration: seed 001's seven environment variables, the `KUBEHERO_*` settings, and an
//! optional TOML file (`KUBEHERO_CONFIG`) for what env vars express badly (several issuers, per-issuer claim
//! names and prefixes, scoped bindings). Environment overrides the file. A bad value stops start-up with a
//! [`ConfigError`] that names the variable and the fix.
//!
//! The environment is read through the [`Env`] trait so tests pass a map and never call `set_var`.

use kubehero_authn::{IssuerConfig, Secret, StaticApiKeys};
use kubehero_core::{parse_group_roles, Binding, BindingSubject, Role, Scope};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where configuration values come from.
pub trait Env {
    /// The value of `name`, if set (an empty value counts as unset).
    fn var(&self, name: &str) -> Option<String>;
    /// Every variable name, for the unknown-`KUBEHERO_*` warning.
    fn names(&self) -> Vec<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn names(&self) -> Vec<String> {
        std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).collect()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).cloned()
    }
    fn names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

/// One documented setting: its variable, what it does, its default.
pub struct Setting {
    pub name: &'static str,
    pub help: &'static str,
    pub default: &'static str,
}

/// Every setting, in the order `--help` and the README list them.
pub const SETTINGS: &[Setting] = &[
    Setting { name: "OIDC_ISSUER_URL", help: "Issuer URL of the identity provider; discovery and JWKS are fetched from it. https:// required except on loopback.", default: "unset: no JWT issuer" },
    Setting { name: "OIDC_AUDIENCE", help: "Audience the tokens must carry (comma-separated for several). Empty skips the aud check (not recommended).", default: "unset" },
    Setting { name: "KUBEHERO_GROUP_ROLES", help: "Comma-separated group=role pairs mapping groups claim values to viewer, member, auditor, admin, owner.", default: "unset: everyone is viewer" },
    Setting { name: "KUBEHERO_API_KEYS", help: "Static API keys for service accounts: comma-separated <token> or <token>:<role> (default role viewer). Kept as SHA-256 only.", default: "unset" },
    Setting { name: "KUBEHERO_SCIM_TOKEN", help: "Bearer token of SCIM 2.0 provisioning at <public URL>/scim/v2 (at least 32 characters). Empty or unset: SCIM off (404), no directory checks.", default: "unset: SCIM off" },
    Setting { name: "KUBEHERO_WORKOS_WEBHOOK_SECRET", help: "Signing secret of the WorkOS Directory Sync webhook (POST <public URL>/webhooks/workos): signed dsync.* events create, update, deactivate and delete people and groups like the matching SCIM operations. Unset: the webhook does not exist (404).", default: "unset: off" },
    Setting { name: "KUBEHERO_REQUIRE_AUTH", help: "true: requests without a credential get 401. false (open mode): they are an anonymous viewer.", default: "false" },
    Setting { name: "AUDIT_HMAC_KEY", help: "HMAC-SHA256 key that chains audit rows (at least 32 characters). Required with KUBEHERO_REQUIRE_AUTH=true; in open mode one is generated into the data dir.", default: "unset" },
    Setting { name: "KUBEHERO_LISTEN", help: "Address and port to listen on.", default: "127.0.0.1:8080" },
    Setting { name: "KUBEHERO_AGENT_LISTEN", help: "Address of the agent listener (TLS 1.3, client certificates): cluster agents join, renew and hold their tunnels here. `off` disables it.", default: "127.0.0.1:8443" },
    Setting { name: "KUBEHERO_PEER_URL", help: "https://HOST:PORT at which the other replicas reach this one's agent listener, for kubectl requests whose cluster's agent holds its tunnel here (e.g. https://$(POD_IP):8443). Needed with several replicas when the agent listener is bound to 0.0.0.0.", default: "https://<agent listener address> when bound to one IP; else unset" },
    Setting { name: "KUBEHERO_AGENT_SERVER_NAMES", help: "Comma-separated DNS names and IPs that agents use to reach the agent listener; its certificate (signed by the agent CA) names them.", default: "localhost,127.0.0.1,::1 and the host of KUBEHERO_PUBLIC_URL" },
    Setting { name: "KUBEHERO_AGENT_CA_CERT", help: "PEM file of the agent CA (e.g. from cert-manager; several certificates = rollover: the first signs, all are trusted). Re-read when it changes. Unset: a CA built into the store.", default: "unset" },
    Setting { name: "KUBEHERO_AGENT_CA_KEY", help: "PEM file of the key of the first certificate in KUBEHERO_AGENT_CA_CERT.", default: "unset" },
    Setting { name: "KUBEHERO_AGENT_CERT_TTL_SECS", help: "Lifetime of agent client certificates; agents renew at about two thirds of it.", default: "604800 (7 days)" },
    Setting { name: "KUBEHERO_CLUSTER_TOKEN_TTL_SECS", help: "Lifetime of the per-cluster access tokens `kubehero token` hands kubectl.", default: "600" },
    Setting { name: "KUBEHERO_ISSUER_KEY_LEAD_SECS", help: "How long a new signing key of KubeHero's own OIDC issuer is published (in its JWKS) before it signs, after `POST /api/v1/issuer-keys/rotate`; a replaced key stays published for a day.", default: "600" },
    Setting { name: "KUBEHERO_ISSUER_RSA_KEYS", help: "Comma-separated RSA private key PEM files for RS256 direct tokens (clusters labelled kubehero.io/signing-alg=RS256); the first signs, the others stay published. Make one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`.", default: "unset: ES256 only" },
    Setting { name: "KUBEHERO_DATA_DIR", help: "Directory for the embedded SQLite database and local state.", default: "./kubehero-data" },
    Setting { name: "KUBEHERO_DATABASE_URL", help: "sqlite:PATH (embedded) or postgres://USER:PASSWORD@HOST:PORT/DB (several replicas).", default: "sqlite:<data dir>/kubehero.db" },
    Setting { name: "KUBEHERO_HEADER_TIMEOUT_SECS", help: "Seconds a client has to send a request's headers; the same bound closes idle keep-alive connections. Streaming responses (watches) are not cut by it.", default: "10" },
    Setting { name: "KUBEHERO_MAX_CONNECTIONS", help: "Most client connections open at once; at the cap the oldest connection without a complete first request is closed to make room, else new ones wait (a log line and kubehero_connection_limit_reached_total).", default: "10000, or 3/4 of the open-files limit when lower" },
    Setting { name: "KUBEHERO_TRUSTED_PROXIES", help: "Comma-separated CIDRs of load balancers/ingresses whose X-Forwarded-For names the client. Used by every per-address rule (SCIM lockout, sign-in rate limits) and the audit source. Unset: the TCP peer is the client.", default: "unset" },
    Setting { name: "KUBEHERO_TLS_CERT", help: "PEM certificate chain; with KUBEHERO_TLS_KEY the server speaks HTTPS (rustls).", default: "unset: plain HTTP" },
    Setting { name: "KUBEHERO_TLS_KEY", help: "PEM private key for KUBEHERO_TLS_CERT.", default: "unset" },
    Setting { name: "KUBEHERO_CONFIG", help: "TOML file for several issuers, per-issuer claims, prefixes and group maps, and scoped bindings.", default: "unset" },
    Setting { name: "KUBEHERO_AUDIT_PREVIOUS_KEYS", help: "Earlier AUDIT_HMAC_KEY values, comma-separated, so rows written before a key rotation still verify.", default: "unset" },
    Setting { name: "KUBEHERO_AUDIT_SIGNING_KEY", help: "Ed25519 PKCS#8 (DER) file that signs audit checkpoints; created if missing. Keep it apart from AUDIT_HMAC_KEY.", default: "<data dir>/audit-signing.pk8" },
    Setting { name: "KUBEHERO_AUDIT_CHECKPOINT_SECS", help: "Seconds between signed checkpoints of the audit chain head (also written at shutdown).", default: "60" },
    Setting { name: "KUBEHERO_AUDIT_READS", help: "How plain reads (GET/HEAD that succeed and change nothing) are audited: durable (answered after their row is on disk), async (in the same chain, not awaited: a crash may lose the reads of the last flush), off (not recorded; denied reads still are).", default: "async" },
    Setting { name: "KUBEHERO_AUDIT_FORWARD", help: "Audit sinks the server forwards to, comma-separated: udp://, tcp://, tls:// (syslog), https:// (webhook), s3://bucket/prefix.", default: "unset: no forwarding" },
    Setting { name: "KUBEHERO_AUDIT_S3_ENDPOINT", help: "S3 endpoint for s3:// sinks on S3-compatible stores (path-style). Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.", default: "AWS" },
    Setting { name: "KUBEHERO_AUDIT_WEBHOOK_SECRET", help: "Secret of webhook batch signatures (X-KubeHero-Signature).", default: "derived from AUDIT_HMAC_KEY" },
    Setting { name: "KUBEHERO_PUBLIC_URL", help: "The URL people reach the control plane at; the dashboard's redirect URI is <it>/api/auth/callback. https:// required except on loopback.", default: "http://<KUBEHERO_LISTEN>" },
    Setting { name: "KUBEHERO_OIDC_CLIENT_ID", help: "OIDC client id of the dashboard and CLI login (authorization code flow with PKCE). Unset: no browser login.", default: "unset" },
    Setting { name: "KUBEHERO_OIDC_CLIENT_SECRET", help: "Client secret for KUBEHERO_OIDC_CLIENT_ID (unset for a public client).", default: "unset" },
    Setting { name: "KUBEHERO_LOG", help: "Log filter (tracing EnvFilter syntax), e.g. info or kubehero_authn=debug.", default: "info" },
    Setting { name: "KUBEHERO_LOG_FORMAT", help: "text or json.", default: "text" },
];

/// Names of other tools' variables that share our prefix and are not ours to warn about.
const KNOWN_EXTRA: &[&str] = &["KUBEHERO_PEERS_DIR", "KUBEHERO_TEST_LOG", "KUBEHERO_PG_BIN", "KUBEHERO_TOKEN"];

/// A configuration error that stops start-up. Its message names the setting and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting has a value that cannot be used.
    #[error("{name}: {problem}. Fix: {fix}")]
    Invalid { name: String, problem: String, fix: String },
    /// The config file could not be read or parsed.
    #[error("KUBEHERO_CONFIG ({path}): {problem}. Fix: {fix}")]
    File { path: String, problem: String, fix: String },
}

/// A whole number setting within `range`, or `default` when unset.
fn number(
    env: &dyn Env,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    fix: &str,
) -> Result<u64, ConfigError> {
    let Some(v) = env.var(name) else { return Ok(default) };
    match v.trim().parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(invalid(
            name,
            format!("{v:?} is not a whole number between {} and {}", range.start(), range.end()),
            fix,
        )),
    }
}

fn invalid(name: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name: name.to_string(), problem: problem.into(), fix: fix.into() }
}

/// The config file (`KUBEHERO_CONFIG`), TOML. Unknown keys are errors so typos do not silently do nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Same as `KUBEHERO_LISTEN`.
    pub listen: Option<String>,
    /// Same as `KUBEHERO_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// Same as `KUBEHERO_DATABASE_URL`.
    pub database_url: Option<String>,
    /// Same as `KUBEHERO_REQUIRE_AUTH`.
    pub require_auth: Option<bool>,
    /// Same as `KUBEHERO_GROUP_ROLES`, as a table: group = "role". Applies to groups from every issuer.
    #[serde(default)]
    pub group_roles: BTreeMap<String, String>,
    /// Capacity of the verified-token cache (entries). Default 100000; 0 disables it.
    pub token_cache_size: Option<usize>,
    /// The identity providers whose JWTs are accepted.
    #[serde(default)]
    pub issuers: Vec<FileIssuer>,
    /// Role bindings, optionally scoped to a cluster glob or cluster + namespace.
    #[serde(default)]
    pub bindings: Vec<FileBinding>,
}

/// One issuer in the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileIssuer {
    /// Issuer URL, exactly as the IdP writes it in `iss`.
    pub issuer: String,
    /// Accepted audiences; empty skips the check.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Claim holding the username (principal `sub`). Default `sub`.
    pub username_claim: Option<String>,
    /// Claim holding the groups. Default `groups`.
    pub groups_claim: Option<String>,
    /// Prefix added to every group from this issuer (e.g. `okta:`), so issuers cannot collide.
    pub group_prefix: Option<String>,
    /// group = "role" for this issuer's (prefixed) groups.
    #[serde(default)]
    pub group_roles: BTreeMap<String, String>,
    /// Minimum seconds between unknown-`kid` JWKS refetches. Default 30.
    pub jwks_refetch_cooldown_secs: Option<u64>,
    /// Seconds the JWKS is cached. Default 3600.
    pub jwks_ttl_secs: Option<u64>,
    /// Upper bound of the retry backoff while the IdP is unreachable. Default 30.
    pub retry_max_secs: Option<u64>,
}

/// How long a plain read waits for its audit row (`KUBEHERO_AUDIT_READS`). Every other row — mutations,
/// denials, refused credentials, sign-ins, credential changes, SCIM writes, reads of the audit log — is always
/// durable before the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditReads {
    /// Answered once the row is durable, like every other row.
    Durable,
    /// Recorded in the same chain through the same writer, not awaited (back-pressure when its queue is full).
    Async,
    /// Not recorded.
    Off,
}

impl AuditReads {
    pub fn parse(s: &str) -> Option<AuditReads> {
        match s {
            "durable" => Some(AuditReads::Durable),
            "async" => Some(AuditReads::Async),
            "off" => Some(AuditReads::Off),
            _ => None,
        }
    }
}

/// One binding in the config file: exactly one of `group` or `user`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBinding {
    pub group: Option<String>,
    /// A person's `sub` (with `issuer`), `<issuer>#<sub>`, an email (any issuer's person with that `email`
    /// claim), or an API key id.
    pub user: Option<String>,
    /// The issuer whose `user` this is: two issuers may both issue the same `sub`.
    pub issuer: Option<String>,
    pub role: String,
    /// Cluster-name glob (`*`, `?`).
    pub cluster: Option<String>,
    /// Namespace within the cluster; requires `cluster`.
    pub namespace: Option<String>,
}

/// TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// An issuer with its own group map.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    pub verifier: IssuerConfig,
    /// group (prefixed) → roles, this issuer only.
    pub group_roles: Vec<(String, Role)>,
}

/// The OIDC client KubeHero signs people in with (dashboard and CLI login).
#[derive(Debug, Clone)]
pub struct LoginClient {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// Where people reach the control plane, without a trailing slash.
    pub public_url: String,
}

/// The validated configuration of `kubehero serve` and of the CLI commands that open the database.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub tls: Option<TlsFiles>,
    pub require_auth: bool,
    pub issuers: Vec<IssuerSettings>,
    /// Group → role pairs that apply to every issuer (`KUBEHERO_GROUP_ROLES` and the file's `group_roles`).
    pub group_roles: Vec<(String, Role)>,
    /// Scoped and user bindings from the file.
    pub bindings: Vec<Binding>,
    pub api_keys: StaticApiKeys,
    /// `KUBEHERO_SCIM_TOKEN`: the SCIM endpoint's bearer token; `None` turns SCIM off.
    pub scim_token: Option<Secret>,
    /// `KUBEHERO_WORKOS_WEBHOOK_SECRET`: the WorkOS Directory Sync webhook's signing secret; `None` turns the
    /// webhook off.
    pub workos_webhook_secret: Option<Secret>,
    /// `KUBEHERO_PUBLIC_URL` when set (without a trailing slash).
    pub public_url: Option<String>,
    pub audit_hmac_key: Option<Secret>,
    /// Earlier audit HMAC keys, for verification only.
    pub audit_previous_keys: Vec<Secret>,
    /// The checkpoint signing key file.
    pub audit_signing_key: PathBuf,
    pub audit_checkpoint_every: std::time::Duration,
    /// `KUBEHERO_AUDIT_READS`.
    pub audit_reads: AuditReads,
    /// Sinks of the in-process forwarder (`KUBEHERO_AUDIT_FORWARD`), validated at start-up.
    pub audit_forward: Vec<kubehero_audit::forward::SinkSpec>,
    /// Credentials and secrets of those sinks (`AWS_*`, `KUBEHERO_AUDIT_S3_ENDPOINT`, webhook secret).
    pub audit_forward_options: kubehero_audit::forward::ForwardOptions,
    pub token_cache_size: usize,
    /// The listener's header timeout and connection cap.
    pub limits: crate::listener::Limits,
    /// The agent listener and CA.
    pub agents: AgentSettings,
    pub trusted_proxies: crate::net::TrustedProxies,
    /// The dashboard/CLI login client, when configured.
    pub login: Option<LoginClient>,
    /// Non-fatal findings (unknown variables) to log once the logger is up.
    pub warnings: Vec<String>,
}

impl ServerConfig {
    /// Reads and validates the configuration from `env` (and the file it names).
    pub fn load(env: &dyn Env) -> Result<ServerConfig, ConfigError> {
        let file = match env.var("KUBEHERO_CONFIG") {
            Some(path) => read_file(&path)?,
            None => FileConfig::default(),
        };
        Self::from_parts(env, file)
    }

    /// Builds the configuration from env and an already parsed file.
    pub fn from_parts(env: &dyn Env, file: FileConfig) -> Result<ServerConfig, ConfigError> {
        let mut warnings = Vec::new();
        for name in env.names() {
            if name.starts_with("KUBEHERO_")
                && !SETTINGS.iter().any(|s| s.name == name)
                && !KNOWN_EXTRA.contains(&name.as_str())
            {
                warnings.push(format!("unknown setting {name} is ignored; see `kubehero serve --help`"));
            }
        }

        let listen_s = env.var("KUBEHERO_LISTEN").or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            invalid("KUBEHERO_LISTEN", format!("{listen_s:?} is not an address"), "use IP:PORT, e.g. 0.0.0.0:8080")
        })?;

        let data_dir =
            env.var("KUBEHERO_DATA_DIR").map(PathBuf::from).or(file.data_dir).unwrap_or_else(|| "kubehero-data".into());
        let database_url = env
            .var("KUBEHERO_DATABASE_URL")
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite:{}", data_dir.join("kubehero.db").display()));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "KUBEHERO_DATABASE_URL",
                format!("unsupported scheme in {:?}", kubehero_store::redact_url(&database_url)),
                "use sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB",
            ));
        }

        let tls = match (env.var("KUBEHERO_TLS_CERT"), env.var("KUBEHERO_TLS_KEY")) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.into(), key: key.into() }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "KUBEHERO_TLS_KEY",
                    "missing while KUBEHERO_TLS_CERT is set",
                    "set both, or neither for plain HTTP",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "KUBEHERO_TLS_CERT",
                    "missing while KUBEHERO_TLS_KEY is set",
                    "set both, or neither for plain HTTP",
                ))
            }
        };

        let require_auth = match env.var("KUBEHERO_REQUIRE_AUTH") {
            Some(v) => parse_bool(&v).ok_or_else(|| {
                invalid("KUBEHERO_REQUIRE_AUTH", format!("{v:?} is not a boolean"), "use true or false")
            })?,
            None => file.require_auth.unwrap_or(false),
        };

        let mut group_roles = Vec::new();
        for (g, r) in &file.group_roles {
            let role = r.parse().map_err(|e| {
                file_err(format!("group_roles.{g:?}: {e}"), "use one of viewer, member, auditor, admin, owner")
            })?;
            group_roles.push((g.clone(), role));
        }
        if let Some(v) = env.var("KUBEHERO_GROUP_ROLES") {
            let parsed = parse_group_roles(&v).map_err(|e| {
                invalid(
                    "KUBEHERO_GROUP_ROLES",
                    e.to_string(),
                    "use comma-separated group=role pairs, e.g. kubehero-admins=admin,kubehero-viewers=viewer",
                )
            })?;
            // Env overrides the file: a group named in the env var loses its file roles.
            group_roles.retain(|(g, _)| !parsed.iter().any(|(pg, _)| pg == g));
            group_roles.extend(parsed);
        }

        let mut issuers = load_issuers(env, &file.issuers)?;
        let bindings = load_bindings(&file.bindings)?;

        let api_keys = match env.var("KUBEHERO_API_KEYS") {
            Some(v) => StaticApiKeys::parse(&v).map_err(|e| {
                invalid(
                    "KUBEHERO_API_KEYS",
                    e.to_string(),
                    "use comma-separated <token> or <token>:<role> entries, tokens of at least 16 characters",
                )
            })?,
            None => StaticApiKeys::default(),
        };

        let scim_token = env.var("KUBEHERO_SCIM_TOKEN").filter(|t| !t.is_empty()).map(Secret::new);
        if scim_token.as_ref().is_some_and(|t| t.expose().len() < 32) {
            return Err(invalid(
                "KUBEHERO_SCIM_TOKEN",
                "shorter than 32 characters",
                "generate one with `openssl rand -hex 32` (or leave it empty to turn SCIM off)",
            ));
        }

        let workos_webhook_secret =
            env.var("KUBEHERO_WORKOS_WEBHOOK_SECRET").filter(|t| !t.trim().is_empty()).map(|t| Secret::new(t.trim()));

        let audit_hmac_key = env.var("AUDIT_HMAC_KEY").map(Secret::new);
        if let Some(k) = &audit_hmac_key {
            if k.expose().len() < 32 {
                return Err(invalid(
                    "AUDIT_HMAC_KEY",
                    "shorter than 32 characters",
                    "generate one with `openssl rand -hex 32`",
                ));
            }
        }
        if require_auth && audit_hmac_key.is_none() {
            return Err(invalid(
                "AUDIT_HMAC_KEY",
                "unset while KUBEHERO_REQUIRE_AUTH=true: the audit log cannot be chained with a key you control",
                "set it to a secret of at least 32 characters, e.g. `openssl rand -hex 32`, shared by every replica",
            ));
        }
        let audit_previous_keys: Vec<Secret> = env
            .var("KUBEHERO_AUDIT_PREVIOUS_KEYS")
            .map(|v| {
                v.split(',').map(str::trim).filter(|k| !k.is_empty()).map(|k| Secret::new(k.to_string())).collect()
            })
            .unwrap_or_default();
        if audit_previous_keys.iter().any(|k| k.expose().len() < 32) {
            return Err(invalid(
                "KUBEHERO_AUDIT_PREVIOUS_KEYS",
                "an entry is shorter than 32 characters",
                "list the exact earlier AUDIT_HMAC_KEY values, comma-separated",
            ));
        }
        let audit_signing_key = env
            .var("KUBEHERO_AUDIT_SIGNING_KEY")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("audit-signing.pk8"));
        let audit_checkpoint_every = std::time::Duration::from_secs(number(
            env,
            "KUBEHERO_AUDIT_CHECKPOINT_SECS",
            60,
            1..=3600,
            "use e.g. 60 (a checkpoint at least once a minute)",
        )?);
        let trusted_proxies =
            crate::net::TrustedProxies::parse(&env.var("KUBEHERO_TRUSTED_PROXIES").unwrap_or_default())
                .map_err(|p| invalid("KUBEHERO_TRUSTED_PROXIES", p, "use CIDRs, e.g. 10.0.0.0/8,192.168.0.10"))?;
        let limits = crate::listener::Limits {
            header_timeout: std::time::Duration::from_secs(number(
                env,
                "KUBEHERO_HEADER_TIMEOUT_SECS",
                10,
                1..=300,
                "use e.g. 10",
            )?),
            max_connections: usize::try_from(number(
                env,
                "KUBEHERO_MAX_CONNECTIONS",
                crate::listener::Limits::default_max_connections() as u64,
                16..=1_000_000,
                "use e.g. 10000, and raise the open-files limit (ulimit -n) above it",
            )?)
            .unwrap_or(usize::MAX),
        };
        let agents = AgentSettings::load(env)?;
        let audit_reads = match env.var("KUBEHERO_AUDIT_READS") {
            None => AuditReads::Async,
            Some(v) => AuditReads::parse(v.trim()).ok_or_else(|| {
                invalid("KUBEHERO_AUDIT_READS", format!("{v:?} is not a level"), "use durable, async or off")
            })?,
        };
        let mut audit_forward = Vec::new();
        for url in env.var("KUBEHERO_AUDIT_FORWARD").unwrap_or_default().split(',').map(str::trim) {
            if url.is_empty() {
                continue;
            }
            let spec = kubehero_audit::forward::SinkSpec::parse(url).map_err(|e| {
                invalid(
                    "KUBEHERO_AUDIT_FORWARD",
                    e.to_string(),
                    "use comma-separated udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT, https://URL, s3://BUCKET/PREFIX",
                )
            })?;
            audit_forward.push(spec);
        }
        let audit_forward_options = kubehero_audit::forward::ForwardOptions::from_env(&|n| env.var(n));

        let public_url = env.var("KUBEHERO_PUBLIC_URL").map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &public_url {
            let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"].iter().any(|p| u.starts_with(p));
            if !(u.starts_with("https://") || loopback) || u.contains('?') || u.contains('#') {
                return Err(invalid(
                    "KUBEHERO_PUBLIC_URL",
                    format!("{u:?} is not an https:// URL without query or fragment"),
                    "set the URL people open, e.g. https://kubehero.example.com (http:// only on loopback)",
                ));
            }
        }
        let login = match env.var("KUBEHERO_OIDC_CLIENT_ID").filter(|c| !c.is_empty()) {
            None => None,
            Some(client_id) => {
                if issuers.is_empty() {
                    return Err(invalid(
                        "KUBEHERO_OIDC_CLIENT_ID",
                        "set, but no issuer is configured to sign in with",
                        "set OIDC_ISSUER_URL (or issuers in KUBEHERO_CONFIG)",
                    ));
                }
                // The dashboard's id_tokens are issued to the client id: accept that audience too (as a
                // Kubernetes API server does for OIDC id_tokens), where audiences are checked at all.
                for i in &mut issuers {
                    let aud = &mut i.verifier.audiences;
                    if !aud.is_empty() && !aud.contains(&client_id) {
                        aud.push(client_id.clone());
                    }
                }
                Some(LoginClient {
                    client_id,
                    client_secret: env.var("KUBEHERO_OIDC_CLIENT_SECRET").filter(|s| !s.is_empty()).map(Secret::new),
                    public_url: public_url.clone().unwrap_or_else(|| format!("http://{listen}")),
                })
            }
        };

        Ok(ServerConfig {
            login,
            listen,
            data_dir,
            database_url,
            tls,
            require_auth,
            issuers,
            group_roles,
            bindings,
            api_keys,
            scim_token,
            workos_webhook_secret,
            public_url,
            audit_hmac_key,
            audit_previous_keys,
            audit_signing_key,
            audit_checkpoint_every,
            limits,
            trusted_proxies,
            audit_reads,
            agents,
            audit_forward,
            audit_forward_options,
            token_cache_size: file.token_cache_size.unwrap_or(100_000),
            warnings,
        })
    }
}

fn file_err(problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::File { path: "config file".into(), problem: problem.into(), fix: fix.into() }
}

fn read_file(path: &str) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.into(),
        problem: format!("cannot read it: {e}"),
        fix: "point KUBEHERO_CONFIG at a readable TOML file".into(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.into(),
        problem: e.message().to_string(),
        fix: "see the configuration section of the README for the file's keys".into(),
    })
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn load_issuers(env: &dyn Env, file: &[FileIssuer]) -> Result<Vec<IssuerSettings>, ConfigError> {
    let mut out: Vec<IssuerSettings> = Vec::new();
    for (i, f) in file.iter().enumerate() {
        let mut c = IssuerConfig::new(f.issuer.clone());
        c.audiences = f.audiences.clone();
        if let Some(v) = &f.username_claim {
            c.username_claim = v.clone();
        }
        if let Some(v) = &f.groups_claim {
            c.groups_claim = v.clone();
        }
        if let Some(v) = &f.group_prefix {
            c.group_prefix = v.clone();
        }
        if let Some(v) = f.jwks_refetch_cooldown_secs {
            c.refetch_cooldown = Duration::from_secs(v);
        }
        if let Some(v) = f.jwks_ttl_secs {
            c.jwks_ttl = Duration::from_secs(v.max(1));
        }
        if let Some(v) = f.retry_max_secs {
            c.retry_max = Duration::from_secs(v.max(1));
        }
        c.validate().map_err(|e| {
            file_err(
                format!("issuers[{i}] ({}): {e}", f.issuer),
                "use https://, or http:// on 127.0.0.1/localhost for development",
            )
        })?;
        let mut group_roles = Vec::new();
        for (g, r) in &f.group_roles {
            let role = r.parse().map_err(|e| {
                file_err(
                    format!("issuers[{i}].group_roles.{g:?}: {e}"),
                    "use one of viewer, member, auditor, admin, owner",
                )
            })?;
            group_roles.push((g.clone(), role));
        }
        if out.iter().any(|o| o.verifier.issuer == c.issuer) {
            return Err(file_err(
                format!("issuers[{i}]: issuer {} is listed twice", c.issuer),
                "list each issuer once",
            ));
        }
        out.push(IssuerSettings { verifier: c, group_roles });
    }
    if let Some(url) = env.var("OIDC_ISSUER_URL") {
        let audiences: Vec<String> = env
            .var("OIDC_AUDIENCE")
            .map(|a| a.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        if let Some(existing) = out.iter_mut().find(|o| o.verifier.issuer == url) {
            // Env overrides the file for the same issuer.
            if env.var("OIDC_AUDIENCE").is_some() {
                existing.verifier.audiences = audiences;
            }
        } else {
            let mut c = IssuerConfig::new(url.clone());
            c.audiences = audiences;
            c.validate().map_err(|e| {
                invalid(
                    "OIDC_ISSUER_URL",
                    format!("{url:?}: {e}"),
                    "use the https:// issuer URL of your IdP (http:// only on 127.0.0.1/localhost)",
                )
            })?;
            out.push(IssuerSettings { verifier: c, group_roles: Vec::new() });
        }
    } else if env.var("OIDC_AUDIENCE").is_some() && out.is_empty() {
        return Err(invalid(
            "OIDC_AUDIENCE",
            "set without OIDC_ISSUER_URL",
            "set OIDC_ISSUER_URL too, or unset OIDC_AUDIENCE",
        ));
    }
    Ok(out)
}

fn load_bindings(file: &[FileBinding]) -> Result<Vec<Binding>, ConfigError> {
    let mut out = Vec::new();
    for (i, b) in file.iter().enumerate() {
        let subject = match (&b.group, &b.user, &b.issuer) {
            (Some(g), None, None) if !g.is_empty() => BindingSubject::Group(g.clone()),
            (None, Some(u), iss) if !u.is_empty() => {
                let name = match iss {
                    Some(iss) => kubehero_core::subject_key(Some(iss), u),
                    None => u.clone(),
                };
                kubehero_core::check_user_name(&name).map_err(|e| {
                    file_err(format!("bindings[{i}]: {e}"), "add issuer = \"<issuer URL>\" to this binding")
                })?;
                BindingSubject::User(name)
            }
            _ => {
                return Err(file_err(
                    format!("bindings[{i}]: needs exactly one of group or user (issuer goes with user)"),
                    "set group = \"…\" or user = \"…\" (with issuer = \"…\" for a person's sub)",
                ))
            }
        };
        let role: Role = b
            .role
            .parse()
            .map_err(|e| file_err(format!("bindings[{i}]: {e}"), "use one of viewer, member, auditor, admin, owner"))?;
        let scope = validate_scope(b.cluster.clone(), b.namespace.clone()).map_err(|e| {
            file_err(format!("bindings[{i}]: {e}"), "cluster is a glob of [a-z0-9.-_*?]; namespace needs cluster")
        })?;
        out.push(Binding { subject, role, scope });
    }
    Ok(out)
}

/// Checks a binding scope as given by a user (config file or API).
pub fn validate_scope(cluster: Option<String>, namespace: Option<String>) -> Result<Scope, String> {
    if let Some(c) = &cluster {
        if !kubehero_core::glob::is_valid(c) {
            return Err(format!("cluster glob {c:?} is invalid"));
        }
    }
    if let Some(n) = &namespace {
        if cluster.is_none() {
            return Err("namespace given without cluster".into());
        }
        if !is_dns_label(n) {
            return Err(format!("namespace {n:?} is not a valid Kubernetes namespace name"));
        }
    }
    Ok(Scope::from_parts(cluster, namespace))
}

pub use kubehero_core::is_dns_label;

/// The `--help` text listing every setting.
pub fn settings_help() -> String {
    let mut s = String::from(
        "Settings (environment variables; a KUBEHERO_CONFIG file may set the same and more, env wins):\n\n",
    );
    for st in SETTINGS {
        s.push_str(&format!("  {}\n      {}\n      [default: {}]\n", st.name, st.help, st.default));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults() {
        let c = ServerConfig::load(&env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite:kubehero-data/kubehero.db");
        assert!(!c.require_auth);
        assert!(c.issuers.is_empty());
    }

    #[test]
    fn errors_name_the_variable() {
        for (k, v) in [
            ("KUBEHERO_LISTEN", "nope"),
            ("KUBEHERO_REQUIRE_AUTH", "maybe"),
            ("KUBEHERO_GROUP_ROLES", "admins=root"),
            ("KUBEHERO_DATABASE_URL", "mysql://x"),
            ("OIDC_ISSUER_URL", "http://idp.example.com"),
            ("KUBEHERO_TLS_CERT", "/x"),
            ("AUDIT_HMAC_KEY", "short"),
        ] {
            let e = ServerConfig::load(&env(&[(k, v)])).unwrap_err().to_string();
            // Each message starts with the variable to fix (for a lone TLS cert, that is its missing key).
            assert!(e.starts_with("KUBEHERO_") || e.starts_with("OIDC_") || e.starts_with("AUDIT_"), "{e}");
            assert!(e.contains(k), "{k}: {e}");
            assert!(e.contains("Fix:"), "{e}");
        }
    }

    #[test]
    fn dashboard_client_id_is_an_accepted_audience() {
        let c = ServerConfig::load(&env(&[
            ("OIDC_ISSUER_URL", "https://idp.example.com"),
            ("OIDC_AUDIENCE", "kubehero-api"),
            ("KUBEHERO_OIDC_CLIENT_ID", "kubehero-dashboard"),
            ("KUBEHERO_PUBLIC_URL", "https://kubehero.example.com/"),
        ]))
        .unwrap();
        assert_eq!(c.issuers[0].verifier.audiences, ["kubehero-api", "kubehero-dashboard"]);
        let login = c.login.unwrap();
        assert_eq!(login.public_url, "https://kubehero.example.com");
        let e = ServerConfig::load(&env(&[("KUBEHERO_OIDC_CLIENT_ID", "x")])).unwrap_err().to_string();
        assert!(e.starts_with("KUBEHERO_OIDC_CLIENT_ID") && e.contains("Fix:"), "{e}");
        let e = ServerConfig::load(&env(&[("KUBEHERO_PUBLIC_URL", "http://kubehero.example.com")])).unwrap_err();
        assert!(e.to_string().starts_with("KUBEHERO_PUBLIC_URL"), "{e}");
    }

    #[test]
    fn required_auth_needs_an_audit_key() {
        let e = ServerConfig::load(&env(&[("KUBEHERO_REQUIRE_AUTH", "true")])).unwrap_err().to_string();
        assert!(e.starts_with("AUDIT_HMAC_KEY: unset while KUBEHERO_REQUIRE_AUTH=true"), "{e}");
        let key = "k".repeat(32);
        assert!(ServerConfig::load(&env(&[("KUBEHERO_REQUIRE_AUTH", "true"), ("AUDIT_HMAC_KEY", &key)])).is_ok());
        for (k, v) in [("KUBEHERO_AUDIT_CHECKPOINT_SECS", "0"), ("KUBEHERO_AUDIT_PREVIOUS_KEYS", "short")] {
            let e = ServerConfig::load(&env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.starts_with(k) && e.contains("Fix:"), "{e}");
        }
    }

    #[test]
    fn warns_about_unknown_variables() {
        let c = ServerConfig::load(&env(&[("KUBEHERO_LISTN", "x")])).unwrap();
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn file_with_issuers_and_bindings() {
        let file: FileConfig = toml::from_str(
            r#"
            require_auth = true
            group_roles = { "admins" = "admin" }
            [[issuers]]
            issuer = "https://idp.example.com"
            audiences = ["kubehero"]
            group_prefix = "okta:"
            group_roles = { "okta:sre" = "owner" }
            [[bindings]]
            group = "oncall"
            role = "admin"
            cluster = "prod-*"
            namespace = "payments"
            "#,
        )
        .unwrap();
        let c = ServerConfig::from_parts(&env(&[("KUBEHERO_REQUIRE_AUTH", "false")]), file).unwrap();
        assert!(!c.require_auth, "env overrides file");
        assert_eq!(c.issuers[0].verifier.group_prefix, "okta:");
        assert_eq!(c.bindings[0].scope, Scope::Namespace { cluster: "prod-*".into(), namespace: "payments".into() });
        let bad: Result<FileConfig, _> = toml::from_str("listen_addr = \"x\"");
        assert!(bad.is_err(), "unknown keys are refused");
    }
}

/// The agent listener and CA (`KUBEHERO_AGENT_*`).
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// `None`: `KUBEHERO_AGENT_LISTEN=off`.
    pub listen: Option<SocketAddr>,
    /// Names in the listener's certificate; empty: the defaults plus the public URL's host.
    pub server_names: Vec<String>,
    /// `(cert, key)` files, or the built-in CA.
    pub ca_files: Option<(PathBuf, PathBuf)>,
    /// Seconds.
    pub cert_ttl: i64,
    /// Lifetime of per-cluster access tokens, seconds.
    pub cluster_token_ttl: i64,
    /// Seconds a new issuer key is published before it signs.
    pub issuer_key_lead: i64,
    /// `KUBEHERO_ISSUER_RSA_KEYS`.
    pub issuer_rsa_keys: Vec<PathBuf>,
    /// `KUBEHERO_PEER_URL`: where the other replicas reach this one's agent listener.
    pub peer_url: Option<String>,
}

impl AgentSettings {
    fn load(env: &dyn Env) -> Result<AgentSettings, ConfigError> {
        let listen = match env.var("KUBEHERO_AGENT_LISTEN").as_deref().map(str::trim) {
            Some("off") => None,
            other => {
                let v = other.unwrap_or("127.0.0.1:8443");
                Some(v.parse().map_err(|_| {
                    invalid(
                        "KUBEHERO_AGENT_LISTEN",
                        format!("{v:?} is not an address"),
                        "use IP:PORT, e.g. 0.0.0.0:8443, or off",
                    )
                })?)
            }
        };
        let server_names = env
            .var("KUBEHERO_AGENT_SERVER_NAMES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let ca_files = match (env.var("KUBEHERO_AGENT_CA_CERT"), env.var("KUBEHERO_AGENT_CA_KEY")) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            _ => {
                return Err(invalid(
                    "KUBEHERO_AGENT_CA_CERT",
                    "only one of KUBEHERO_AGENT_CA_CERT and KUBEHERO_AGENT_CA_KEY is set",
                    "set both (a CA certificate and its key), or neither for the built-in CA",
                ))
            }
        };
        let cert_ttl =
            number(env, "KUBEHERO_AGENT_CERT_TTL_SECS", 7 * 86400, 10..=365 * 86400, "use e.g. 604800 (7 days)")?
                as i64;
        let cluster_token_ttl =
            number(env, "KUBEHERO_CLUSTER_TOKEN_TTL_SECS", 600, 60..=86400, "use e.g. 600 (10 minutes)")? as i64;
        let issuer_key_lead =
            number(env, "KUBEHERO_ISSUER_KEY_LEAD_SECS", 600, 0..=86400, "use e.g. 600 (10 minutes)")? as i64;
        let issuer_rsa_keys = env
            .var("KUBEHERO_ISSUER_RSA_KEYS")
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(PathBuf::from).collect())
            .unwrap_or_default();
        let peer_url = match env.var("KUBEHERO_PEER_URL").map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
            Some(u) if crate::agent::peer::valid_url(&u) => Some(u),
            Some(u) => {
                return Err(invalid(
                    "KUBEHERO_PEER_URL",
                    format!("{u:?} is not https://HOST:PORT"),
                    "give the address at which the other replicas reach this one's agent listener, e.g. https://$(POD_IP):8443",
                ))
            }
            None => None,
        };
        Ok(AgentSettings {
            listen,
            server_names,
            ca_files,
            cert_ttl,
            cluster_token_ttl,
            issuer_key_lead,
            issuer_rsa_keys,
            peer_url,
        })
    }
}
