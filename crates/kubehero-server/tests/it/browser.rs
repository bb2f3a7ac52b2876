//! Dashboard sign-in in a real browser: headless Chromium (driven by the npm `playwright-core`) signs in
//! through the real npm `oidc-provider`'s devInteractions pages, sees identity and role on the landing page,
//! stays signed in across a reload, signs out through the IdP's end-session page and is sent to sign in again.
//! Screenshots of the IdP's login page and KubeHero's landing page are kept as test artefacts.

use crate::login::setup;
use std::path::PathBuf;
use std::sync::Arc;

/// `$KUBEHERO_TEST_ARTEFACTS`, else `<workspace>/target/test-artefacts/browser` (git-ignored; CI keeps it).
fn artefacts_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KUBEHERO_TEST_ARTEFACTS") {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artefacts/browser")
}

#[tokio::test]
async fn browser_signs_in_reloads_and_signs_out() {
    // Missing chromium or playwright-core is a failure that says to run scripts/test, never a silent skip.
    let chromium = kubehero_testkit::browser::chromium();
    assert!(chromium.is_ok(), "{:#}", chromium.unwrap_err());

    let (ts, idp) = setup(Arc::new(kubehero_server::state::SystemClock)).await;
    let artefacts = artefacts_dir();
    for f in ["login.png", "landing.png"] {
        let _ = std::fs::remove_file(artefacts.join(f));
    }
    let r = kubehero_testkit::browser::sign_in_and_out(&ts.url, "alice", &artefacts)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("browser report: {r:?}");

    assert_eq!((r.who.as_str(), r.role.as_str()), ("alice", "admin"), "{r:?}");
    assert_eq!(r.after_reload_who, "alice", "the reload kept the session: {r:?}");
    // Signed out: KubeHero's /login sent the browser on to the IdP's login page again.
    let at_idp_login = r.final_url.starts_with(&format!("{}/interaction/", idp.issuer)) && r.final_has_login_form;
    let at_kubehero_login = r.final_url.starts_with(&format!("{}/login", ts.url));
    assert!(at_idp_login || at_kubehero_login, "not sent to sign in again: {r:?}");

    assert_eq!(r.screenshots.len(), 2, "{r:?}");
    for shot in &r.screenshots {
        let png = std::fs::read(shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
        assert!(png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", shot.display());
    }
    let names: Vec<_> = r.screenshots.iter().filter_map(|p| p.file_name()?.to_str()).collect();
    assert_eq!(names, ["login.png", "landing.png"]);
}
