//! The client side of KubeHero: `kubehero login | logout | whoami | auth …`, run on a person's or a
//! machine's computer against a KubeHero server over HTTP(S).
//!
//! Security rules: a credential lives only in `<config dir>/credentials.json` (0600 in a 0700 directory,
//! written atomically; see [`credentials`]) or in `KUBEHERO_TOKEN`; no command prints a token and no error
//! message contains one; a token is sent only to the server it was stored for.

mod access;
mod account;
mod breakglass;
mod browser;
mod client;
mod cluster;
mod credentials;
mod device;
mod kube;
mod login;
mod share;

use anyhow::bail;
use clap::{Args, Subcommand};
use client::{normalize_server, Api};
use credentials::{config_dir, CredentialStore, Credentials, StoredCredential, Token};
use kubehero_server::config::{Env, ProcessEnv};
use std::process::ExitCode;

const LOGIN_ABOUT: &str = "Sign in to a KubeHero server and store a CLI token for it.

By default this runs the OAuth 2.0 device authorization grant (RFC 8628): it prints an address and a code; \
open the address in any browser, on any device, sign in with your identity provider and confirm the code. \
The CLI token (khc_…) is then stored in <config dir>/credentials.json (mode 0600), one entry per server. \
The config dir is $KUBEHERO_CONFIG_DIR, else $XDG_CONFIG_HOME/kubehero, else ~/.config/kubehero.

Concurrent `kubehero login` processes run a single sign-in: the others wait for it and then use its token. \
When a valid token for the server is already stored, login says so and stops (--force signs in again).

With --browser, the CLI instead listens on 127.0.0.1 and opens the server's sign-in page in a browser on this \
computer (set KUBEHERO_NO_BROWSER=1 to only print its address); after you approve, the server sends the browser \
back to the CLI with a one-time code, which the CLI redeems with a PKCE verifier (RFC 8252, RFC 7636).

Machines without a person use --token-stdin with an API key or an IdP token. With KUBEHERO_TOKEN set, \
every other command uses that token instead of the file.";

/// `kubehero login`, `logout`, `whoami` and `auth`.
#[derive(Subcommand)]
pub enum CliCommand {
    /// Sign in to a KubeHero server and store a CLI token for it.
    #[command(long_about = LOGIN_ABOUT)]
    Login(LoginArgs),
    /// Revoke this machine's CLI token on the server and forget it.
    Logout(ServerArg),
    /// Show whom the stored credential authenticates as on the server.
    Whoami(ServerArg),
    /// Rotate your CLI token; list and revoke your sessions and CLI tokens.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Register clusters and their agents, see their state, remove them.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Time-bound elevation: ask for a role on a cluster for a while; admins and owners of that scope approve or
    /// deny; the role ends on its own.
    #[command(subcommand)]
    Access(AccessCommand),
    /// Share links: give a role you hold on a cluster to whoever accepts the link (or only to named people and
    /// groups), until it expires; revoke ends every grant made from it.
    #[command(subcommand)]
    Share(ShareCommand),
    /// Break-glass: one-time emergency codes, sealed in advance by an owner, that give owner on a cluster for a
    /// while with the IdP down. Every use alerts the audit sinks and shows a banner until acknowledged.
    #[command(subcommand)]
    Breakglass(BreakglassCommand),
    /// Print a per-cluster access token as kubectl's ExecCredential (the exec plugin `kubehero kubeconfig` sets
    /// up): minted from your CLI login for that cluster only, 10 minutes, cached (0600) until a minute before it
    /// expires; parallel kubectl processes cause one mint.
    Token {
        #[arg(long, value_name = "NAME")]
        cluster: String,
        /// A JWT of KubeHero's own OIDC issuer (aud = the cluster's audience) for an API server that trusts
        /// KubeHero directly, instead of a token for the proxy.
        #[arg(long)]
        direct: bool,
        #[command(flatten)]
        target: ServerArg,
    },
    /// Write kubeconfig contexts (kubehero-<cluster>) whose user runs `kubehero token`, merged into $KUBECONFIG
    /// (or ~/.kube/config, or -o FILE; the previous file is kept as <file>.kubehero-backup).
    Kubeconfig {
        /// Clusters to add (default: every cluster).
        #[arg(long = "cluster", value_name = "NAME")]
        clusters: Vec<String>,
        /// Every cluster (the default when no --cluster is given).
        #[arg(long, conflicts_with = "clusters")]
        all: bool,
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        /// The ExecCredential API kubectl speaks: client.authentication.k8s.io/v1, or v1beta1 for kubectl older
        /// than 1.22.
        #[arg(long, value_name = "VERSION", default_value = "v1", value_parser = ["v1", "v1beta1"])]
        exec_api: String,
        /// The control plane's CA (PEM), when its certificate is not publicly trusted; with --direct, the
        /// cluster API server's CA.
        #[arg(long, value_name = "FILE")]
        certificate_authority: Option<std::path::PathBuf>,
        /// Contexts that reach each cluster's API server directly (its registered --api-server-url) with
        /// `kubehero token --direct`, for clusters that trust KubeHero's issuer or TokenReview webhook.
        #[arg(long)]
        direct: bool,
        /// Accept a share link (https://<server>/share/khl_…) and add the context of the cluster it shares. You
        /// must be logged in to that server.
        #[arg(long, value_name = "LINK", conflicts_with_all = ["clusters", "all", "direct"])]
        share: Option<String>,
        #[command(flatten)]
        target: ServerArg,
    },
}

