//! The chain end to end on both backends: concurrent records through the writer get seqs 1..N without gaps
//! and verify; a key rotation keeps old rows verifiable only while the old key is listed; records hold no
//! secret; an export verifies on its own and its lines round-trip exactly.

use crate::{assert_gapless, event, keys, record_concurrently, sqlite_file, KEY_A, KEY_B};
use kubehero_audit::writer::checkpoint_once;
use kubehero_audit::{
    export_line, key_id, parse_export_line, verify_lines, verify_store, AuditLog, ChainSealer, ExportLine, SigningKey,
    Tamper, VerifyError,
};
use kubehero_core::AuditRecord;
use kubehero_store::Store;
use kubehero_testkit::postgres::TempPostgres;
use std::sync::Arc;

const FIRST: usize = 300;
const SECOND: usize = 100;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn all_rows(store: &dyn Store) -> Vec<kubehero_store::StoredAuditRow> {
    store.audit_rows(0, i64::MAX).await.unwrap()
}

/// Everything in this file, against one empty store.
async fn chain_checks(store: Arc<dyn Store>) {
    // Round trip: concurrent records, no gaps, verifies.
    let key_a = keys(KEY_A, &[]);
    let log = AuditLog::start(store.clone(), ChainSealer::new(key_a.clone()), 256);
    assert_gapless(&record_concurrently(&log, FIRST, 0).await, FIRST as i64);
    let report = verify_store(&*store, &key_a, &[]).await.unwrap();
    assert_eq!((report.rows, report.last_seq), (FIRST as u64, FIRST as i64));
    let rows = all_rows(&*store).await;
    assert_eq!(store.audit_head().await.unwrap(), (FIRST as i64, rows[FIRST - 1].mac.clone()));
    drop(log);

    // Rotation: the writer restarts with B current and A previous.
    let b_then_a = keys(KEY_B, &[KEY_A]);
    let log = AuditLog::start(store.clone(), ChainSealer::new(b_then_a.clone()), 256);
    let seqs = record_concurrently(&log, SECOND, FIRST).await;
    assert_eq!(seqs, ((FIRST + 1) as i64..=(FIRST + SECOND) as i64).collect::<Vec<_>>());
    let total = (FIRST + SECOND) as i64;
    let report = verify_store(&*store, &b_then_a, &[]).await.unwrap();
    assert_eq!((report.rows, report.last_seq), (total as u64, total));
    let rows = all_rows(&*store).await;
    assert_eq!(rows[0].key_id, key_id(KEY_A));
    assert_eq!(rows[FIRST - 1].key_id, key_id(KEY_A));
    assert_eq!(rows[FIRST].key_id, key_id(KEY_B));
    // Without A, the first row sealed with A is an unknown key; without B, the first row sealed with B.
    let Err(VerifyError::Broken(f)) = verify_store(&*store, &keys(KEY_B, &[]), &[]).await else {
        panic!("verified rows sealed with a key that was not given")
    };
    assert_eq!((f.seq, f.kind), (1, Tamper::UnknownKey), "{f}");
    let Err(VerifyError::Broken(f)) = verify_store(&*store, &key_a, &[]).await else {
        panic!("verified rows sealed with a key that was not given")
    };
    assert_eq!((f.seq, f.kind), ((FIRST + 1) as i64, Tamper::UnknownKey), "{f}");

    // No secret in a record: neither key, as text or hex, appears; the record is exactly its canonical form.
    for r in &rows {
        for k in [KEY_A, KEY_B] {
            assert!(!r.body.contains(std::str::from_utf8(k).unwrap()), "seq {}: key text in the record", r.seq);
            assert!(!r.body.contains(&hex(k)), "seq {}: key hex in the record", r.seq);
            assert!(!r.body.contains(&hex(k)[..32]), "seq {}: key hex prefix in the record", r.seq);
        }
        let rec: AuditRecord = serde_json::from_str(&r.body).unwrap();
        assert_eq!((rec.seq, rec.key_id.as_str()), (r.seq, r.key_id.as_str()));
        assert_eq!(rec.canonical(), r.body, "seq {}: the stored text is not canonical", r.seq);
    }
    let debug = format!("{b_then_a:?}");
    assert!(!debug.contains(std::str::from_utf8(KEY_A).unwrap()) && !debug.contains(&hex(KEY_A)), "{debug}");

    // Export: verifies with the checkpoint (pinned key), round-trips line by line.
    let (signer, _) = SigningKey::generate().unwrap();
    assert_eq!(checkpoint_once(&*store, &signer, 0, 1_764_000_999_000).await.unwrap(), total);
    let mut out = Vec::new();
    assert_eq!(kubehero_audit::export(&*store, 0, &mut out).await.unwrap(), total as u64);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), rows.len() + 1);
    let trusted = [signer.public_hex().to_string()];
    let report = verify_lines(lines.iter().map(Ok::<_, std::io::Error>), &b_then_a, &trusted).unwrap();
    assert_eq!(
        (report.rows, report.last_seq, report.checkpoints, report.last_checkpoint),
        (total as u64, total, 1, Some(total))
    );
    for (r, line) in rows.iter().zip(&lines) {
        assert_eq!(export_line(r), *line);
        // An export carries the body only: its columns are derived on read.
        let exported = kubehero_store::StoredAuditRow { columns: None, ..r.clone() };
        assert_eq!(parse_export_line(line).unwrap(), ExportLine::Row(exported), "seq {}", r.seq);
    }
    let checkpoints = store.checkpoints().await.unwrap();
    assert_eq!(parse_export_line(lines[rows.len()]).unwrap(), ExportLine::Checkpoint(checkpoints[0].clone()));
    // The export is verified on its own: a wrong key set fails it too.
    let Err(VerifyError::Broken(f)) = verify_lines(lines.iter().map(Ok::<_, std::io::Error>), &key_a, &trusted) else {
        panic!("an export verified without its newest key")
    };
    assert_eq!((f.seq, f.kind), ((FIRST + 1) as i64, Tamper::UnknownKey), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_chain_round_trip_rotation_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = sqlite_file(dir.path(), "audit.db").await;
    chain_checks(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_chain_round_trip_rotation_and_export() {
    let pg = TempPostgres::start().await.unwrap();
    let store = kubehero_store::open(&pg.url).await.unwrap();
    chain_checks(store).await;
}

#[test]
fn export_line_round_trips_unusual_text() {
    // Quotes, escapes, non-ASCII and a `"mac"`-like string inside the record must survive the fast parser.
    let key = keys(KEY_A, &[]);
    let mut e = event(7);
    e.user_agent = Some("x\",\"mac\":\"ff\"} é \u{2028} \\ \n".to_string());
    e.target.id = Some("ns/名前".to_string());
    let sealed = kubehero_core::Sealer::seal(&ChainSealer::new(key), 1, kubehero_core::GENESIS_MAC, &e);
    let row = kubehero_store::StoredAuditRow {
        seq: sealed.seq,
        key_id: sealed.key_id,
        mac: sealed.mac,
        body: sealed.body,
        columns: None,
    };
    let line = export_line(&row);
    assert!(!line.contains('\n'), "an export line must be one line: {line}");
    assert_eq!(parse_export_line(&line).unwrap(), ExportLine::Row(row.clone()));
    let report = verify_lines([Ok::<_, std::io::Error>(line)], &keys(KEY_A, &[]), &[]).unwrap();
    assert_eq!(report.rows, 1);
}
