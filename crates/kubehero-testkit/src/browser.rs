//! A real browser for dashboard tests: Debian's `chromium` driven by the npm `playwright-core`.
//! [`sign_in_and_out`] runs `node signin.mjs`, which signs in to a KubeHero dashboard through the npm
//! `oidc-provider`'s devInteractions pages, reloads, signs out and reports where it ended up.
//!
//! Both are installed by `scripts/test`: `chromium` with apt, `playwright-core` (pinned to 1.65.1, no browser
//! download) and `axe-core` (4.14.1, the accessibility checks of `dashboard.mjs`) into
//! `$KUBEHERO_PEERS_DIR/browser`; this module only checks they are there and says how to
//! install them when they are not.

use crate::oidc::peers_dir;
use crate::oidc::write_if_changed;
use anyhow::{anyhow, bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

const COMMON_MJS: &str = include_str!("../browser/common.mjs");
const SIGNIN_MJS: &str = include_str!("../browser/signin.mjs");
const SHARE_MJS: &str = include_str!("../browser/share.mjs");
const DASHBOARD_MJS: &str = include_str!("../browser/dashboard.mjs");
const PACKAGE_JSON: &str = include_str!("../browser/package.json");

/// A sign-in or share-link run (launch, sign-in, a few pages) must finish within this.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The directory holding `node_modules/playwright-core`.
pub fn browser_dir() -> PathBuf {
    peers_dir().join("browser")
}

/// The Chromium executable: `$CHROMIUM`, else `chromium` on `PATH`, else `/usr/bin/chromium`.
pub fn chromium() -> anyhow::Result<PathBuf> {
    if let Some(c) = std::env::var_os("CHROMIUM").map(PathBuf::from) {
        if !c.is_file() {
            bail!("CHROMIUM={} is not a file: unset it, or run scripts/test to install Debian's chromium", c.display());
        }
        return Ok(c);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file());
    match on_path {
        Some(p) => Ok(p),
        None if Path::new("/usr/bin/chromium").is_file() => Ok(PathBuf::from("/usr/bin/chromium")),
        None => bail!("chromium is not installed: run scripts/test (it installs Debian's `chromium` with apt)"),
    }
}

/// What the browser saw.
#[derive(Debug, Clone)]
pub struct BrowserReport {
    /// The subject on the landing page (`#who strong`).
    pub who: String,
    /// The role on the landing page (`#role strong`).
    pub role: String,
    /// The subject on the landing page after a reload.
    pub after_reload_who: String,
    /// Where the browser ended up after signing out.
    pub final_url: String,
    /// Whether that final page has the IdP's login form.
    pub final_has_login_form: bool,
    /// `login.png` (the IdP's login page) and `landing.png` (KubeHero's `/` when signed in).
    pub screenshots: Vec<PathBuf>,
}

/// Opens `kubehero_url` in headless Chromium, signs `login` in through the IdP's devInteractions login and
/// consent pages, reads identity and role from the landing page, reloads, clicks `#logout`, confirms the
/// IdP's end-session page and waits for the sign-in page again. Screenshots (and the step log `signin.log`)
/// go to `artefacts`.
pub async fn sign_in_and_out(kubehero_url: &str, login: &str, artefacts: &Path) -> anyhow::Result<BrowserReport> {
    let env = [("KUBEHERO_URL", kubehero_url), ("LOGIN", login)];
    let v = run("signin.mjs", SIGNIN_MJS, &env, artefacts, RUN_LIMIT).await?;
    let s = |k: &str| -> anyhow::Result<String> {
        v[k].as_str().map(str::to_string).ok_or_else(|| anyhow!("no {k} in the browser's result {v}"))
    };
    Ok(BrowserReport {
        who: s("who")?,
        role: s("role")?,
        after_reload_who: s("after_reload_who")?,
        final_url: s("final_url")?,
        final_has_login_form: v["final_has_login_form"].as_bool().unwrap_or(false),
        screenshots: v["screenshots"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(PathBuf::from))
            .collect(),
    })
}

/// What the browser saw at a share link.
#[derive(Debug, Clone)]
pub struct ShareReport {
    /// Why the page refused the link (`not_recipient`, `expired`, …), or `None` when it was accepted.
    pub refused: Option<String>,
    /// The page's fields (`cluster`, `role`, `scope`, `expires`, `shared_by`, `cli`) before accepting.
    pub shown: serde_json::Value,
    /// The downloaded kubeconfig.
    pub kubeconfig: String,
}

/// Opens a share link as `login`, who is not signed in: through the IdP's devInteractions login and back to
/// the link, then accepts it and downloads the kubeconfig (or reports why the page refused it). The
/// screenshot and download go to `artefacts`.
pub async fn open_share(link: &str, login: &str, artefacts: &Path) -> anyhow::Result<ShareReport> {
    let v = run("share.mjs", SHARE_MJS, &[("LINK", link), ("LOGIN", login)], artefacts, RUN_LIMIT).await?;
    Ok(ShareReport {
        refused: v["refused"].as_str().map(str::to_string),
        shown: v["shown"].clone(),
        kubeconfig: v["kubeconfig"].as_str().unwrap_or_default().to_string(),
    })
}

/// Who and what the dashboard run uses.
pub struct DashboardRun<'a> {
    pub url: &'a str,
    /// Signs in as an admin, a viewer and an owner.
    pub admin: &'a str,
    pub viewer: &'a str,
    pub owner: &'a str,
    /// More people (comma-separated logins) whose every page is checked: the other roles.
    pub extra: &'a str,
    /// The cluster the admin adds.
    pub cluster: &'a str,
    /// Where the script writes `join.txt` (the join command the page showed) for the test to start the agent.
    pub handshake: &'a Path,
    /// Where the screenshots go.
    pub shots: &'a Path,
    pub artefacts: &'a Path,
}