/// `kubehero share …`.
#[derive(Subcommand)]
pub enum ShareCommand {
    /// Make a share link for a cluster (or one namespace) for a role no higher than yours there; prints the link
    /// once.
    Create {
        name: String,
        #[arg(long, value_name = "ROLE", default_value = "viewer")]
        role: String,
        /// How long the link, and every grant made from it, lasts (e.g. 30m, 24h, 7d; at most 30d).
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = cluster::parse_duration)]
        expires: i64,
        /// How many people may accept it (default: any number).
        #[arg(long, value_name = "N")]
        max_uses: Option<i64>,
        /// Who may accept it: emails and group:<name>, comma-separated (default: anyone who signs in).
        #[arg(long, value_name = "LIST", value_delimiter = ',')]
        to: Vec<String>,
        #[arg(long, value_name = "NAMESPACE")]
        namespace: Option<String>,
        #[command(flatten)]
        target: ServerArg,
    },
    /// Your share links of a cluster (admins and owners: everyone's), with who accepted them.
    List {
        name: String,
        #[command(flatten)]
        target: ServerArg,
    },
    /// Revoke a share link: every grant made from it ends at once (open kubectl streams are cut).
    Revoke {
        name: String,
        id: String,
        #[command(flatten)]
        target: ServerArg,
    },
}

/// `kubehero breakglass …`.
#[derive(Subcommand)]
pub enum BreakglassCommand {
    /// Seal one-time codes for a cluster (owners); prints them once.
    Create {
        #[arg(long, value_name = "NAME")]
        cluster: String,
        #[arg(long, default_value_t = 3)]
        count: usize,
        /// How long a use gives owner (e.g. 30m, 1h; at most 24h).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = cluster::parse_duration)]
        ttl: i64,
        #[command(flatten)]
        target: ServerArg,
    },
    /// Use a code: no login, works with the IdP down. Stores the owner token it gives as this machine's
    /// credential for the server and writes the cluster's kubeconfig context.
    Use {
        code: String,
        /// Why: required, kept in the audit log and shown on the dashboard banner.
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// The KubeHero server URL.
        #[arg(long, value_name = "URL", env = "KUBEHERO_SERVER")]
        server: String,
        /// Where to write the context (default: $KUBECONFIG, else ~/.kube/config).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        /// The control plane's CA (PEM), when its certificate is not publicly trusted.
        #[arg(long, value_name = "FILE")]
        certificate_authority: Option<std::path::PathBuf>,
    },
    /// Every code and its use (auditors and owners).
    List(ServerArg),
    /// Acknowledge a use (owners of its cluster): its dashboard banner ends.
    Ack {
        id: String,
        #[command(flatten)]
        target: ServerArg,
    },
    /// Revoke an unused code (owners of its cluster).
    Revoke {
        id: String,
        #[command(flatten)]
        target: ServerArg,
    },
}

