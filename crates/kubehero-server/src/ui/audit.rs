//! The Audit page (auditors and owners): filters by time, actor, action, result and cluster, pages of rows
//! with each row's full record, the chain's head and last signed checkpoint, and the export of the filtered
//! range as JSONL. Reading and exporting the log are durable audit rows themselves.

use super::{page, signed_in, when, Section};
use crate::audit::Recorded;
use crate::error::ApiResult;
use crate::login::{esc, urlencode};
use crate::routes::audit::Params;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kubehero_core::{Action, AuditActor, Target};

const PAGE: i64 = 50;
/// The most rows one export holds; a larger range is exported in parts (narrow the time filter).
const MAX_EXPORT: usize = 100_000;

/// The filters as given, empty ones dropped (a form sends every field).
fn filters(q: &Params) -> Params {
    let keep = |v: &Option<String>| v.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    Params {
        since: keep(&q.since),
        until: keep(&q.until),
        actor: keep(&q.actor),
        action: keep(&q.action),
        result: keep(&q.result),
        cluster: keep(&q.cluster),
        cursor: keep(&q.cursor),
        limit: None,
    }
}

/// The filters as a query string (no cursor).
fn query_string(q: &Params) -> String {
    [
        ("since", &q.since),
        ("until", &q.until),
        ("actor", &q.actor),
        ("action", &q.action),
        ("result", &q.result),
        ("cluster", &q.cluster),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v))))
    .collect::<Vec<_>>()
    .join("&")
}

fn row_html(body: &str, mac: &str, seq: i64) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let t = |p: &str| v.pointer(p).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let actor = v.pointer("/actor/email").and_then(|x| x.as_str()).map_or_else(|| t("/actor/sub"), str::to_string);
    let target =
        [t("/target/kind"), t("/target/id")].iter().filter(|x| !x.is_empty()).cloned().collect::<Vec<_>>().join(" ");
    let mut full = v.clone();
    full["mac"] = serde_json::json!(mac);
    let pretty = serde_json::to_string_pretty(&full).unwrap_or_default();
    format!(
        "<tr><td>{seq}</td><td>{time}</td><td>{actor}</td><td>{action}</td><td>{outcome}</td><td>{target}</td>\
         <td>{cluster}</td><td><details><summary>Record</summary><pre>{pretty}</pre></details></td></tr>",
        time = esc(&t("/time")),
        actor = esc(&actor),
        action = esc(&t("/action")),
        outcome = esc(&t("/result/outcome")),
        target = esc(&target),
        cluster = esc(&t("/target/cluster")),
        pretty = esc(&pretty),
    )
}

/// `GET /ui/audit`.
pub async fn page_of_audit(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let (p, session) = match signed_in(&s, &headers, "/ui/audit").await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    if !kubehero_core::authorize(&p, Action::AuditRead, Target::NONE).is_allowed() {
        let body = format!(
            "<p id=\"audit-hidden\">The audit log is for auditors and owners; you are {}.</p>",
            esc(p.display_role().as_str())
        );
        return page(&s, &p, &session, Section::Audit, "Audit", &body).await;
    }
    let f = filters(&q);
    crate::routes::audit::flushed(&s).await?;
    let mut query = crate::routes::audit::query_of(Params { limit: Some(PAGE), ..f.clone() })?;
    query.limit = PAGE;
    let rows = s.store.query_audit(&query).await?;
    let html_rows: Vec<String> = rows.iter().map(|r| row_html(&r.body, &r.mac, r.seq)).collect();
    let qs = query_string(&f);
    let older = match rows.last().filter(|_| rows.len() as i64 == PAGE) {
        Some(last) => format!(
            "<p><a id=\"older\" href=\"/ui/audit?{qs}{amp}cursor={seq}\">Older rows</a></p>",
            amp = if qs.is_empty() { "" } else { "&amp;" },
            qs = esc(&qs),
            seq = last.seq
        ),
        None => String::new(),
    };
    let (head, _) = s.store.audit_head().await?;
    let checkpoint = match s.store.checkpoints().await?.last() {
        Some(c) => format!(
            "the last signed checkpoint is at row {} ({}, key <code>{}…</code>)",
            c.seq,
            when(Some(c.time_ms / 1000)),
            esc(&c.public_key.chars().take(16).collect::<String>())
        ),
        None => "no checkpoint is signed yet".to_string(),
    };
    let v = |o: &Option<String>| esc(o.as_deref().unwrap_or(""));
    let result_options: String = ["", "ok", "denied", "error"]
        .iter()
        .map(|o| {
            let sel = if f.result.as_deref().unwrap_or("") == *o { " selected" } else { "" };
            format!("<option value=\"{o}\"{sel}>{}</option>", if o.is_empty() { "any" } else { o })
        })
        .collect();
    let form = format!(
        "<form method=\"get\" action=\"/ui/audit\" class=\"inline\" id=\"audit-filter\">\
         <label>Since <input name=\"since\" value=\"{since}\" placeholder=\"2026-12-01T00:00:00Z\"></label>\
         <label>Until <input name=\"until\" value=\"{until}\"></label>\
         <label>Actor <input name=\"actor\" value=\"{actor}\"></label>\
         <label>Action <input name=\"action\" value=\"{action}\" placeholder=\"access.approve\"></label>\
         <label>Result <select name=\"result\">{result_options}</select></label>\
         <label>Cluster <input name=\"cluster\" value=\"{cluster}\"></label>\
         <button type=\"submit\">Filter</button></form>",
        since = v(&f.since),
        until = v(&f.until),
        actor = v(&f.actor),
        action = v(&f.action),
        cluster = v(&f.cluster),
    );
    let table = super::table(
        "audit",
        &["Row", "Time", "Actor", "Action", "Result", "Target", "Cluster", ""],
        &html_rows,
        "No rows match.",
    );
    let live = format!(
        "<p><label class=\"inline\"><input type=\"checkbox\" id=\"live\" data-tail=\"/ui/audit/tail?{qs}\"> Live: add \
         new rows as they are written (paused while this tab is hidden)</label></p>",
        qs = esc(&qs)
    );
    let body = format!(
        "{live}<p id=\"chain\">The chain's head is row {head}; {checkpoint}. <code>kubehero audit verify</code> checks \
         every row against its MAC and the checkpoints.</p>{form}\
         <p><a id=\"export\" href=\"/ui/audit/export?{qs}\" download=\"kubehero-audit.jsonl\">Export these rows \
         (JSONL)</a></p>{table}{older}",
        qs = esc(&qs)
    );
    let mut r = page(&s, &p, &session, Section::Audit, "Audit", &body).await?;
    r.extensions_mut().insert(Recorded { action: "audit.read", actor: AuditActor::of(&p), plain_read: false });
    Ok(r)
}

