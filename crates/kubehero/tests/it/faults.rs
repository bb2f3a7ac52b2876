//! Faults under the real binary: a full disk (the data directory on a 3 MB tmpfs) and an audit insert that
//! the database refuses (PostgreSQL). A change and its audit row commit together or not at all.

use crate::support::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// A tmpfs of `size` mounted at `dir` for the life of the value (needs root; `None` otherwise).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Labels that make one cluster row about 16 KB.
fn big_labels(i: usize) -> Value {
    let labels: serde_json::Map<String, Value> =
        (0..60).map(|k| (format!("k{k}"), json!(format!("{i}-{}", "v".repeat(250))))).collect();
    Value::Object(labels)
}

/// `cluster.register` rows that succeeded, by cluster name, read from the database file.
async fn registered_rows(database_url: &str) -> HashMap<String, usize> {
    let store = kubehero_store::open(database_url).await.unwrap();
    let mut out = HashMap::new();
    for r in store.audit_rows(0, 100_000).await.unwrap() {
        let v: Value = serde_json::from_str(&r.body).unwrap();
        if v["action"] == "cluster.register" && v["result"]["outcome"] == "ok" {
            *out.entry(v["target"]["id"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    out
}

#[tokio::test]
async fn on_a_full_disk_no_change_is_kept_without_its_audit_row() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let Some(mount) = Tmpfs::mount(&dir, "3m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root (mount -t tmpfs); run the suite as root to test a full disk");
        return;
    };
    // Room to give back later: the disk is full while this file exists.
    std::fs::write(dir.join("ballast"), vec![0u8; 600 * 1024]).unwrap();
    let db = format!("sqlite:{}", dir.join("kubehero.db").display());
    let env = base_env(&dir, &db);
    let serve = Serve::start(&env).await;
    let http = reqwest::Client::new();
    let mut created = Vec::new();
    let mut refused = Vec::new();
    for i in 0..400 {
        let name = format!("c{i}");
        let r = http
            .post(format!("{}/api/v1/clusters", serve.url))
            .bearer_auth(ADMIN)
            .json(&json!({ "name": name, "labels": big_labels(i) }))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            201 => created.push(name),
            503 => refused.push(name),
            other => panic!("POST {name}: {other} {}", r.text().await.unwrap()),
        }
        if refused.len() >= 5 {
            break;
        }
    }
    assert!(refused.len() >= 5, "the disk never filled: {} created", created.len());
    // Readiness says so while the log cannot be written.
    let ready = http.get(format!("{}/readyz", serve.url)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "{}", ready.text().await.unwrap());

    // Room again: the server recovers by itself, and what it refused was never kept.
    std::fs::remove_file(dir.join("ballast")).unwrap();
    for name in &refused {
        let r = http.get(format!("{}/api/v1/clusters/{name}", serve.url)).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(r.status(), 404, "{name} was refused (503) but exists");
    }
    let again = http
        .post(format!("{}/api/v1/clusters", serve.url))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": refused[0] }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201, "a refused name is free: {}", again.text().await.unwrap());
    created.push(refused[0].clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = http.get(format!("{}/readyz", serve.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    serve.terminate().await;

    // Every cluster in the database has exactly one successful register row, and there are no others.
    let rows = registered_rows(&db).await;
    let store = kubehero_store::open(&db).await.unwrap();
    let clusters: Vec<String> = store.list_clusters().await.unwrap().into_iter().map(|c| c.name).collect();
    let mut expected = created.clone();
    expected.sort();
    let mut have = clusters.clone();
    have.sort();
    assert_eq!(have, expected);
    for c in &clusters {
        assert_eq!(rows.get(c), Some(&1), "{c}: its register row");
    }
    assert_eq!(rows.len(), clusters.len(), "a row for a cluster that does not exist");
    let (code, out) = audit_cli(&env, &["verify"]).await;
    assert_eq!(code, 0, "{out}");
    println!("full disk: {} created, {} refused and absent, verify: {}", created.len(), refused.len(), out.trim());
    drop(store);
    drop(mount);
}

#[tokio::test]
async fn on_postgresql_a_failing_audit_insert_takes_the_change_with_it() {
    let pg = kubehero_testkit::postgres::TempPostgres::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(dir.path(), &pg.url);
    let scim_token = "scim-token-0123456789abcdefghijklmnop";
    env.insert("KUBEHERO_SCIM_TOKEN".into(), scim_token.into());
    let serve = Serve::start(&env).await;
    let http = reqwest::Client::new();
    let scim_user = |name: &str| {
        http.post(format!("{}/scim/v2/Users", serve.url))
            .bearer_auth(scim_token)
            .json(&json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name }))
            .send()
    };
    let post = |name: &str| {
        http.post(format!("{}/api/v1/clusters", serve.url)).bearer_auth(ADMIN).json(&json!({ "name": name })).send()
    };
    assert_eq!(post("before").await.unwrap().status(), 201);
    // The database refuses every new audit row (as a full disk or a broken trigger would).
    let sql = sqlx::PgPool::connect(&pg.url).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$; \
         CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit();",
    )
    .execute(&sql)
    .await
    .unwrap();
    let r = post("during").await.unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    let r = scim_user("carol@example.com").await.unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    let ready = http.get(format!("{}/readyz", serve.url)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "readiness while the log refuses rows");
    sqlx::raw_sql("DROP TRIGGER refuse_audit ON audit_log;").execute(&sql).await.unwrap();
    let r = http.get(format!("{}/api/v1/clusters/during", serve.url)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 404, "the refused change was not kept");
    assert_eq!(post("during").await.unwrap().status(), 201, "and its name is free");
    // The SCIM user refused with it was not kept either: the same userName is free.
    let r = scim_user("carol@example.com").await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    serve.terminate().await;
    let rows = registered_rows(&pg.url).await;
    assert_eq!(rows.get("before"), Some(&1));
    assert_eq!(rows.get("during"), Some(&1));
    let (code, out) = audit_cli(&env, &["verify"]).await;
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn a_damaged_database_is_refused_at_start_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubehero.db");
    let db = format!("sqlite:{}", path.display());
    let env = base_env(dir.path(), &db);
    let serve = Serve::start(&env).await;
    let http = reqwest::Client::new();
    for i in 0..50 {
        let r = http
            .post(format!("{}/api/v1/clusters", serve.url))
            .bearer_auth(ADMIN)
            .json(&json!({ "name": format!("c{i}"), "labels": big_labels(i) }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    serve.terminate().await;
    // Everything into the main file, then overwrite the middle of it (b-tree pages) with garbage.
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await.unwrap();
    pool.close().await;
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8192] {
        *b = 0xA5;
    }
    std::fs::write(&path, bytes).unwrap();
    let out = tokio::process::Command::new(bin()).arg("serve").env_clear().envs(&env).output().await.unwrap();
    assert!(!out.status.success(), "serve started on a damaged database");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is damaged (PRAGMA quick_check") && err.contains("Fix:"), "{err}");
}

#[tokio::test]
async fn audit_verify_neither_creates_nor_migrates_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubehero.db");
    let db = format!("sqlite:{}", path.display());
    let env = base_env(dir.path(), &db);
    // No database: an error, and still no file.
    let (code, _) = audit_cli(&env, &["verify"]).await;
    assert_ne!(code, 0);
    assert!(!path.exists(), "verify created a database");
    // A database one schema version behind: refused with the fix, and left as it was.
    let serve = Serve::start(&env).await;
    serve.terminate().await;
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let latest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations").fetch_one(&pool).await.unwrap();
    sqlx::query("DELETE FROM schema_migrations WHERE version = ?").bind(latest).execute(&pool).await.unwrap();
    let out =
        tokio::process::Command::new(bin()).args(["audit", "verify"]).env_clear().envs(&env).output().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("schema version {}", latest - 1)) && err.contains("Fix:"), "{err}");
    let now: i64 = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations").fetch_one(&pool).await.unwrap();
    assert_eq!(now, latest - 1, "verify migrated the database");
}

#[tokio::test]
async fn a_deleted_wal_stops_writes_instead_of_losing_acknowledged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubehero.db");
    let db = format!("sqlite:{}", path.display());
    let env = base_env(dir.path(), &db);
    let serve = Serve::start(&env).await;
    let http = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        if i == 100 {
            std::fs::remove_file(dir.path().join("kubehero.db-wal")).unwrap();
        }
        let name = format!("w{i}");
        let r = http
            .post(format!("{}/api/v1/clusters", serve.url))
            .bearer_auth(ADMIN)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            201 => acknowledged.push(name),
            503 => refused += 1,
            other => panic!("{name}: {other}"),
        }
    }
    assert_eq!(acknowledged.len(), 100, "writes after the deletion were acknowledged");
    assert_eq!(refused, 100);
    let ready = http.get(format!("{}/readyz", serve.url)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    serve.kill9().await;
    // After a restart every acknowledged write is there.
    let serve = Serve::start(&env).await;
    for name in &acknowledged {
        let r = http.get(format!("{}/api/v1/clusters/{name}", serve.url)).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(r.status(), 200, "{name} was acknowledged and is gone");
    }
    serve.terminate().await;
}

