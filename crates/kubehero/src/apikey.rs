//! `kubehero apikey create|list|revoke`: manage API keys directly in the database, on the server host.
//! The key is printed once, on creation; only its SHA-256 is stored.

use anyhow::Context;
use clap::Subcommand;
use kubehero_authn::{generate_api_key, sha256_hex};
use kubehero_core::Role;
use kubehero_server::config::ServerConfig;
use kubehero_store::{ApiKeyRecord, Change};

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it once.
    Create {
        /// A name saying what the key is for (e.g. ci-pipeline).
        #[arg(long)]
        name: String,
        /// viewer, member, auditor, admin or owner.
        #[arg(long, default_value = "viewer")]
        role: Role,
        /// Who is responsible for the key: a person as <issuer URL>#<sub> (a bare sub is taken as the only
        /// configured issuer's), or an email.
        #[arg(long, default_value = "local-operator")]
        owner: String,
        /// Days until the key expires (1-3650).
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_in_days: u32,
    },
    /// List keys (ids, names, roles, owners, expiry; never the keys).
    List {
        /// Only keys of this owner.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Revoke a key by its id (the first 16 hex characters of its SHA-256, as `list` shows).
    Revoke { id: String },
}

pub async fn run(cmd: ApiKeyCommand, cfg: ServerConfig) -> anyhow::Result<()> {
    let store =
        kubehero_server::open_store(&cfg).await.context("opening the database (same settings as `kubehero serve`)")?;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    match cmd {
        ApiKeyCommand::Create { name, role, owner, expires_in_days } => {
            let owner = match cfg.issuers.as_slice() {
                [only] if kubehero_store::is_legacy_person_subject(&owner) => {
                    kubehero_core::subject_key(Some(&only.verifier.issuer), &owner)
                }
                _ => owner,
            };
            let secret = generate_api_key().context("generating a key")?;
            let hash = sha256_hex(secret.expose());
            let rec = ApiKeyRecord {
                id: hash[..16].to_string(),
                hash,
                name,
                role,
                owner,
                created_at: now,
                expires_at: Some(now + i64::from(expires_in_days) * 86_400),
                revoked_at: None,
            };
            // The key and its audit row commit together; the key is printed only then.
            audited(&cfg, &store, Change::CreateApiKey(&rec), "api_key.create", &rec.id).await?;
            eprintln!("created API key {} ({}, role {}); it is shown once, store it now:", rec.id, rec.name, rec.role);
            println!("{}", secret.expose());
        }
        ApiKeyCommand::List { owner } => {
            let keys = store.list_api_keys(owner.as_deref()).await?;
            println!("{:<16}  {:<8}  {:<20}  {:<24}  {:<10}  STATUS", "ID", "ROLE", "NAME", "OWNER", "EXPIRES");
            for k in keys {
                let status = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires_at.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "active"
                };
                let expires = k
                    .expires_at
                    .map(|e| format!("in {}d", (e - now).max(0) / 86_400))
                    .unwrap_or_else(|| "never".into());
                println!("{:<16}  {:<8}  {:<20}  {:<24}  {:<10}  {status}", k.id, k.role, k.name, k.owner, expires);
            }
        }
        ApiKeyCommand::Revoke { id } => {
            let changed = audited(&cfg, &store, Change::RevokeApiKey { id: &id, at: now }, "api_key.revoke", &id)
                .await
                .with_context(|| format!("revoking {id}; `kubehero apikey list` shows the ids"))?;
            let rec = kubehero_store::changed_api_key(changed)?;
            eprintln!("revoked API key {} ({})", rec.id, rec.name);
        }
    }
    Ok(())
}

/// Applies a change made from the server host's shell together with its audit row (actor: the local operator
/// `$USER`, method `local`), after checking that this host's `AUDIT_HMAC_KEY` is the chain's.
async fn audited(
    cfg: &ServerConfig,
    store: &std::sync::Arc<dyn kubehero_store::Store>,
    change: Change<'_>,
    action: &str,
    key_id: &str,
) -> anyhow::Result<kubehero_store::Changed> {
    use kubehero_core::{AuditActor, AuditEvent, AuditResult, AuditTarget};
    let (keys, _) = kubehero_server::audit::load_hmac_keys(cfg, true)?;
    kubehero_server::audit::check_hmac_key_matches_chain(&**store, &keys).await?;
    let sealer = kubehero_audit::ChainSealer::new(std::sync::Arc::new(keys));
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let ids = kubehero_audit::IdSource::new().map_err(anyhow::Error::msg)?;
    let event = AuditEvent {
        event_id: ids.next_id(),
        time_ms: now_ms,
        actor: AuditActor {
            sub: std::env::var("USER").unwrap_or_else(|_| "local-operator".into()),
            kind: "operator".into(),
            auth_method: "local".into(),
            ..Default::default()
        },
        action: action.to_string(),
        target: AuditTarget { kind: Some("api_key".into()), id: Some(key_id.to_string()), ..Default::default() },
        result: AuditResult::ok(0),
        request_id: ids.next_id(),
        source: Some("local".into()),
        user_agent: Some(format!("kubehero-cli/{}", env!("CARGO_PKG_VERSION"))),
    };
    let rows = kubehero_store::WithRows { events: std::slice::from_ref(&event), sealer: &sealer.shared() };
    Ok(store.apply(change, Some(rows)).await?.0)
}
