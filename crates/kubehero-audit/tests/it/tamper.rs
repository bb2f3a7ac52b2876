//! Tampering, on a copy of a SQLite database and on an export: every case must fail verification at the
//! first bad sequence number, with the right kind.
//!
//! The fixture has rows 1..=12, a signed checkpoint of the head at seq 10 (written with
//! `writer::checkpoint_once`), and every row sealed with one HMAC key. The tamperer holds the database (or
//! the export) but neither key, except in the key-holder cases at the end.

use crate::{event, keys, sqlite_file, KEY_A};
use kubehero_audit::chain::{checkpoint_line, row_mac, sign_checkpoint};
use kubehero_audit::writer::checkpoint_once;
use kubehero_audit::{
    export_line, parse_export_line, verify_lines, verify_store, ChainSealer, ExportLine, HmacKeys, SigningKey, Tamper,
    VerifyError, VerifyFailure, VerifyReport,
};
use kubehero_core::Checkpoint;
use kubehero_store::{SqliteStore, StoredAuditRow};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const ROWS: i64 = 12;
const CHECKPOINT: i64 = 10;
/// The index of the checkpoint line in the export.
const CP: usize = ROWS as usize;

struct Fixture {
    dir: tempfile::TempDir,
    pristine: PathBuf,
    keys: Arc<HmacKeys>,
    signer: SigningKey,
    rows: Vec<StoredAuditRow>,
    checkpoint: Checkpoint,
    /// The export: rows 1..=12, then the checkpoint line.
    export: Vec<String>,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(KEY_A, &[]);
        let sealer = ChainSealer::new(keys.clone());
        let (signer, _) = SigningKey::generate().unwrap();
        let (url, store) = sqlite_file(dir.path(), "pristine.db").await;
        let events: Vec<_> = (1..=ROWS as usize).map(event).collect();
        for batch in [&events[..3], &events[3..CHECKPOINT as usize]] {
            store.append_audit(batch, &sealer.shared()).await.unwrap();
        }
        assert_eq!(checkpoint_once(&*store, &signer, 0, 1_764_000_500_000).await.unwrap(), CHECKPOINT);
        store.append_audit(&events[CHECKPOINT as usize..], &sealer.shared()).await.unwrap();
        let rows = store.audit_rows(0, 100).await.unwrap();
        assert_eq!(rows.len() as i64, ROWS);
        let checkpoint = store.checkpoints().await.unwrap().remove(0);
        let mut out = Vec::new();
        kubehero_audit::export(&*store, 0, &mut out).await.unwrap();
        let export: Vec<String> = String::from_utf8(out).unwrap().lines().map(str::to_string).collect();
        drop(store);
        // Close every connection so that the WAL is folded into the file before it is copied.
        SqliteStore::open(&url).await.unwrap().close().await;
        let f = Fixture { pristine: dir.path().join("pristine.db"), dir, keys, signer, rows, checkpoint, export };
        assert_eq!(f.verify_export(&f.export, true).unwrap().rows as i64, ROWS);
        f
    }

    fn trusted(&self, pinned: bool) -> Vec<String> {
        if pinned {
            vec![self.signer.public_hex().to_string()]
        } else {
            Vec::new()
        }
    }

    /// Copies the pristine database (with its WAL, if any is left) under a new name.
    fn copy(&self, name: &str) -> PathBuf {
        let to = self.dir.path().join(format!("{name}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", self.pristine.display()));
            // The WAL and shared-memory files come and go as SQLite checkpoints: one gone is not an error.
            match std::fs::copy(&from, format!("{}{suffix}", to.display())) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !suffix.is_empty() => {}
                Err(e) => panic!("copying {}: {e}", from.display()),
            }
        }
        to
    }

    /// Runs `sql` on a copy of the database with a plain connection, then verifies the copy.
    async fn tamper_db(&self, name: &str, sql: &[String], pinned: bool) -> Result<VerifyReport, VerifyError> {
        let path = self.copy(name);
        let url = format!("sqlite:{}", path.display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        for s in sql {
            let done = sqlx::query(s).execute(&pool).await.unwrap_or_else(|e| panic!("{name}: {s}: {e}"));
            assert!(done.rows_affected() > 0, "{name}: {s} changed nothing");
        }
        pool.close().await;
        verify_db(&path, &self.keys, &self.trusted(pinned)).await
    }

    fn verify_export(&self, lines: &[String], pinned: bool) -> Result<VerifyReport, VerifyError> {
        verify_lines(lines.iter().map(Ok::<_, std::io::Error>), &self.keys, &self.trusted(pinned))
    }

    fn mac(&self, seq: i64) -> &str {
        &self.rows[(seq - 1) as usize].mac
    }
}