#[tokio::test]
async fn replicas_and_tools_with_other_audit_keys_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    let env = base_env(dir.path(), &db);
    let serve = Serve::start(&env).await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/clusters", serve.url))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": "one" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    serve.terminate().await; // writes a checkpoint at shutdown

    // A second replica with its own checkpoint signing key.
    let mut other = env.clone();
    other.insert("KUBEHERO_AUDIT_SIGNING_KEY".into(), dir.path().join("other.pk8").display().to_string());
    other.insert("KUBEHERO_LISTEN".into(), format!("127.0.0.1:{}", kubehero_testkit::oidc::free_port().unwrap()));
    let out = tokio::process::Command::new(bin()).arg("serve").env_clear().envs(&other).output().await.unwrap();
    assert!(!out.status.success(), "a replica with another signing key started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another replica signed an audit checkpoint") && err.contains("Fix:"), "{err}");

    // A CLI on a host with another AUDIT_HMAC_KEY writes nothing.
    let mut wrong = env.clone();
    wrong.insert("AUDIT_HMAC_KEY".into(), "another-hmac-key-0123456789abcdefghij".into());
    let run = |env: HashMap<String, String>| async move {
        tokio::process::Command::new(bin())
            .args(["apikey", "create", "--name", "ci", "--role", "viewer", "--owner", "ops"])
            .env_clear()
            .envs(&env)
            .output()
            .await
            .unwrap()
    };
    let out = run(wrong.clone()).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("neither this AUDIT_HMAC_KEY") && err.contains("Fix:"), "{err}");
    let store = kubehero_store::open(&db).await.unwrap();
    assert!(store.list_api_keys(None).await.unwrap().is_empty(), "a key was created anyway");
    drop(store);
    // After a rotation, with the chain's key listed as a previous key, it writes (and verify passes).
    wrong.insert("KUBEHERO_AUDIT_PREVIOUS_KEYS".into(), AUDIT_KEY.into());
    let out = run(wrong.clone()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, report) = audit_cli(&wrong, &["verify"]).await;
    assert_eq!(code, 0, "{report}");
}
