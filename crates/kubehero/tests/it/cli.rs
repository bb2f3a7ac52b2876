//! The binary on the shell: `kubehero apikey` changes on the server host are audited like API requests; bad
//! log settings stop start-up.

use crate::support::*;
use tokio::process::Command;

#[tokio::test]
async fn apikey_changes_from_the_shell_are_audit_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    let mut env = base_env(dir.path(), &db);
    env.insert("USER".into(), "ops-alice".into());
    let out = Command::new(bin())
        .args(["apikey", "create", "--name", "ci", "--role", "member"])
        .env_clear()
        .envs(&env)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("khk_"));
    let id = kubehero_authn::sha256_hex(&key)[..16].to_string();
    let out = Command::new(bin()).args(["apikey", "revoke", &id]).env_clear().envs(&env).output().await.unwrap();
    assert!(out.status.success());
    let (code, export) = audit_cli(&env, &["export"]).await;
    assert_eq!(code, 0);
    let rows: Vec<serde_json::Value> = export
        .lines()
        .filter(|l| !l.starts_with("{\"checkpoint\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (r["action"].as_str().unwrap(), r["actor"]["sub"].as_str().unwrap(), r["target"]["id"].as_str().unwrap())
        })
        .collect();
    assert_eq!(actions, [("api_key.create", "ops-alice", id.as_str()), ("api_key.revoke", "ops-alice", id.as_str())]);
    assert!(!export.contains(&key), "the key itself is never in the log");
    let (code, out) = audit_cli(&env, &["verify"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("2 rows verified, intact through seq 2"), "{out}");
}

/// A bad log setting stops start-up with the usual one-line error (it used to fall back to `info` silently).
#[tokio::test]
async fn bad_log_settings_stop_start_up() {
    for (name, value, says) in [
        ("KUBEHERO_LOG", "info,[[[", "KUBEHERO_LOG: \"info,[[[\" is not a log filter"),
        ("KUBEHERO_LOG_FORMAT", "xml", "KUBEHERO_LOG_FORMAT: \"xml\" is not a format"),
    ] {
        let out = Command::new(bin()).arg("serve").env_clear().env(name, value).output().await.unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(&format!("error: {says}")) && err.contains("Fix:"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