async fn verify_db(path: &Path, keys: &HmacKeys, trusted: &[String]) -> Result<VerifyReport, VerifyError> {
    let store = SqliteStore::open(&format!("sqlite:{}", path.display())).await.unwrap();
    let result = verify_store(&store, keys, trusted).await;
    store.close().await;
    result
}

fn broken(name: &str, result: Result<VerifyReport, VerifyError>) -> VerifyFailure {
    match result {
        Err(VerifyError::Broken(f)) => f,
        Err(VerifyError::Read(e)) => panic!("{name}: could not be read: {e}"),
        Ok(report) => panic!("{name}: tampering went unnoticed: {report}"),
    }
}

/// The line's record with its leading `"seq":N` moved by `delta` (how a tamperer renumbers an export).
fn renumber(line: &str, delta: i64) -> String {
    let ExportLine::Row(row) = parse_export_line(line).unwrap() else { panic!("not a row: {line}") };
    let from = format!(",\"seq\":{},", row.seq);
    assert!(line.contains(&from));
    line.replacen(&from, &format!(",\"seq\":{},", row.seq + delta), 1)
}

/// A forged copy of `line`: another actor and event id, the original MAC (the tamperer cannot compute one).
fn forge(line: &str) -> String {
    let ExportLine::Row(row) = parse_export_line(line).unwrap() else { panic!("not a row: {line}") };
    let event_id =
        serde_json::from_str::<serde_json::Value>(&row.body).unwrap()["event_id"].as_str().unwrap().to_string();
    line.replacen("\"sub\":\"alice\"", "\"sub\":\"mallory\"", 1).replacen(
        &event_id,
        "forged00forged00forged00forged00",
        1,
    )
}

const MODIFY: &str =
    "UPDATE audit_log SET body = replace(body, '\"sub\":\"alice\"', '\"sub\":\"mallory\"') WHERE seq = 5";
/// Moves rows with `seq >= from` by `delta`, through negative numbers so that the primary key never collides.
fn shift(from: i64, delta: i64) -> Vec<String> {
    vec![
        format!("UPDATE audit_log SET seq = -(seq + {delta}) WHERE seq >= {from}"),
        "UPDATE audit_log SET seq = -seq WHERE seq < 0".to_string(),
    ]
}
fn swap(a: i64, b: i64) -> Vec<String> {
    vec![
        format!("UPDATE audit_log SET seq = -1 WHERE seq = {a}"),
        format!("UPDATE audit_log SET seq = {a} WHERE seq = {b}"),
        format!("UPDATE audit_log SET seq = {b} WHERE seq = -1"),
    ]
}
/// Inserts at `at` a copy of the row now stored at `source` with another actor and event id, keeping its MAC;
/// `reseq` also rewrites the seq its record declares to `at`.
fn insert_forged(at: i64, source: i64, reseq: bool) -> String {
    let body = "replace(replace(body, event_id, 'forged00forged00forged00forged00'), '\"sub\":\"alice\"', '\"sub\":\"mallory\"')";
    let body = if reseq {
        format!("replace({body}, ',\"seq\":' || {source} || ',', ',\"seq\":{at},')")
    } else {
        body.to_string()
    };
    format!(
        "INSERT INTO audit_log (seq, event_id, time_ms, actor_sub, action, outcome, cluster, key_id, mac, body) \
         SELECT {at}, 'forged00forged00forged00forged00', time_ms, 'mallory', action, outcome, cluster, key_id, mac, \
         {body} FROM audit_log WHERE seq = {source}"
    )
}
/// Changes the signature's first hex digit.
const FLIP_SIGNATURE: &str = "UPDATE audit_checkpoints \
     SET signature = (CASE WHEN substr(signature, 1, 1) = '0' THEN '1' ELSE '0' END) || substr(signature, 2)";
