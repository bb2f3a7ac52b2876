//! Durability of the audit log under `kill -9`, and several `serve` processes writing one chain.

use crate::support::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_write_load_loses_no_answered_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    let env = base_env(dir.path(), &db);
    let answered: Answered = Default::default();
    for round in 0..4 {
        let serve = Serve::start(&env).await;
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load(&serve.url, 16, &format!("r{round}"), answered.clone(), stop.clone());
        tokio::time::sleep(Duration::from_millis(700 + 200 * round)).await;
        serve.kill9().await;
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        let (ids, seqs) = logged(&db).await;
        // Mutations are durable before their answer; plain reads (KUBEHERO_AUDIT_READS=async, the default) may
        // lose the rows of the last flush interval to a crash, and only those.
        let lost = check_every_answer_logged(&answered, &ids, &seqs, mutation_or_error);
        eprintln!("round {round}: {} answered, {} rows, {lost} reads lost", answered.lock().unwrap().len(), seqs.len());
        let (code, out) = audit_cli(&env, &["verify"]).await;
        assert_eq!(code, 0, "round {round}: {out}");
        assert!(out.starts_with(&format!("{} rows verified, intact through seq {}", seqs.len(), seqs.len())), "{out}");
    }
    // Each mutation that was answered 201 is in the database too.
    let created = answered.lock().unwrap().iter().filter(|(_, s)| *s == 201).count();
    assert!(created > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_write_one_chain() {
    let pg = kubehero_testkit::postgres::TempPostgres::start().await.unwrap();
    let shared = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut env_a = base_env(a_dir.path(), &pg.url);
    let mut env_b = base_env(b_dir.path(), &pg.url);
    // Replicas share the checkpoint signing key like they share AUDIT_HMAC_KEY; both may create it at once.
    let key = shared.path().join("signing.pk8").display().to_string();
    env_a.insert("KUBEHERO_AUDIT_SIGNING_KEY".into(), key.clone());
    env_b.insert("KUBEHERO_AUDIT_SIGNING_KEY".into(), key);
    env_a.insert("KUBEHERO_AUDIT_CHECKPOINT_SECS".into(), "1".into());
    env_b.insert("KUBEHERO_AUDIT_CHECKPOINT_SECS".into(), "1".into());
    let (a, b) = tokio::join!(Serve::start(&env_a), Serve::start(&env_b));
    let answered: Answered = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = load(&a.url, 8, "a", answered.clone(), stop.clone());
    clients.extend(load(&b.url, 8, "b", answered.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    tokio::join!(a.terminate(), b.terminate());
    let (ids, seqs) = logged(&pg.url).await;
    // A clean shutdown commits the reads that were not waited for: every answer has its row.
    assert_eq!(check_every_answer_logged(&answered, &ids, &seqs, |_| true), 0);
    let (code, out) = audit_cli(&env_a, &["verify"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("intact through seq {}", seqs.len())), "{out}");
    assert!(!out.contains("no signed checkpoint"), "{out}");
    // The export verifies too, and a modified copy names the row.
    let export = a_dir.path().join("export.jsonl");
    let (code, _) = audit_cli(&env_a, &["export", "--out", export.to_str().unwrap()]).await;
    assert_eq!(code, 0);
    let (code, out) = audit_cli(&env_a, &["verify", "--file", export.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&export).unwrap();
    let tampered = text.replacen("\"action\":\"whoami\"", "\"action\":\"whoamI\"", 1);
    let first_whoami = text.lines().position(|l| l.contains("\"action\":\"whoami\"")).unwrap() as i64 + 1;
    std::fs::write(&export, tampered).unwrap();
    let (code, out) = audit_cli(&env_a, &["verify", "--file", export.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with(&format!("chain broken at seq {first_whoami}: modified")), "{out}");
}

/// Whether the replica at `url` says it holds the singleton lease.
async fn holds_lease(url: &str) -> bool {
    let text = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
    text.lines().any(|l| l == "kubehero_lease_held 1")
}

/// Once-only work with two replicas on one PostgreSQL: exactly one holds the lease (and forwards the audit log
/// to a real rsyslog, and signs checkpoints); `kill -9` of that one moves the lease to the other within 25 s,
/// which goes on forwarding from where the dead one stopped: every row reaches the sink.
#[tokio::test]
async fn the_lease_moves_when_its_replica_dies_and_forwarding_goes_on() {
    let pg = kubehero_testkit::postgres::TempPostgres::start().await.unwrap();
    let syslog = kubehero_testkit::rsyslog::Rsyslog::start().await.unwrap();
    let shared = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = shared.path().join("signing.pk8").display().to_string();
    let sink = format!("tcp://127.0.0.1:{}", syslog.port);
    let env = |dir: &std::path::Path| {
        let mut e = base_env(dir, &pg.url);
        e.insert("KUBEHERO_AUDIT_SIGNING_KEY".into(), key.clone());
        e.insert("KUBEHERO_AUDIT_FORWARD".into(), sink.clone());
        e
    };
    let (env_a, env_b) = (env(a_dir.path()), env(b_dir.path()));
    let (a, b) = tokio::join!(Serve::start(&env_a), Serve::start(&env_b));
    let t0 = std::time::Instant::now();
    let (holder, other) = loop {
        let (ha, hb) = (holds_lease(&a.url).await, holds_lease(&b.url).await);
        assert!(!(ha && hb), "both replicas hold the lease");
        if ha {
            break (a, b);
        }
        if hb {
            break (b, a);
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "nobody took the lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let http = reqwest::Client::new();
    let whoami = async |url: &str| {
        let r = http.get(format!("{url}/api/v1/whoami")).bearer_auth(ADMIN).send().await.unwrap();
        r.headers()["x-request-id"].to_str().unwrap().to_string()
    };
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(whoami(&holder.url).await);
        ids.push(whoami(&other.url).await);
    }
    let delivered = |ids: &[String]| {
        let ids = ids.to_vec();
        move |m: &[serde_json::Value]| {
            let text = serde_json::to_string(m).unwrap();
            ids.iter().all(|id| text.contains(id.as_str()))
        }
    };
    syslog.wait_for(Duration::from_secs(20), delivered(&ids)).await.unwrap();
    assert!(delivered(&ids)(&syslog.messages().unwrap()), "the holder forwards both replicas' rows");
    assert!(!holds_lease(&other.url).await);

    // The holder dies: the other takes the lease and forwards what was written since.
    holder.kill9().await;
    let died = std::time::Instant::now();
    let mut after = Vec::new();
    for _ in 0..5 {
        after.push(whoami(&other.url).await);
    }
    while !holds_lease(&other.url).await {
        assert!(died.elapsed() < Duration::from_secs(25), "the lease did not move within 25 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = died.elapsed();
    syslog.wait_for(Duration::from_secs(20), delivered(&after)).await.unwrap();
    assert!(delivered(&after)(&syslog.messages().unwrap()), "forwarding went on after the move");
    eprintln!("the lease moved {took:?} after the holder's kill -9");
    other.terminate().await;
}
