//! WorkOS Directory Sync webhooks. No WorkOS server is reachable here, so the events are built from WorkOS's
//! published documentation (the `dsync.*` event objects: `directory_user`, `directory_group`, and the
//! membership events carrying both) and signed the way WorkOS signs them (`WorkOS-Signature: t=<unix ms>,
//! v1=<hex HMAC-SHA256 of "<t>.<body>">`, as its SDKs verify). Everything else is real: the server over HTTP,
//! the npm oidc-provider's tokens for the person the directory describes, SCIM to read the directory back.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const SECRET: &str = "whsec-test-0123456789abcdef0123456789";
use crate::scim::TOKEN as SCIM;
const DIRECTORY: &str = "directory_01ECAZ4NV9QMV47GW873HDCX74";

/// A `directory_user` as WorkOS documents it.
fn directory_user(id: &str, name: &str, state: &str) -> Value {
    json!({
        "object": "directory_user",
        "id": id,
        "directory_id": DIRECTORY,
        "organization_id": "org_01EZTR6WYX1A0DSE2CYMGXQ24Y",
        "idp_id": format!("00u{name}"),
        "first_name": name,
        "last_name": "Example",
        "email": format!("{name}@example.com"),
        "emails": [{ "primary": true, "type": "work", "value": format!("{name}@example.com") }],
        "username": format!("{name}@example.com"),
        "state": state,
        "custom_attributes": { "department": "Platform" },
        "raw_attributes": {},
        "created_at": "2026-12-01T10:00:00.000Z",
        "updated_at": "2026-12-01T10:00:00.000Z"
    })
}

fn directory_group(id: &str, name: &str) -> Value {
    json!({
        "object": "directory_group",
        "id": id,
        "idp_id": format!("idp-{name}"),
        "directory_id": DIRECTORY,
        "organization_id": "org_01EZTR6WYX1A0DSE2CYMGXQ24Y",
        "name": name,
        "created_at": "2026-12-01T10:00:00.000Z",
        "updated_at": "2026-12-01T10:00:00.000Z",
        "raw_attributes": {}
    })
}

