//! The dashboard in real Chromium (npm `playwright-core`), signed in through the real npm `oidc-provider` as an
//! admin and a viewer, with a real kube-apiserver behind the real agent code: the flows by clicking, no console
//! error and no failed request on any page, axe-core with no serious or critical violation, a viewer without
//! write controls whose forged write is refused, and screenshots (light, dark; wide, narrow) in
//! `target/ui-shots/`.

use crate::shares::access_server;
use kubehero_testkit::browser::{dashboard, DashboardRun};
use kubehero_testkit::kubeapi::KubeApiServer;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `$KUBEHERO_UI_SHOTS`, else `<workspace>/target/ui-shots` (git-ignored; CI keeps it).
fn shots_dir() -> PathBuf {
    match std::env::var_os("KUBEHERO_UI_SHOTS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-shots"),
    }
}

/// The value after `flag` in a command line.
fn arg(command: &str, flag: &str) -> String {
    let mut words = command.split_whitespace();
    words.by_ref().find(|w| *w == flag);
    words.next().unwrap_or_else(|| panic!("no {flag} in {command}")).to_string()
}

#[tokio::test]
async fn the_dashboard_works_for_an_admin_and_a_viewer_in_a_real_browser() {
    let chromium = kubehero_testkit::browser::chromium();
    assert!(chromium.is_ok(), "{:#}", chromium.unwrap_err());
    let dir = tempfile::tempdir().unwrap();
    // Every role signs in: alice admin, bob viewer, carol auditor (group oncall), dave member (a binding), erin owner.
    let roles = [("KUBEHERO_GROUP_ROLES", "kubehero-admins=admin,kubehero-owners=owner,oncall=auditor")];
    let (ts, _idp, _) = access_server(dir.path(), &roles).await;
    let dave = json!({"subject": {"kind": "user", "name": "dave@example.com"}, "role": "member"});
    let r = ts.call(reqwest::Method::POST, "/api/v1/role-bindings", Some(crate::support::OWNER), Some(dave)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let k = KubeApiServer::start().await.unwrap();
    k.kubehero_rbac().await.unwrap();
    let sa = dir.path().join("sa.kubeconfig");
    std::fs::write(&sa, k.service_account_kubeconfig("kubehero-system", "kubehero-agent").await.unwrap()).unwrap();
    let handshake = dir.path().join("handshake");
    std::fs::create_dir_all(&handshake).unwrap();
    let shots = shots_dir();
    let _ = std::fs::remove_dir_all(&shots);

    let (url, hs, sh, art) = (ts.url.clone(), handshake.clone(), shots.clone(), dir.path().join("browser"));
    let run = tokio::spawn(async move {
        let d = DashboardRun {
            url: &url,
            admin: "alice",
            viewer: "bob",
            owner: "erin",
            extra: "carol,dave",
            cluster: "edge-ui",
            handshake: &hs,
            shots: &sh,
            artefacts: &art,
        };
        dashboard(&d).await
    });
    // The page showed the join command: run the agent with it, as the person would.
    let t0 = Instant::now();
    let command = loop {
        if let Ok(c) = std::fs::read_to_string(handshake.join("join.txt")) {
            break c;
        }
        if run.is_finished() {
            panic!("the browser run ended before the join command: {:?}", run.await.unwrap());
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "the page never showed a join command");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(command.starts_with("kubehero agent --server https://"), "{command}");
    let join = json!({ "token": arg(&command, "--join-token"), "ca_hash": arg(&command, "--ca-hash") });
    let _agent = crate::kube::run_agent(&ts, "edge-ui", &join, &sa, &dir.path().join("agent")).await;
    let r: Value = run.await.unwrap().unwrap_or_else(|e| panic!("{e:#}"));

    // The flows, by clicking.
    assert_eq!((r["viewer_add_form"].as_u64(), r["viewer_says_hidden"].as_u64()), (Some(0), Some(1)), "{r}");
    assert_eq!(r["viewer_remove_form"], 0, "a viewer sees no removal form");
    assert_eq!((r["asked"].as_bool(), r["approved_rows_left"].as_u64()), (Some(true), Some(0)), "{r}");
    assert_eq!(r["granted"], true, "the viewer's Access page shows member from the elevation: {r}");
    assert_eq!(r["forged_status"], 403, "a write without the session's CSRF token is refused");
    assert_eq!(r["viewer_admin_post"], 403, "an admin's form posted by a viewer (with a good CSRF token) is refused");
    assert_eq!(r["back_after_expiry"], true, "a session that ended mid-form signs in again and comes back");
    assert_eq!(r["tailed"], true, "the live tail showed a new row");
    // An API key: shown once (not on the page again), then revoked.
    assert_eq!((r["key_prefix"].as_str(), r["key_shown_again"].as_bool()), (Some("khk_"), Some(false)), "{r}");
    assert_eq!(r["key_revoked"], true);
    // A policy: a stale edit is refused with what to do; armed; the history shows it.
    assert!(r["stale"].as_str().unwrap().contains("Someone changed this"), "{r}");
    assert_eq!(r["armed"], "armed");
    assert!(r["history"].as_str().unwrap().contains("arm"), "{r}");
    // The audit log filtered to the approval, and exported.
    assert_eq!(r["audit_rows"], 1, "{r}");
    let lines = r["export_lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{r}");
    let exported: Value = serde_json::from_str(lines[0].as_str().unwrap()).unwrap();
    assert_eq!(exported["action"], "access.approve");
    assert!(exported["mac"].as_str().is_some_and(|m| m.len() == 64), "each line carries its MAC");
    // A viewer: no policy actions, no audit log (and no link to it).
    assert_eq!(r["viewer_policy_actions"], 0);
    assert_eq!(r["viewer_audit"], json!({"hidden": 1, "nav": 0}));
    // People and settings are for owners and auditors; the bindings editor for owners.
    assert_eq!(r["viewer_people"], json!({"hidden": 1, "nav": 0}));
    assert_eq!(r["viewer_binding_form"], 0);
    assert_eq!((r["binding_added"].as_u64(), r["binding_left"].as_u64()), (Some(1), Some(0)), "{r}");
    // No console error or failed request on any of KubeHero's pages.
    let ours: Vec<&Value> = r["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["url"].as_str().unwrap_or("").starts_with(&ts.url))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    // axe-core: no serious or critical violation on any page, for any role.
    let pages = r["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 44, "11 pages as the viewer, the auditor and the member, 7 as the admin, 4 as the owner");
    let bad: Vec<&Value> = pages
        .iter()
        .flat_map(|p| p["violations"].as_array().unwrap().iter())
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    // Every admin page, light and dark, wide and narrow.
    let files = r["screenshots"].as_array().unwrap();
    assert_eq!(files.len(), 44, "11 pages, light and dark, wide and narrow");
    for f in files {
        let png = std::fs::read(f.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 2000, "{f}");
    }
    // The approval, the key and the policy are audit rows like any other; reading and exporting the log too.
    let acts = [
        ("access.approve", 1),
        ("api_key.create", 1),
        ("api_key.revoke", 1),
        ("policy.arm", 1),
        ("role_binding.create", 2),
        ("role_binding.delete", 1),
    ];
    for (action, n) in acts {
        let rows = ts.get(&format!("/api/v1/audit?action={action}"), Some(crate::support::OWNER)).await;
        let ok = rows.body["items"].as_array().unwrap().iter().filter(|r| r["result"]["outcome"] == "ok").count();
        assert_eq!(ok, n, "{action}: {}", rows.body);
    }
    for action in ["audit.read", "audit.export"] {
        let rows = ts.get(&format!("/api/v1/audit?action={action}"), Some(crate::support::OWNER)).await;
        assert!(!rows.body["items"].as_array().unwrap().is_empty(), "{action}");
    }
}