/// `kubehero access …`.
#[derive(Subcommand)]
pub enum AccessCommand {
    /// Ask for a role on a cluster (or one namespace) for a while; prints the request id for approvers.
    Request {
        #[arg(long, value_name = "NAME")]
        cluster: String,
        #[arg(long, value_name = "NAMESPACE")]
        namespace: Option<String>,
        #[arg(long, value_name = "ROLE")]
        role: String,
        /// How long, once approved (e.g. 30m, 2h; at most 24h).
        #[arg(long = "for", value_name = "DURATION", value_parser = cluster::parse_duration)]
        duration: i64,
        /// Why: an incident or ticket, shown to approvers.
        #[arg(long, value_name = "TEXT")]
        reason: String,
        #[command(flatten)]
        target: ServerArg,
    },
    /// Approve a request (admins and owners of its scope; never your own).
    Approve {
        id: String,
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        #[command(flatten)]
        target: ServerArg,
    },
    /// Deny a request.
    Deny {
        id: String,
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        #[command(flatten)]
        target: ServerArg,
    },
    /// Your requests and those you may decide (STATE `decide`; `deny-only` when the cluster's access policy
    /// names other approvers, or wants a second approver after you).
    List(ServerArg),
}

/// `kubehero cluster rbac …`.
#[derive(Subcommand)]
pub enum RbacAction {
    /// Print the changes RBAC sync would make (create, update, recreate, delete), or that there are none.
    Diff {
        name: String,
        #[command(flatten)]
        target: ServerArg,
    },
}

/// `kubehero cluster …` (through the API, with the stored credential).
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Register a cluster and print a one-time join token, the agent CA's hash, and the `kubehero agent` and
    /// `helm install` lines to run (admin).
    Add {
        name: String,
        /// The cluster's API server URL (informational; the agent reaches the API server itself).
        #[arg(long, value_name = "URL")]
        api_server_url: Option<String>,
        /// How long the join token stays valid (e.g. 30m, 1h, 1d).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = cluster::parse_duration)]
        join_ttl: i64,
        /// Also print what the cluster's API server needs to trust KubeHero's tokens directly: the
        /// kube-apiserver --oidc-* flags and the AuthenticationConfiguration document (Kubernetes 1.30+).
        #[arg(long)]
        direct: bool,
        /// The audience of the cluster's direct tokens (--oidc-client-id of its API server); default its name.
        #[arg(long, value_name = "AUDIENCE")]
        audience: Option<String>,
        /// How direct tokens for the cluster are signed: ES256, or RS256 for API servers that take only RS256
        /// (needs KUBEHERO_ISSUER_RSA_KEYS on the control plane).
        #[arg(long, value_name = "ALG", value_parser = ["ES256", "RS256"])]
        signing_alg: Option<String>,
        /// Also print the webhook kubeconfig (with a client certificate for the cluster's API server) and the
        /// flags that make the API server ask KubeHero's TokenReview webhook who a token is.
        #[arg(long)]
        webhook: bool,
        #[command(flatten)]
        target: ServerArg,
    },
    /// A new join token for a registered cluster (a re-install); a connected agent is not disturbed (admin).
    JoinToken {
        name: String,
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = cluster::parse_duration)]
        join_ttl: i64,
        #[command(flatten)]
        target: ServerArg,
    },
    /// Clusters with their state (pending, connected, disconnected, removed), versions, last seen and
    /// certificate expiry.
    List(ServerArg),
    /// Remove a cluster: its agent certificates are revoked and its tunnel closes at once (admin).
    Remove {
        name: String,
        #[command(flatten)]
        target: ServerArg,
    },
    /// What RBAC sync would change in the cluster: the objects KubeHero keeps there compared with what the
    /// cluster holds now (read through the proxy, so it needs read access to RBAC objects there).
    Rbac {
        #[command(subcommand)]
        action: RbacAction,
    },
    /// Revoke a cluster's agent certificates (all, or one by --serial); its tunnel closes at once (admin).
    Revoke {
        name: String,
        #[arg(long, value_name = "HEX")]
        serial: Option<String>,
        #[command(flatten)]
        target: ServerArg,
    },
}

/// `--server`, shared by the commands.
#[derive(Args)]
pub struct ServerArg {
    /// The KubeHero server URL (default: the only server logged in to).
    #[arg(long, value_name = "URL", env = "KUBEHERO_SERVER")]
    server: Option<String>,
}

#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    target: ServerArg,
    /// Sign in through a browser on this computer: a loopback redirect to 127.0.0.1 with PKCE instead of the
    /// device code. The address is always printed; it is also opened (xdg-open or open) unless
    /// KUBEHERO_NO_BROWSER=1.
    #[arg(long, conflicts_with = "token_stdin")]
    browser: bool,
    /// Read an API key (khk_…) or an IdP token from stdin, check it with the server and store it: for
    /// machines without a person.
    #[arg(long)]
    token_stdin: bool,
    /// Sign in again even though a valid token for the server is stored.
    #[arg(long, conflicts_with = "token_stdin")]
    force: bool,
}

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Replace your CLI token with a new one; the old one stops working at once.
    Rotate(ServerArg),
    /// List your browser sessions and CLI tokens; `revoke ID` ends one.
    Sessions(SessionsArgs),
}