fn event(kind: &str, data: Value) -> Vec<u8> {
    let id = format!("event_{}", kubehero_identity::credential::random_uuid().unwrap().replace('-', ""));
    json!({ "id": id, "event": kind, "data": data, "created_at": "2026-12-01T10:00:00.000Z" }).to_string().into_bytes()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Delivers `body` with `signature` (None: no header).
async fn deliver(ts: &TestServer, body: &[u8], signature: Option<String>) -> Resp {
    let mut rb = ts
        .http
        .post(format!("{}/webhooks/workos", ts.url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        rb = rb.header("WorkOS-Signature", s);
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Resp { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

/// Signs and delivers, as WorkOS does; expects it applied.
async fn send(ts: &TestServer, hook: &kubehero_server::scim::workos::Webhook, body: Vec<u8>) -> Value {
    let r = deliver(ts, &body, Some(hook.sign(&body, now_ms()))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

/// The SCIM users matching `filter`, read back through SCIM.
async fn scim_users(ts: &TestServer, filter: &str) -> Value {
    let filter = kubehero_server::login::urlencode(filter);
    let r = ts.http.get(format!("{}/scim/v2/Users?filter={filter}", ts.url)).bearer_auth(SCIM).send().await.unwrap();
    r.json().await.unwrap()
}

async fn scim_user(ts: &TestServer, external_id: &str) -> Value {
    scim_users(ts, &format!("externalId eq \"{external_id}\"")).await["Resources"][0].clone()
}

#[tokio::test]
async fn workos_directory_sync_events_provision_and_deprovision_like_scim() {
    let (ts, idp) = crate::scim::with_idp_and(&[("KUBEHERO_WORKOS_WEBHOOK_SECRET", SECRET)]).await;
    let hook = kubehero_server::scim::workos::Webhook::new(&kubehero_core::Secret::new(SECRET.to_string()));
    let dave = idp.authcode("dave", "kubehero", "kubehero-secret").await.unwrap().id_token;
    assert_eq!(ts.whoami(&dave).await["role"], "viewer");

    // Refused deliveries change nothing and are on record: no signature, another secret, a body that is not
    // the one signed, a signature older than 180 s.
    let created = event("dsync.user.created", directory_user("directory_user_dave", "dave", "active"));
    let other = kubehero_server::scim::workos::Webhook::new(&kubehero_core::Secret::new("whsec-other".to_string()));
    let forged = event("dsync.user.created", directory_user("directory_user_mallory", "mallory", "active"));
    let signatures = [
        None,
        Some(other.sign(&created, now_ms())),
        Some(hook.sign(&forged, now_ms())),
        Some(hook.sign(&created, now_ms() - 181_000)),
        Some("t=1, v1=zz".to_string()),
    ];
    for s in signatures {
        let r = deliver(&ts, &created, s.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{s:?}: {}", r.body);
        assert_eq!(error_code(&r), "unauthenticated", "{}", r.body);
    }
    assert!(scim_user(&ts, "directory_user_dave").await.is_null(), "nothing applied");

    // dsync.user.created: a user, as SCIM's POST /Users would make it.
    assert_eq!(send(&ts, &hook, created.clone()).await["applied"], true);
    let u = scim_user(&ts, "directory_user_dave").await;
    assert_eq!((u["userName"].as_str(), u["active"].as_bool()), (Some("dave@example.com"), Some(true)), "{u}");
    // A redelivery (WorkOS retries) applies nothing new.
    send(&ts, &hook, created).await;
    let all = scim_users(&ts, "userName eq \"dave@example.com\"").await;
    assert_eq!(all["totalResults"], 1);

    // dsync.group.user_added: the group is made and dave joins it; its mapping gives him admin.
    let admins = directory_group("directory_group_admins", "kubehero-admins");
    let added = json!({ "directory_id": DIRECTORY, "user": directory_user("directory_user_dave", "dave", "active"), "group": admins });
    send(&ts, &hook, event("dsync.group.user_added", added.clone())).await;
    assert_eq!(ts.whoami(&dave).await["role"], "admin", "the WorkOS group gives the role");
    let key = ts.post("/api/v1/api-keys", Some(&dave), json!({ "name": "dave-ci", "role": "member" })).await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.body);
    let key = key.body["key"].as_str().unwrap().to_string();

    // dsync.group.user_removed: the role goes with the membership.
    send(&ts, &hook, event("dsync.group.user_removed", added)).await;
    assert_eq!(ts.whoami(&dave).await["role"], "viewer");

    // dsync.user.updated with state inactive: deprovisioned, every credential refused; active again restores.
    send(&ts, &hook, event("dsync.user.updated", directory_user("directory_user_dave", "dave", "inactive"))).await;
    assert_eq!(ts.get("/api/v1/whoami", Some(&dave)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(ts.get("/api/v1/whoami", Some(&key)).await.status, StatusCode::UNAUTHORIZED);
    send(&ts, &hook, event("dsync.user.updated", directory_user("directory_user_dave", "dave", "active"))).await;
    assert_eq!(ts.get("/api/v1/whoami", Some(&key)).await.status, StatusCode::OK);

    // dsync.group.updated renames; dsync.group.deleted removes; dsync.user.deleted revokes for good.
    send(&ts, &hook, event("dsync.group.updated", directory_group("directory_group_admins", "platform-admins"))).await;
    send(&ts, &hook, event("dsync.group.deleted", directory_group("directory_group_admins", "platform-admins"))).await;
    send(&ts, &hook, event("dsync.user.deleted", directory_user("directory_user_dave", "dave", "inactive"))).await;
    assert_eq!(ts.get("/api/v1/whoami", Some(&key)).await.status, StatusCode::UNAUTHORIZED);
    assert!(scim_user(&ts, "directory_user_dave").await.is_null());
    let keys = ts.state().store.list_api_keys(None).await.unwrap();
    assert!(keys.iter().filter(|k| k.name == "dave-ci").all(|k| k.revoked_at.is_some()), "{keys:?}");

    // Another kind of event is acknowledged and recorded, and changes nothing.
    let r = send(&ts, &hook, event("connection.activated", json!({ "object": "connection", "id": "conn_01" }))).await;
    assert_eq!(r["applied"], false);
    // A signed body that is not an event: 400, nothing applied.
    let junk = b"not json".to_vec();
    let r = deliver(&ts, &junk, Some(hook.sign(&junk, now_ms()))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // The rows: the SCIM operations by the directory, the refusals, the ignored event; the chain verifies.
    let rows = ts.state().store.audit_rows(0, 100_000).await.unwrap();
    let by_workos = |action: &str| {
        rows.iter()
            .filter(|r| r.body.contains(&format!("\"action\":\"{action}\"")))
            .filter(|r| r.body.contains(&format!("workos:{DIRECTORY}")))
            .count()
    };
    for action in [
        "scim.user.create",
        "scim.group.create",
        "scim.group.patch",
        "scim.user.replace",
        "scim.group.replace",
        "scim.group.delete",
        "scim.user.delete",
    ] {
        assert!(by_workos(action) >= 1, "no {action} row by the WorkOS directory");
    }
    assert_eq!(rows.iter().filter(|r| r.body.contains("\"workos.refused\"")).count(), 5);
    assert_eq!(rows.iter().filter(|r| r.body.contains("\"workos.ignored\"")).count(), 1);
    assert!(rows.iter().any(|r| r.body.contains("\"workos.unchanged\"")), "the redelivery is on record too");
    assert!(rows.iter().any(|r| r.body.contains("\"person.group_removed\"")));
    assert!(rows.iter().all(|r| !r.body.contains(SECRET)));
}