/// Whether a row's record matches the filters (the live tail filters in memory what the store's query filters in
/// SQL; time filters do not apply to a tail).
fn matches(v: &serde_json::Value, f: &Params) -> bool {
    let is = |ptr: &str, want: &Option<String>| {
        want.as_deref().is_none_or(|w| v.pointer(ptr).and_then(|x| x.as_str()) == Some(w))
    };
    is("/actor/sub", &f.actor)
        && is("/action", &f.action)
        && is("/result/outcome", &f.result)
        && is("/target/cluster", &f.cluster)
}

/// `GET /ui/audit/tail`: the rows committed from now on that match the filters, as server-sent events (one
/// `row` event each, its data the table row's HTML), until the page closes it. Opening a tail is one durable
/// `audit.read` row, however long it runs.
pub async fn tail(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<Params>) -> ApiResult<Response> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let (p, _) = match signed_in(&s, &headers, "/ui/audit").await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    crate::auth::allow(&p, Action::AuditRead, Target::NONE)?;
    let f = filters(&q);
    let (head, _) = s.store.audit_head().await?;
    let state = s.clone();
    let stream = futures_util::stream::unfold((head, Vec::<Event>::new()), move |(mut after, mut ready)| {
        let (s, f) = (state.clone(), f.clone());
        async move {
            loop {
                if let Some(e) = ready.pop() {
                    return Some((Ok::<_, std::convert::Infallible>(e), (after, ready)));
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                // The store is unreachable for now: keep the stream and look again (the page shows nothing new).
                let Ok(rows) = s.store.audit_rows(after, 200).await else { continue };
                for r in &rows {
                    after = after.max(r.seq);
                    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                    if matches(&v, &f) {
                        ready.push(Event::default().event("row").data(row_html(&r.body, &r.mac, r.seq)));
                    }
                }
                // Oldest first on the page: `pop` takes from the end.
                ready.reverse();
            }
        }
    });
    let mut r = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.extensions_mut().insert(Recorded { action: "audit.read", actor: AuditActor::of(&p), plain_read: false });
    Ok(r)
}

/// `GET /ui/audit/export`: the filtered range as JSONL (each line the record with its MAC), newest first.
pub async fn export(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<Params>) -> ApiResult<Response> {
    let (p, _) = match signed_in(&s, &headers, "/ui/audit").await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    crate::auth::allow(&p, Action::AuditRead, Target::NONE)?;
    crate::routes::audit::flushed(&s).await?;
    let f = filters(&q);
    let mut query = crate::routes::audit::query_of(Params { limit: Some(1000), cursor: None, ..f })?;
    let mut out = String::new();
    let mut n = 0;
    loop {
        let rows = s.store.query_audit(&query).await?;
        for r in &rows {
            let line = match r.body.strip_suffix('}') {
                Some(open) => format!("{open},\"mac\":\"{}\"}}\n", r.mac),
                None => continue,
            };
            out.push_str(&line);
        }
        n += rows.len();
        match rows.last() {
            Some(last) if rows.len() as i64 == query.limit && n < MAX_EXPORT => query.before_seq = Some(last.seq),
            _ => break,
        }
    }
    let mut r = (StatusCode::OK, out).into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"kubehero-audit.jsonl\""));
    r.extensions_mut().insert(Recorded { action: "audit.export", actor: AuditActor::of(&p), plain_read: false });
    Ok(r)
}