#[derive(Args)]
pub struct SessionsArgs {
    #[command(subcommand)]
    action: Option<SessionsAction>,
    /// The KubeHero server URL (default: the only server logged in to).
    #[arg(long, value_name = "URL", env = "KUBEHERO_SERVER", global = true)]
    server: Option<String>,
    /// Everyone's sessions and tokens (owners only).
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
pub enum SessionsAction {
    /// End a browser session or revoke a CLI token, by the id `kubehero auth sessions` lists.
    Revoke { id: String },
}

/// Runs a client command with the process environment.
pub async fn run(cmd: CliCommand) -> anyhow::Result<ExitCode> {
    run_with(cmd, &ProcessEnv).await
}

async fn run_with(cmd: CliCommand, env: &dyn Env) -> anyhow::Result<ExitCode> {
    let store = CredentialStore::new(config_dir(env)?);
    let env_token = env.var("KUBEHERO_TOKEN").map(Token::new);
    match cmd {
        CliCommand::Login(a) => {
            let api = Api::new(&resolve_server(&store.load()?, a.target.server.as_deref())?)?;
            if env_token.is_some() {
                eprintln!(
                    "Note: KUBEHERO_TOKEN is set, so the other commands use it rather than the token stored here."
                );
            }
            if a.token_stdin {
                login::stdin_login(&store, &api).await
            } else {
                let flow = if a.browser {
                    let open = !env.var("KUBEHERO_NO_BROWSER").is_some_and(|v| !v.is_empty() && v != "0");
                    login::Flow::Browser { open }
                } else {
                    login::Flow::Device
                };
                login::interactive_login(&store, &api, flow, a.force).await
            }
        }
        CliCommand::Logout(a) => {
            if env_token.is_some() {
                bail!(
                    "KUBEHERO_TOKEN is set: `logout` forgets stored credentials; unset KUBEHERO_TOKEN first (to end \
                     that token, use `kubehero auth sessions revoke ID`)"
                );
            }
            account::logout(&store, a.server.as_deref()).await
        }
        CliCommand::Whoami(a) => account::whoami(&target(&store, env_token, a.server.as_deref())?).await,
        CliCommand::Auth(AuthCommand::Rotate(a)) => {
            if env_token.is_some() {
                bail!(
                    "KUBEHERO_TOKEN is set: `auth rotate` replaces the stored token; unset KUBEHERO_TOKEN (and rotate \
                     that token where it comes from)"
                );
            }
            account::rotate(&store, &target(&store, None, a.server.as_deref())?).await
        }
        CliCommand::Cluster(c) => match c {
            ClusterCommand::Add {
                name,
                api_server_url,
                join_ttl,
                direct,
                audience,
                signing_alg,
                webhook,
                target: a,
            } => {
                let t = target(&store, env_token, a.server.as_deref())?;
                let mut labels = serde_json::Map::new();
                if let Some(a) = audience {
                    labels.insert("kubehero.io/audience".into(), a.into());
                }
                if let Some(alg) = signing_alg {
                    labels.insert("kubehero.io/signing-alg".into(), alg.into());
                }
                let code = cluster::add(&t, &name, api_server_url.as_deref(), join_ttl, labels).await?;
                if direct {
                    cluster::direct(&t, &name).await?;
                }
                if webhook {
                    cluster::webhook(&t, &name).await?;
                }
                Ok(code)
            }
            ClusterCommand::JoinToken { name, join_ttl, target: a } => {
                cluster::join_token(&target(&store, env_token, a.server.as_deref())?, &name, join_ttl).await
            }
            ClusterCommand::Rbac { action: RbacAction::Diff { name, target: a } } => {
                cluster::rbac_diff(&target(&store, env_token, a.server.as_deref())?, &name).await
            }
            ClusterCommand::List(a) => cluster::list(&target(&store, env_token, a.server.as_deref())?).await,
            ClusterCommand::Remove { name, target: a } => {
                cluster::remove(&target(&store, env_token, a.server.as_deref())?, &name).await
            }
            ClusterCommand::Revoke { name, serial, target: a } => {
                cluster::revoke(&target(&store, env_token, a.server.as_deref())?, &name, serial.as_deref()).await
            }
        },
        CliCommand::Access(c) => match c {
            AccessCommand::Request { cluster, namespace, role, duration, reason, target: a } => {
                let t = target(&store, env_token, a.server.as_deref())?;
                access::request(&t, &cluster, namespace.as_deref(), &role, duration, &reason).await
            }
            AccessCommand::Approve { id, comment, target: a } => {
                access::decide(&target(&store, env_token, a.server.as_deref())?, &id, "approve", comment).await
            }
            AccessCommand::Deny { id, comment, target: a } => {
                access::decide(&target(&store, env_token, a.server.as_deref())?, &id, "deny", comment).await
            }
            AccessCommand::List(a) => access::list(&target(&store, env_token, a.server.as_deref())?).await,
        },
        CliCommand::Share(c) => match c {
            ShareCommand::Create { name, role, expires, max_uses, to, namespace, target: a } => {
                let t = target(&store, env_token, a.server.as_deref())?;
                share::create(&t, &name, share::NewShare { role, expires, max_uses, to, namespace }).await
            }
            ShareCommand::List { name, target: a } => {
                share::list(&target(&store, env_token, a.server.as_deref())?, &name).await
            }
            ShareCommand::Revoke { name, id, target: a } => {
                share::revoke(&target(&store, env_token, a.server.as_deref())?, &name, &id).await
            }
        },
        CliCommand::Breakglass(c) => match c {
            BreakglassCommand::Create { cluster, count, ttl, target: a } => {
                breakglass::create(&target(&store, env_token, a.server.as_deref())?, &cluster, count, ttl).await
            }
            BreakglassCommand::Use { code, reason, server, out, certificate_authority } => {
                let api = Api::new(&normalize_server(&server)?)?;
                let cluster = breakglass::use_code(&store, &api, &code, &reason).await?;
                let t = target(&store, None, Some(&server))?;
                let args = kube::KubeconfigArgs {
                    clusters: vec![cluster],
                    out,
                    exec_api: "client.authentication.k8s.io/v1".into(),
                    ca_file: certificate_authority,
                    direct: false,
                };
                kube::kubeconfig(&t, args, env).await
            }
            BreakglassCommand::List(a) => breakglass::list(&target(&store, env_token, a.server.as_deref())?).await,
            BreakglassCommand::Ack { id, target: a } => {
                breakglass::act(&target(&store, env_token, a.server.as_deref())?, &id, true).await
            }
            BreakglassCommand::Revoke { id, target: a } => {
                breakglass::act(&target(&store, env_token, a.server.as_deref())?, &id, false).await
            }
        },
        CliCommand::Token { cluster, direct, target: a } => {
            let info = env.var("KUBERNETES_EXEC_INFO");
            // kubectl says whether a person is there to sign in (`spec.interactive`); so must the terminal.
            let interactive = kube::interactive(info.as_deref()) && std::io::IsTerminal::is_terminal(&std::io::stdin());
            let attempt = async |env_token: Option<Token>| -> anyhow::Result<ExitCode> {
                let t = target(&store, env_token, a.server.as_deref())?;
                kube::token(&store, &t, &cluster, direct, info.clone()).await
            };
            match attempt(env_token.clone()).await {
                Ok(code) => Ok(code),
                // No CLI login (or a refused one) and a person at a terminal: sign in (on stderr: stdout carries
                // only the ExecCredential), then try once more.
                Err(e) if interactive && env_token.is_none() => {
                    let Some(server) = a.server.as_deref() else { return Err(e) };
                    eprintln!("kubehero token: {e:#}\nSigning in to {server} first.");
                    let api = Api::new(&normalize_server(server)?)?;
                    login::interactive_login(&store, &api, login::Flow::Device, true).await?;
                    attempt(None).await
                }
                Err(e) => Err(e),
            }
        }
        CliCommand::Kubeconfig { clusters, all: _, out, exec_api, certificate_authority, direct, share, target: a } => {
            let (t, clusters) = match share {
                Some(link) => {
                    let server = a.server.map_or_else(|| share::server_of(&link), Ok)?;
                    let t = target(&store, env_token, Some(&server))?;
                    let cluster = share::accept(&t, &link).await?;
                    (t, vec![cluster])
                }
                None => (target(&store, env_token, a.server.as_deref())?, clusters),
            };
            let args = kube::KubeconfigArgs {
                clusters,
                out,
                exec_api: format!("client.authentication.k8s.io/{exec_api}"),
                ca_file: certificate_authority,
                direct,
            };
            kube::kubeconfig(&t, args, env).await
        }
        CliCommand::Auth(AuthCommand::Sessions(a)) => {
            let t = target(&store, env_token, a.server.as_deref())?;
            match a.action {
                None => account::sessions(&t, a.all).await,
                Some(SessionsAction::Revoke { id }) => account::revoke(&store, &t, &id).await,
            }
        }
    }
}

/// The server a command talks to, with the credential it uses.
pub struct Target {
    pub api: Api,
    pub token: Token,
    /// The stored entry the token came from (`None` with `KUBEHERO_TOKEN`).
    pub stored: Option<StoredCredential>,
}

/// `--server` (normalised), else the only stored server.
fn resolve_server(creds: &Credentials, arg: Option<&str>) -> anyhow::Result<String> {
    if let Some(s) = arg {
        return normalize_server(s);
    }
    let mut servers = creds.servers.keys();
    match (servers.next(), servers.next()) {
        (Some(only), None) => Ok(only.clone()),
        (None, _) => bail!("no server given and none logged in to: run `kubehero login --server URL`"),
        (Some(_), Some(_)) => bail!(
            "logged in to several servers ({}): pass --server URL",
            creds.servers.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The server and credential for a command: `KUBEHERO_TOKEN` when set, else the stored one.
fn target(store: &CredentialStore, env_token: Option<Token>, arg: Option<&str>) -> anyhow::Result<Target> {
    let creds = store.load()?;
    if let Some(token) = env_token {
        if arg.is_none() && creds.servers.is_empty() {
            bail!("KUBEHERO_TOKEN is set but no server is known: pass --server URL (or set KUBEHERO_SERVER)");
        }
        let mut api = Api::new(&resolve_server(&creds, arg)?)?;
        api.token_from_env = true;
        return Ok(Target { api, token, stored: None });
    }
    let server = resolve_server(&creds, arg)?;
    let Some(c) = creds.servers.get(&server) else {
        bail!("not logged in to {server}: run `kubehero login --server {server}`");
    };
    if !c.is_fresh(now()) {
        bail!("the stored token for {server} has expired: run `kubehero login --server {server}`");
    }
    Ok(Target { api: Api::new(&server)?, token: c.token.clone(), stored: Some(c.clone()) })
}

/// Unix seconds.
fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn creds(servers: &[&str]) -> Credentials {
        let mut c = Credentials::default();
        for s in servers {
            let e = StoredCredential {
                server: s.to_string(),
                token: Token::new("khc_x"),
                obtained_at: 0,
                expires_at: None,
            };
            c.servers.insert(s.to_string(), e);
        }
        c
    }

    #[test]
    fn the_server_defaults_to_the_only_one_stored() {
        assert_eq!(resolve_server(&creds(&["https://a"]), None).unwrap(), "https://a");
        assert_eq!(resolve_server(&creds(&["https://a"]), Some("https://b/")).unwrap(), "https://b");
        let none = resolve_server(&creds(&[]), None).unwrap_err().to_string();
        assert!(none.contains("kubehero login --server"), "{none}");
        let two = resolve_server(&creds(&["https://a", "https://b"]), None).unwrap_err().to_string();
        assert!(two.contains("https://a, https://b") && two.contains("--server"), "{two}");
    }

    #[test]
    fn the_command_line_parses() {
        use clap::{CommandFactory, FromArgMatches, Parser};
        #[derive(Parser)]
        struct Top {
            #[command(subcommand)]
            cmd: CliCommand,
        }
        Top::command().debug_assert();
        let parse = |args: &[&str]| {
            let m = Top::command().try_get_matches_from(std::iter::once("kubehero").chain(args.iter().copied()))?;
            Top::from_arg_matches(&m)
        };
        assert!(parse(&["login", "--server", "https://kh", "--browser"]).is_ok());
        assert!(parse(&["login", "--token-stdin", "--browser"]).is_err());
        assert!(parse(&["auth", "sessions", "--all"]).is_ok());
        match parse(&["auth", "sessions", "revoke", "0123456789abcdef", "--server", "https://kh"]).unwrap().cmd {
            CliCommand::Auth(AuthCommand::Sessions(SessionsArgs {
                action: Some(SessionsAction::Revoke { id }),
                server,
                ..
            })) => assert_eq!((id.as_str(), server.as_deref()), ("0123456789abcdef", Some("https://kh"))),
            _ => unreachable!(),
        }
    }
}
