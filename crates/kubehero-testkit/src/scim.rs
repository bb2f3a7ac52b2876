//! The PyPI `scim2-tester` SCIM 2.0 compliance checker (RFC 7643, RFC 7644) as a test peer.
//! [`run_compliance`] runs `scim/scim-check.py` with the peer's python against a SCIM base URL and returns
//! every check's result: discovery endpoints, CRUD, `attributes`/`excludedAttributes`, PATCH add/remove/replace
//! on every attribute the server's `/Schemas` advertise.
//!
//! `scripts/test` installs `scim2-tester` 0.5.2 and `scim2-cli` 0.6.0 into a venv at
//! `$KUBEHERO_PEERS_DIR/scim/venv`; this module only checks it is there and says how to install it when it
//! is not.
//!
//! Security rule: the bearer token reaches the checker through the `SCIM_TOKEN` environment variable, never
//! argv, and is redacted from every error this module returns.

use crate::oidc::{peers_dir, write_if_changed};
use anyhow::{anyhow, bail, Context};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

const SCIM_CHECK_PY: &str = include_str!("../scim/scim-check.py");

/// A whole run takes ~3 s against the in-memory reference server; this bounds a server that hangs.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// The venv holding `scim2-tester` and `scim2-cli`.
pub fn venv_dir() -> PathBuf {
    peers_dir().join("scim/venv")
}

/// The venv's python, which runs `scim-check.py`.
pub fn python() -> PathBuf {
    venv_dir().join("bin/python")
}

/// The `scim2` command line (`scim2 --url BASE test`), for running the checks by hand. It takes the token
/// from `SCIM_CLI_HEADERS="Authorization: Bearer …"`.
pub fn scim_cli() -> PathBuf {
    venv_dir().join("bin/scim2")
}

/// Whether `scripts/test` has installed the checker.
pub fn available() -> bool {
    python().is_file() && scim_cli().is_file()
}

/// One check's outcome, as `scim2-tester` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimCheck {
    /// `SUCCESS` (a MUST holds), `COMPLIANT` (a SHOULD holds), `ACCEPTABLE` (a MAY), `DEVIATION` (a SHOULD is
    /// broken), `ERROR` (a MUST is broken), `CRITICAL`, or `SKIPPED`.
    pub status: String,
    /// `User`, `Group`, … for the per-resource-type checks; `None` for discovery and misc checks.
    pub resource_type: Option<String>,
    /// The checker's name, e.g. `check_add_attribute`.
    pub title: String,
    /// Why it passed or failed, e.g. `Successfully added attribute 'nickName'`.
    pub reason: String,
    /// The checker's tags, e.g. `["patch:add"]`, `["discovery", "schemas"]`.
    pub tags: Vec<String>,
    /// What the checker verifies and which RFC section asks for it.
    pub description: String,
    /// Debugging data: the response, the patched and returned values, … (at most ~4000 characters).
    pub data: Option<String>,
}

impl ScimCheck {
    /// Whether the server broke a MUST (`ERROR`) or the check found a protocol violation (`CRITICAL`).
    pub fn is_failure(&self) -> bool {
        matches!(self.status.as_str(), "ERROR" | "CRITICAL")
    }
}

impl std::fmt::Display for ScimCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}: {}", self.status, self.resource_type.as_deref().unwrap_or("-"), self.title, self.reason)
    }
}

/// How many checks ended in each status, e.g. `{"SUCCESS": 135}`.
pub fn summary(checks: &[ScimCheck]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for c in checks {
        *counts.entry(c.status.clone()).or_insert(0) += 1;
    }
    counts
}

/// What to run and how to reach the server; the default runs every check over http or public-CA https.
#[derive(Debug, Clone, Default)]
pub struct ComplianceOptions {
    /// Run only checks with one of these tags (`discovery`, `crud`, `crud:read`, `patch:add`, `misc`, …).
    pub include_tags: Vec<String>,
    /// Skip checks with one of these tags.
    pub exclude_tags: Vec<String>,
    /// Only these resource types (`User`, `Group`).
    pub resource_types: Vec<String>,
    /// PEM bundle that verifies an https base URL (e.g. a test CA).
    pub ca_file: Option<PathBuf>,
    /// Write one JSON line per HTTP exchange here (method, URL, status, bodies; no headers).
    pub trace_file: Option<PathBuf>,
}

/// Runs every `scim2-tester` check against `base_url` (e.g. `http://127.0.0.1:PORT/scim/v2`) with the bearer
/// `token`. Results that are failures come back as [`ScimCheck`]s, not as `Err`: `Err` means the checker
/// itself could not run.
///
/// Async on purpose: the server under test usually runs in the calling test's runtime, which must keep
/// serving while the checker's requests arrive.
pub async fn run_compliance(base_url: &str, token: &str) -> anyhow::Result<Vec<ScimCheck>> {
    run_compliance_with(base_url, token, &ComplianceOptions::default()).await
}