/// Runs `dashboard.mjs` (see its header: flows by clicking as an admin and a viewer, axe-core on every page,
/// screenshots) and gives back its result.
pub async fn dashboard(d: &DashboardRun<'_>) -> anyhow::Result<serde_json::Value> {
    let (handshake, shots) = (d.handshake.to_string_lossy(), d.shots.to_string_lossy());
    let env = [
        ("KUBEHERO_URL", d.url),
        ("ADMIN", d.admin),
        ("VIEWER", d.viewer),
        ("OWNER", d.owner),
        ("EXTRA", d.extra),
        ("CLUSTER", d.cluster),
        ("HANDSHAKE", &*handshake),
        ("SHOTS", &*shots),
    ];
    run("dashboard.mjs", DASHBOARD_MJS, &env, d.artefacts, Duration::from_secs(240)).await
}

/// Runs one of the browser scripts with `env` and gives back its `RESULT` JSON; its step log is kept in
/// `artefacts/<script>.log`.
async fn run(
    name: &str,
    source: &str,
    env: &[(&str, &str)],
    artefacts: &Path,
    limit: Duration,
) -> anyhow::Result<serde_json::Value> {
    let chromium = chromium()?;
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core/package.json").exists() {
        bail!(
            "the npm playwright-core is not installed in {}: run scripts/test (or `npm install` there)",
            dir.display()
        );
    }
    std::fs::create_dir_all(artefacts).with_context(|| format!("creating {}", artefacts.display()))?;
    let artefacts = std::fs::canonicalize(artefacts)?;
    write_if_changed(&dir.join("package.json"), PACKAGE_JSON)?;
    write_if_changed(&dir.join("common.mjs"), COMMON_MJS)?;
    let script = dir.join(name);
    write_if_changed(&script, source)?;
    let mut cmd = Command::new("node");
    cmd.arg(&script).env("ARTEFACTS", &artefacts).env("CHROMIUM", &chromium);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting node {name}"))?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("the browser run did not finish within {} s", limit.as_secs()))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ =
        std::fs::write(artefacts.join(format!("{}.log", name.trim_end_matches(".mjs"))), format!("{stdout}\n{stderr}"));
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        bail!("the browser run failed ({}):\n{stdout}\n{stderr}", out.status);
    };
    serde_json::from_str(line).with_context(|| format!("parsing {line}"))
}