fn checkpoint_sql(c: &Checkpoint) -> String {
    format!(
        "INSERT INTO audit_checkpoints (seq, mac, time_ms, public_key, signature) VALUES ({}, '{}', {}, '{}', '{}')",
        c.seq, c.mac, c.time_ms, c.public_key, c.signature
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_database_is_named_exactly() {
    let f = Fixture::new().await;
    assert_eq!(verify_db(&f.pristine, &f.keys, &f.trusted(true)).await.unwrap().rows as i64, ROWS);
    let (other, _) = SigningKey::generate().unwrap();
    let untrusted = sign_checkpoint(&other, ROWS, f.mac(ROWS), 1_764_000_600_000);
    let moved = Checkpoint { seq: 9, mac: f.mac(9).to_string(), ..f.checkpoint.clone() };

    let delete_5 = "DELETE FROM audit_log WHERE seq = 5".to_string();
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<String>, bool, i64, Tamper)> = vec![
        ("modify a body field", vec![MODIFY.to_string()], false, 5, Tamper::Modified),
        ("modify the last row", vec![MODIFY.replace("seq = 5", "seq = 12")], false, 12, Tamper::Modified),
        ("delete a middle row", vec![delete_5.clone()], false, 5, Tamper::Deleted),
        ("delete the first row", vec!["DELETE FROM audit_log WHERE seq = 1".into()], false, 1, Tamper::Deleted),
        ("delete and renumber", [vec![delete_5.clone()], shift(6, -1)].concat(), false, 5, Tamper::Deleted),
        ("delete two and renumber",
         [vec!["DELETE FROM audit_log WHERE seq IN (5, 6)".into()], shift(7, -2)].concat(), false, 5, Tamper::Deleted),
        ("swap two rows", swap(4, 7), false, 4, Tamper::Reordered),
        ("swap adjacent rows", swap(6, 7), false, 6, Tamper::Reordered),
        ("swap with the last row", swap(3, 12), false, 3, Tamper::Reordered),
        ("insert a forged row, renumbering the rest", [shift(5, 1), vec![insert_forged(5, 6, false)]].concat(),
         false, 5, Tamper::Inserted),
        ("insert a copy of an earlier record, renumbering the rest", [shift(5, 1), vec![insert_forged(5, 3, false)]].concat(),
         false, 5, Tamper::Inserted),
        // Without renumbering the only free numbers are past the end. A replayed record names its own seq there;
        // a forged one that names seq 13 is indistinguishable from a modified last row, and is reported as such.
        ("append a replayed record", vec![insert_forged(13, 5, false)], false, 13, Tamper::Inserted),
        ("append a forged record", vec![insert_forged(13, 12, true)], false, 13, Tamper::Modified),
        ("truncate below the checkpoint", vec!["DELETE FROM audit_log WHERE seq > 7".into()], false, 8, Tamper::Truncated),
        ("truncate to just below the checkpoint", vec!["DELETE FROM audit_log WHERE seq > 9".into()], false, 10,
         Tamper::Truncated),
        ("corrupt the checkpoint signature",
         vec![FLIP_SIGNATURE.into()], false, 10,
         Tamper::BadCheckpoint),
        ("move the checkpoint to another row", vec!["DELETE FROM audit_checkpoints".into(), checkpoint_sql(&moved)],
         false, 9, Tamper::BadCheckpoint),
        ("a checkpoint by an untrusted key", vec![checkpoint_sql(&untrusted)], true, ROWS, Tamper::BadCheckpoint),
    ];
    let columns = COLUMN_TAMPERS.iter().map(|(name, sql)| (*name, vec![sql.to_string()], false, 6, Tamper::Modified));
    let cases: Vec<_> = cases.into_iter().chain(columns).collect();
    for (name, sql, pinned, seq, kind) in cases {
        let fail = broken(name, f.tamper_db(&name.replace(' ', "-"), &sql, pinned).await);
        assert_eq!((fail.seq, fail.kind), (seq, kind), "{name}: {fail}");
    }

    // Without pinned keys, a checkpoint is only as good as the key it names: the untrusted one passes.
    let report = f.tamper_db("untrusted-unpinned", &[checkpoint_sql(&untrusted)], false).await.unwrap();
    assert_eq!(report.checkpoints, 2);
    // A cut after the newest checkpoint cannot be seen: that is what frequent checkpoints bound.
    let report = f.tamper_db("truncate-after", &["DELETE FROM audit_log WHERE seq > 10".into()], true).await.unwrap();
    assert_eq!(report.last_seq, CHECKPOINT);
}

/// Changes to the columns a database indexes and filters on (`GET /api/v1/audit?actor=…`), each at seq 6:
/// the body and MAC stay intact, so only the check of columns against the signed record can notice.
const COLUMN_TAMPERS: [(&str, &str); 6] = [
    ("column actor_sub", "UPDATE audit_log SET actor_sub = 'mallory' WHERE seq = 6"),
    ("column action", "UPDATE audit_log SET action = 'policy.read' WHERE seq = 6"),
    ("column outcome", "UPDATE audit_log SET outcome = 'denied' WHERE seq = 6"),
    ("column cluster", "UPDATE audit_log SET cluster = NULL WHERE seq = 6"),
    ("column time_ms", "UPDATE audit_log SET time_ms = time_ms + 1 WHERE seq = 6"),
    ("column event_id", "UPDATE audit_log SET event_id = 'forged' WHERE seq = 6"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_columns_on_postgres_are_named_exactly() {
    let pg = kubehero_testkit::postgres::TempPostgres::start().await.unwrap();
    let store = kubehero_store::open(&pg.url).await.unwrap();
    let keys = keys(KEY_A, &[]);
    let events: Vec<_> = (1..=ROWS as usize).map(event).collect();
    store.append_audit(&events, &ChainSealer::new(keys.clone()).shared()).await.unwrap();
    assert_eq!(verify_store(&*store, &keys, &[]).await.unwrap().rows as i64, ROWS);
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    sqlx::query("CREATE TABLE audit_pristine AS SELECT * FROM audit_log").execute(&pool).await.unwrap();
    for (name, sql) in COLUMN_TAMPERS {
        assert!(sqlx::query(sql).execute(&pool).await.unwrap().rows_affected() > 0, "{name} changed nothing");
        let fail = broken(name, verify_store(&*store, &keys, &[]).await);
        assert_eq!((fail.seq, fail.kind), (6, Tamper::Modified), "{name}: {fail}");
        assert!(fail.detail.contains(name.trim_start_matches("column ")), "{name}: {fail}");
        sqlx::query("DELETE FROM audit_log").execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO audit_log SELECT * FROM audit_pristine").execute(&pool).await.unwrap();
        assert_eq!(verify_store(&*store, &keys, &[]).await.unwrap().rows as i64, ROWS, "{name}: restored");
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_export_is_named_exactly() {
    let f = Fixture::new().await;
    let lines = &f.export;
    assert_eq!(lines.len() as i64, ROWS + 1);
    let (other, _) = SigningKey::generate().unwrap();
    let untrusted = checkpoint_line(&sign_checkpoint(&other, CHECKPOINT, f.mac(CHECKPOINT), 1_764_000_600_000));
    let moved = checkpoint_line(&Checkpoint { seq: 9, mac: f.mac(9).to_string(), ..f.checkpoint.clone() });

    type Edit = Box<dyn Fn(&mut Vec<String>)>;
    #[rustfmt::skip]
    let cases: Vec<(&str, Edit, bool, i64, Tamper)> = vec![
        ("modify a body field", Box::new(|l| l[4] = l[4].replacen("\"sub\":\"alice\"", "\"sub\":\"mallory\"", 1)),
         false, 5, Tamper::Modified),
        ("delete a middle line", Box::new(|l| { l.remove(4); }), false, 5, Tamper::Deleted),
        ("delete the second-to-last row", Box::new(|l| { l.remove(10); }), false, 11, Tamper::Deleted),
        ("delete and renumber", Box::new(|l| {
            l.remove(4);
            for line in &mut l[4..CP - 1] { *line = renumber(line, -1); }
        }), false, 5, Tamper::Deleted),
        ("delete two and renumber", Box::new(|l| {
            l.drain(4..6);
            for line in &mut l[4..CP - 2] { *line = renumber(line, -2); }
        }), false, 5, Tamper::Deleted),
        ("swap two lines", Box::new(|l| l.swap(3, 6)), false, 4, Tamper::Reordered),
        ("swap adjacent lines", Box::new(|l| l.swap(5, 6)), false, 6, Tamper::Reordered),
        ("swap with the last row", Box::new(|l| l.swap(2, 11)), false, 3, Tamper::Reordered),
        ("insert a forged line", Box::new(|l| { let x = forge(&l[4]); l.insert(4, x); }), false, 5, Tamper::Inserted),
        ("insert a forged line, renumbering the rest", Box::new(|l| {
            let x = forge(&l[4]);
            for line in &mut l[4..CP] { *line = renumber(line, 1); }
            l.insert(4, x);
        }), false, 5, Tamper::Inserted),
        ("repeat a line", Box::new(|l| { let x = l[4].clone(); l.insert(5, x); }), false, 5, Tamper::Inserted),
        ("truncate below the checkpoint", Box::new(|l| { l.drain(7..CP); }), false, 8, Tamper::Truncated),
        ("corrupt the checkpoint signature", Box::new(|l| {
            let at = l[CP].find("\"signature\":\"").unwrap() + 13;
            let flipped = if &l[CP][at..at + 1] == "0" { "1" } else { "0" };
            l[CP].replace_range(at..at + 1, flipped);
        }), false, CHECKPOINT, Tamper::BadCheckpoint),
        ("move the checkpoint to another row", Box::new(move |l| l[CP] = moved.clone()), false, 9,
         Tamper::BadCheckpoint),
        ("a checkpoint by an untrusted key", Box::new({ let u = untrusted.clone(); move |l| l[CP] = u.clone() }),
         true, CHECKPOINT, Tamper::BadCheckpoint),
    ];
    for (name, edit, pinned, seq, kind) in cases {
        let mut l = lines.clone();
        edit(&mut l);
        assert_ne!(&l, lines, "{name}: the edit changed nothing");
        let fail = broken(name, f.verify_export(&l, pinned));
        assert_eq!((fail.seq, fail.kind), (seq, kind), "{name}: {fail}");
    }

    let mut l = lines.clone();
    l[CP] = untrusted;
    assert_eq!(f.verify_export(&l, false).unwrap().checkpoints, 1, "an unpinned checkpoint names its own key");
}

/// Re-seals rows `from..` of `rows` after modifying row `from`, with the real key: a valid chain.
fn rechain(keys: &HmacKeys, rows: &[StoredAuditRow], from: i64) -> Vec<StoredAuditRow> {
    let mut out = rows.to_vec();
    let key = keys.get(keys.current_id()).unwrap();
    let mut prev = [0u8; 32];
    for r in &mut out {
        if r.seq == from {
            r.body = r.body.replacen("\"sub\":\"alice\"", "\"sub\":\"mallory\"", 1);
        }
        let mac = row_mac(key, &prev, r.seq, &r.body);
        if r.seq >= from {
            r.mac = mac.iter().map(|b| format!("{b:02x}")).collect();
        } else {
            assert_eq!(mac.iter().map(|b| format!("{b:02x}")).collect::<String>(), r.mac);
        }
        prev = mac;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_by_the_hmac_key_holder_is_caught_by_the_checkpoint() {
    // Whoever holds the HMAC key can re-chain everything after a modified row; the MACs all verify, but the
    // signed checkpoint at seq 10 no longer matches. The verifier can only say so where the checkpoint is.
    let f = Fixture::new().await;
    let rewritten = rechain(&f.keys, &f.rows, 5);
    assert_ne!(rewritten[4].body, f.rows[4].body);

    let path = f.copy("rewritten");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await.unwrap();
    for r in &rewritten[4..] {
        // A careful rewriter keeps the indexed columns in step with the body, as the writer would.
        let sub = if r.body.contains("\"sub\":\"mallory\"") { "mallory" } else { "alice" };
        let actor = crate::event(5).actor.subject_key().replace("alice", sub);
        sqlx::query("UPDATE audit_log SET body = ?, mac = ?, actor_sub = ? WHERE seq = ?")
            .bind(&r.body)
            .bind(&r.mac)
            .bind(actor)
            .bind(r.seq)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let fail = broken("rewrite in the database", verify_db(&path, &f.keys, &f.trusted(true)).await);
    assert_eq!((fail.seq, fail.kind), (CHECKPOINT, Tamper::Modified), "{fail}");

    let mut lines: Vec<String> = rewritten.iter().map(export_line).collect();
    lines.push(f.export[ROWS as usize].clone());
    let fail = broken("rewrite in the export", f.verify_export(&lines, true));
    assert_eq!((fail.seq, fail.kind), (CHECKPOINT, Tamper::Modified), "{fail}");

    // Re-signing the checkpoint with a key of one's own is refused when the verifier pins the real key.
    let (other, _) = SigningKey::generate().unwrap();
    lines[ROWS as usize] = checkpoint_line(&sign_checkpoint(&other, CHECKPOINT, &rewritten[9].mac, 1));
    let fail = broken("re-signed checkpoint", f.verify_export(&lines, true));
    assert_eq!((fail.seq, fail.kind), (CHECKPOINT, Tamper::BadCheckpoint), "{fail}");

    // Without a checkpoint covering it, a rewrite by the key holder is undetectable (the limit of an HMAC).
    lines.truncate(ROWS as usize);
    assert_eq!(f.verify_export(&lines, true).unwrap().rows as i64, ROWS);
}