/// [`run_compliance`] with tag and resource-type selection, a CA bundle and an HTTP trace.
pub async fn run_compliance_with(
    base_url: &str,
    token: &str,
    options: &ComplianceOptions,
) -> anyhow::Result<Vec<ScimCheck>> {
    if !available() {
        bail!(
            "scim2-tester is not installed in {}: run scripts/test (it installs scim2-tester==0.5.2 and \
             scim2-cli==0.6.0 into that venv with pip)",
            venv_dir().display()
        );
    }
    let script = peers_dir().join("scim/scim-check.py");
    write_if_changed(&script, SCIM_CHECK_PY)?;
    let out_dir = tempfile::Builder::new().prefix("kubehero-scim-check").tempdir()?;
    let results = out_dir.path().join("results.json");

    let mut cmd = Command::new(python());
    cmd.arg(&script).arg(base_url).arg("--json").arg(&results);
    if let Some(trace) = &options.trace_file {
        cmd.arg("--trace").arg(trace);
    }
    for (flag, values) in [
        ("--include", &options.include_tags),
        ("--exclude", &options.exclude_tags),
        ("--resource-type", &options.resource_types),
    ] {
        if !values.is_empty() {
            cmd.arg(flag).args(values);
        }
    }
    cmd.env("SCIM_TOKEN", token);
    match &options.ca_file {
        Some(ca) => cmd.env("SCIM_CA_FILE", ca),
        None => cmd.env_remove("SCIM_CA_FILE"),
    };
    let child = cmd
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", python().display()))?;
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("scim2-tester did not finish within {} s against {base_url}", RUN_LIMIT.as_secs()))??;

    // The script writes the results last, so a results file means the run completed (its exit status only
    // says whether some check failed).
    let Ok(text) = std::fs::read_to_string(&results) else {
        let redact = |b: &[u8]| String::from_utf8_lossy(b).replace(token, "<redacted>");
        bail!(
            "scim2-tester failed ({}) against {base_url}:\n{}\n{}",
            out.status,
            redact(&out.stdout),
            redact(&out.stderr)
        );
    };
    parse_results(&text)
}

fn parse_results(text: &str) -> anyhow::Result<Vec<ScimCheck>> {
    let v: serde_json::Value = serde_json::from_str(text).context("parsing scim-check.py's results")?;
    let items = v.as_array().ok_or_else(|| anyhow!("scim-check.py's results are not a JSON array"))?;
    items.iter().map(parse_check).collect()
}

fn parse_check(v: &serde_json::Value) -> anyhow::Result<ScimCheck> {
    let text = |k: &str| v[k].as_str().map(str::to_string);
    Ok(ScimCheck {
        status: text("status").ok_or_else(|| anyhow!("a scim2-tester result has no status: {v}"))?,
        resource_type: text("resource_type"),
        title: text("title").unwrap_or_default(),
        reason: text("reason").unwrap_or_default(),
        tags: v["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        description: text("description").unwrap_or_default(),
        data: text("data"),
    })
}

/// The script as `scripts/test` and [`run_compliance`] install it next to the venv (for running by hand:
/// `SCIM_TOKEN=… $KUBEHERO_PEERS_DIR/scim/venv/bin/python $KUBEHERO_PEERS_DIR/scim/scim-check.py URL`).
pub fn script_path() -> PathBuf {
    peers_dir().join("scim/scim-check.py")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_results_and_counts_statuses() {
        let json = r#"[
          {"status": "SUCCESS", "resource_type": null, "title": "query_all_schemas", "description": "d",
           "reason": "Schemas available are: 'User'", "tags": ["discovery", "schemas"], "data": null},
          {"status": "ERROR", "resource_type": "Group", "title": "check_add_attribute", "description": "",
           "reason": "Failed to add attribute 'members'", "tags": ["patch:add"], "data": "{\"urn\": \"members\"}"}
        ]"#;
        let checks = parse_results(json).unwrap();
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].resource_type, None);
        assert_eq!(checks[0].tags, ["discovery", "schemas"]);
        assert!(!checks[0].is_failure());
        assert!(checks[1].is_failure());
        assert_eq!(checks[1].to_string(), "ERROR Group check_add_attribute: Failed to add attribute 'members'");
        assert_eq!(summary(&checks), BTreeMap::from([("ERROR".to_string(), 1), ("SUCCESS".to_string(), 1)]));
    }

    #[test]
    fn rejects_results_without_status() {
        assert!(parse_results(r#"[{"title": "x"}]"#).is_err());
        assert!(parse_results("{}").is_err());
    }
}
