//! SCIM 2.0 provisioning over real HTTP: the request sequences Okta and Entra ID send, pagination, ETags,
//! errors in the SCIM schema, the token and its throttle, `scim2-tester`'s whole compliance suite, groups
//! feeding roles, just-in-time people adopted by SCIM, and deprovisioning end to end against every credential
//! a person holds (dashboard session, CLI token, API key, the real IdP's JWT).

use crate::support::*;
use kubehero_testkit::oidc::{free_port, OidcProvider};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub(crate) const TOKEN: &str = "scim-test-token-0123456789abcdef0123456789";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

async fn scim_server(extra: &[(&str, &str)]) -> TestServer {
    let mut env = vec![("KUBEHERO_REQUIRE_AUTH", "true"), ("KUBEHERO_SCIM_TOKEN", TOKEN)];
    env.extend_from_slice(extra);
    TestServer::start(&env, None).await
}

/// One SCIM call with the token; the body is parsed whatever the status.
async fn scim(ts: &TestServer, method: Method, path: &str, body: Option<Value>) -> Resp {
    scim_with(ts, method, path, body, &[]).await
}

async fn scim_with(ts: &TestServer, method: Method, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Resp {
    let mut rb = ts.http.request(method, format!("{}/scim/v2{path}", ts.url)).bearer_auth(TOKEN);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.header("content-type", "application/scim+json").body(b.to_string());
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Resp { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

fn assert_scim_error(r: &Resp, status: u16, scim_type: Option<&str>) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/scim+json", "{}", r.body);
    assert_eq!(r.body["schemas"], json!([ERROR]), "{}", r.body);
    assert_eq!(r.body["status"], status.to_string(), "{}", r.body);
    assert_eq!(r.body["scimType"].as_str(), scim_type, "{}", r.body);
}

fn user_body(user_name: &str, external_id: &str, email: &str) -> Value {
    json!({
        "schemas": [USER, ENTERPRISE],
        "userName": user_name,
        "externalId": external_id,
        "name": { "givenName": "Ada", "familyName": "Lovelace" },
        "emails": [{ "primary": true, "value": email, "type": "work" }],
        "displayName": "Ada Lovelace",
        "active": true,
        ENTERPRISE: { "department": "Platform" },
    })
}

fn filter(expr: &str) -> String {
    kubehero_server::login::urlencode(expr)
}

async fn find_user(ts: &TestServer, user_name: &str) -> Value {
    let r = scim(ts, Method::GET, &format!("/Users?filter={}", filter(&format!("userName eq \"{user_name}\""))), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

#[tokio::test]
async fn without_a_token_scim_does_not_exist() {
    let ts = TestServer::start(&[("KUBEHERO_REQUIRE_AUTH", "true")], None).await;
    let r = scim(&ts, Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_token_is_required_and_failures_are_throttled_per_address() {
    let ts = scim_server(&[]).await;
    let get = |token: &'static str, from: &'static str| {
        let client =
            reqwest::Client::builder().local_address(from.parse::<std::net::IpAddr>().unwrap()).build().unwrap();
        let url = format!("{}/scim/v2/Users", ts.url);
        async move { client.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let r = get("wrong-token", "127.0.0.2").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["content-type"], "application/scim+json");
    for _ in 0..9 {
        assert_eq!(get("wrong-token", "127.0.0.2").await.status(), StatusCode::UNAUTHORIZED);
    }
    let r = get("wrong-token", "127.0.0.2").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(get(TOKEN, "127.0.0.2").await.status(), StatusCode::TOO_MANY_REQUESTS, "throttled whatever it sends");
    assert_eq!(get(TOKEN, "127.0.0.3").await.status(), StatusCode::OK, "other addresses are unaffected");
    // IdP JWTs and API keys do not open SCIM, nor does the SCIM token open the API.
    assert_eq!(ts.get("/api/v1/whoami", Some(TOKEN)).await.status, StatusCode::UNAUTHORIZED);
    // Every refusal is audited as such, with nothing of the token: the first few one by one, the rest of
    // the minute counted into one row per address and result.
    kubehero_server::record_sampled(ts.state()).await;
    ts.state().identity.audit.flush().await.unwrap();
    let rows = ts.state().store.audit_rows(0, 1000).await.unwrap();
    let failed: u64 = rows
        .iter()
        .filter(|r| r.body.contains("\"scim.auth_failed\""))
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["result"]["repeated"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(failed, 12, "every refusal is accounted for");
    assert!(rows.iter().all(|r| !r.body.contains("wrong-token") && !r.body.contains(TOKEN)));
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_lockout_and_the_audit_use_the_forwarded_address() {
    let ts = scim_server(&[("KUBEHERO_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let get = |token: &'static str, forwarded: &'static str| {
        let url = format!("{}/scim/v2/Users", ts.url);
        let client = ts.http.clone();
        // The client's own claim on the left is never believed; the proxy appended the real address.
        async move { client.get(url).bearer_auth(token).header("x-forwarded-for", forwarded).send().await.unwrap().status() }
    };
    for _ in 0..10 {
        assert_eq!(get("wrong-token", "203.0.113.50, 198.51.100.1").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(get("wrong-token", "198.51.100.1").await, StatusCode::TOO_MANY_REQUESTS);
    // The IdP behind the same proxy, from its own address, is not locked out.
    assert_eq!(get(TOKEN, "203.0.113.50, 198.51.100.2").await, StatusCode::OK);
    ts.state().identity.audit.flush().await.unwrap();
    let rows = ts.state().store.audit_rows(0, 1000).await.unwrap();
    assert!(rows.iter().any(|r| r.body.contains("\"source\":\"198.51.100.1\"")));
    assert!(rows.iter().any(|r| r.body.contains("\"source\":\"198.51.100.2\"")));
    assert!(!rows.iter().any(|r| r.body.contains("203.0.113.50")));
    // Without the setting, the header counts for nothing: everyone through the proxy is one address.
    let plain = scim_server(&[]).await;
    let r = plain
        .http
        .get(format!("{}/scim/v2/Users", plain.url))
        .bearer_auth(TOKEN)
        .header("x-forwarded-for", "198.51.100.9");
    assert_eq!(r.send().await.unwrap().status(), StatusCode::OK);
    plain.state().identity.audit.flush().await.unwrap();
    let rows = plain.state().store.audit_rows(0, 1000).await.unwrap();
    assert!(!rows.iter().any(|r| r.body.contains("198.51.100.9")));
}

#[tokio::test]
async fn discovery_and_errors_are_in_the_scim_shapes() {
    let ts = scim_server(&[]).await;
    let spc = scim(&ts, Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(spc.status, StatusCode::OK);
    assert_eq!(spc.headers["content-type"], "application/scim+json");
    assert_eq!(spc.body["patch"]["supported"], true);
    assert_eq!(spc.body["etag"]["supported"], true);
    assert_eq!(spc.body["bulk"]["supported"], false);
    let types = scim(&ts, Method::GET, "/ResourceTypes", None).await;
    assert_eq!(types.body["totalResults"], 2, "{}", types.body);
    let schemas = scim(&ts, Method::GET, "/Schemas", None).await;
    let ids: Vec<&str> =
        schemas.body["Resources"].as_array().unwrap().iter().filter_map(|s| s["id"].as_str()).collect();
    for id in [USER, GROUP, ENTERPRISE] {
        assert!(ids.contains(&id), "{ids:?}");
        assert_eq!(scim(&ts, Method::GET, &format!("/Schemas/{id}"), None).await.status, StatusCode::OK);
    }
    assert_scim_error(&scim(&ts, Method::POST, "/Schemas", Some(json!({}))).await, 405, None);
    assert_scim_error(&scim(&ts, Method::GET, "/Schemas/urn:nope", None).await, 404, None);
    assert_scim_error(&scim(&ts, Method::GET, "/Nope", None).await, 404, None);
    assert_scim_error(&scim(&ts, Method::GET, "/Users/0000", None).await, 404, None);
    assert_scim_error(&scim(&ts, Method::GET, "/Users?filter=userName%20eq", None).await, 400, Some("invalidFilter"));
    assert_scim_error(&scim(&ts, Method::GET, "/Users?filter=(", None).await, 400, Some("invalidFilter"));
    let bad = scim(&ts, Method::POST, "/Users", Some(json!({ "schemas": [USER] }))).await;
    assert_scim_error(&bad, 400, Some("invalidValue"));
    let r = ts
        .http
        .post(format!("{}/scim/v2/Users", ts.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let big = format!("{{\"schemas\":[\"{USER}\"],\"userName\":\"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let r = ts
        .http
        .post(format!("{}/scim/v2/Users", ts.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Every call was audited as the SCIM client's action.
    let rows = ts.state().store.audit_rows(0, 1000).await.unwrap();
    assert!(rows.iter().any(|r| r.body.contains("\"scim.discover\"") && r.body.contains("\"auth_method\":\"scim\"")));
    assert!(rows.iter().any(|r| r.body.contains("\"scim.user.create\"")));
}

/// What Okta sends: lookup by userName (its own letter case), create, deactivate and reactivate with
/// `replace` of `active`, a full PUT, group push with member add and remove, and a duplicate create.
#[tokio::test]
async fn okta_provisioning_sequence() {
    let ts = scim_server(&[]).await;
    assert_eq!(find_user(&ts, "ada@acme.example").await["totalResults"], 0);
    let created =
        scim(&ts, Method::POST, "/Users", Some(user_body("Ada@Acme.example", "00u1okta", "ada@acme.example"))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(created.headers["location"], created.body["meta"]["location"].as_str().unwrap());
    assert_eq!(created.headers["etag"], created.body["meta"]["version"].as_str().unwrap());
    assert_eq!(created.body[ENTERPRISE]["department"], "Platform");
    // Okta looks people up in its own spelling: userName is case-insensitive.
    let found = find_user(&ts, "ada@acme.example").await;
    assert_eq!(found["totalResults"], 1);
    assert_eq!(found["Resources"][0]["id"], id);
    assert_eq!(found["startIndex"], 1);
    let dup = scim(&ts, Method::POST, "/Users", Some(user_body("ADA@acme.example", "x", "other@acme.example"))).await;
    assert_scim_error(&dup, 409, Some("uniqueness"));

    let deactivate = json!({ "schemas": [PATCH], "Operations": [{ "op": "replace", "value": { "active": false } }] });
    let r = scim(&ts, Method::PATCH, &format!("/Users/{id}"), Some(deactivate)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["active"], false);
    let reactivate = json!({ "schemas": [PATCH], "Operations": [{ "op": "replace", "value": { "active": true } }] });
    assert_eq!(scim(&ts, Method::PATCH, &format!("/Users/{id}"), Some(reactivate)).await.body["active"], true);

    let mut put = user_body("ada@acme.example", "00u1okta", "ada.lovelace@acme.example");
    put["name"]["givenName"] = json!("Augusta");
    let r = scim(&ts, Method::PUT, &format!("/Users/{id}"), Some(put)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"]["givenName"], "Augusta");
    assert_eq!(r.body["emails"][0]["value"], "ada.lovelace@acme.example");

    // Group push.
    let other =
        scim(&ts, Method::POST, "/Users", Some(user_body("bo@acme.example", "00u2okta", "bo@acme.example"))).await;
    let bo = other.body["id"].as_str().unwrap().to_string();
    let g = scim(
        &ts,
        Method::POST,
        "/Groups",
        Some(json!({ "schemas": [GROUP], "displayName": "kubehero-admins", "members": [] })),
    )
    .await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.body);
    let gid = g.body["id"].as_str().unwrap().to_string();
    let add = json!({ "schemas": [PATCH], "Operations": [
        { "op": "add", "path": "members", "value": [{ "value": id, "display": "ada@acme.example" }, { "value": bo }] }
    ]});
    // A group's PATCH answers 204 (members can be many) unless the client asks for attributes.
    let r = scim(&ts, Method::PATCH, &format!("/Groups/{gid}"), Some(add)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let g = scim(&ts, Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(g.body["members"].as_array().unwrap().len(), 2);
    assert_eq!(r.headers["etag"], g.body["meta"]["version"].as_str().unwrap());
    let remove = json!({ "schemas": [PATCH], "Operations": [
        { "op": "remove", "path": format!("members[value eq \"{bo}\"]") }
    ]});
    let r = scim(&ts, Method::PATCH, &format!("/Groups/{gid}?attributes=members"), Some(remove)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["members"].as_array().unwrap().len(), 1, "{}", r.body);
    let user = scim(&ts, Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(user.body["groups"][0]["display"], "kubehero-admins", "read-only groups: {}", user.body);
    let rename = json!({ "schemas": [PATCH], "Operations": [
        { "op": "replace", "value": { "id": gid, "displayName": "kubehero-owners" } }
    ]});
    assert_eq!(scim(&ts, Method::PATCH, &format!("/Groups/{gid}"), Some(rename)).await.status, StatusCode::NO_CONTENT);
    let r = scim(&ts, Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(r.body["displayName"], "kubehero-owners", "{}", r.body);
    assert_eq!(r.body["members"].as_array().unwrap().len(), 1, "renaming keeps members: {}", r.body);
    assert_eq!(scim(&ts, Method::DELETE, &format!("/Groups/{gid}"), None).await.status, StatusCode::NO_CONTENT);
    assert_scim_error(&scim(&ts, Method::GET, &format!("/Groups/{gid}"), None).await, 404, None);
}

/// What Entra ID sends: capitalised ops, `"True"`/`"False"`, several operations and attribute forms in one
/// PATCH, several members in one op, membership checks by filter, delete.
#[tokio::test]
async fn entra_id_provisioning_sequence() {
    let ts = scim_server(&[]).await;
    assert_eq!(find_user(&ts, "grace@contoso.example").await["totalResults"], 0);
    let r = scim(
        &ts,
        Method::POST,
        "/Users",
        Some(json!({
            "schemas": [USER, ENTERPRISE],
            "externalId": "grace",
            "userName": "grace@contoso.example",
            "active": "True",
            "displayName": "Grace Hopper",
            "emails": [{ "primary": true, "type": "work", "value": "grace@contoso.example" }],
            "name": { "formatted": "Grace Hopper", "familyName": "Hopper", "givenName": "Grace" },
            ENTERPRISE: { "department": "Navy" },
        })),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["active"], true, "\"True\" is a boolean");
    let id = r.body["id"].as_str().unwrap().to_string();
    let update = json!({ "schemas": [PATCH], "Operations": [
        { "op": "Replace", "path": "displayName", "value": "Rear Admiral Hopper" },
        { "op": "Replace", "path": "name.givenName", "value": "Amazing Grace" },
        { "op": "Replace", "path": "emails[type eq \"work\"].value", "value": "grace.hopper@contoso.example" },
        { "op": "Add", "path": format!("{ENTERPRISE}:department"), "value": "Computing" },
    ]});
    let r = scim(&ts, Method::PATCH, &format!("/Users/{id}"), Some(update)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["displayName"], "Rear Admiral Hopper");
    assert_eq!(r.body["name"]["givenName"], "Amazing Grace");
    assert_eq!(r.body["emails"][0]["value"], "grace.hopper@contoso.example");
    assert_eq!(r.body[ENTERPRISE]["department"], "Computing");
    let disable =
        json!({ "schemas": [PATCH], "Operations": [{ "op": "Replace", "path": "active", "value": "False" }] });
    assert_eq!(scim(&ts, Method::PATCH, &format!("/Users/{id}"), Some(disable)).await.body["active"], false);
    let enable = json!({ "schemas": [PATCH], "Operations": [{ "op": "Replace", "path": "active", "value": "True" }] });
    assert_eq!(scim(&ts, Method::PATCH, &format!("/Users/{id}"), Some(enable)).await.body["active"], true);

    let mut members = Vec::new();
    for n in 0..3 {
        let u = scim(
            &ts,
            Method::POST,
            "/Users",
            Some(user_body(&format!("m{n}@contoso.example"), &format!("m{n}"), &format!("m{n}@contoso.example"))),
        )
        .await;
        members.push(u.body["id"].as_str().unwrap().to_string());
    }
    let g = scim(
        &ts,
        Method::POST,
        "/Groups",
        Some(json!({ "schemas": [GROUP], "displayName": "Engineers", "externalId": "eng" })),
    )
    .await;
    let gid = g.body["id"].as_str().unwrap().to_string();
    let add = json!({ "schemas": [PATCH], "Operations": [{ "op": "Add", "path": "members", "value": [
        { "value": members[0] }, { "value": members[1] }, { "value": members[2] }, { "value": id }
    ]}]});
    assert_eq!(scim(&ts, Method::PATCH, &format!("/Groups/{gid}"), Some(add)).await.status, StatusCode::NO_CONTENT);
    // Entra checks membership with a filter and without members in the answer.
    let q = filter(&format!("id eq \"{gid}\" and members[value eq \"{}\"]", members[1]));
    let r = scim(&ts, Method::GET, &format!("/Groups?excludedAttributes=members&filter={q}"), None).await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);
    assert!(r.body["Resources"][0].get("members").is_none(), "{}", r.body);
    let remove = json!({ "schemas": [PATCH], "Operations": [{ "op": "Remove", "path": "members", "value": [
        { "value": members[1] }, { "value": members[2] }
    ]}]});
    assert_eq!(scim(&ts, Method::PATCH, &format!("/Groups/{gid}"), Some(remove)).await.status, StatusCode::NO_CONTENT);
    let r = scim(&ts, Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(r.body["members"].as_array().unwrap().len(), 2, "{}", r.body);
    let r = scim(&ts, Method::GET, &format!("/Groups?excludedAttributes=members&filter={q}"), None).await;
    assert_eq!(r.body["totalResults"], 0, "{}", r.body);
    let unknown = json!({ "schemas": [PATCH], "Operations": [{ "op": "Add", "path": "members", "value": [{ "value": "nobody" }] }]});
    assert_scim_error(
        &scim(&ts, Method::PATCH, &format!("/Groups/{gid}"), Some(unknown)).await,
        400,
        Some("invalidValue"),
    );
    let by_name =
        scim(&ts, Method::GET, &format!("/Groups?filter={}", filter("displayName eq \"engineers\"")), None).await;
    assert_eq!(by_name.body["totalResults"], 1, "{}", by_name.body);

    assert_eq!(scim(&ts, Method::DELETE, &format!("/Users/{id}"), None).await.status, StatusCode::NO_CONTENT);
    assert_scim_error(&scim(&ts, Method::GET, &format!("/Users/{id}"), None).await, 404, None);
    let g = scim(&ts, Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(g.body["members"].as_array().unwrap().len(), 1, "a deleted person leaves their groups: {}", g.body);
    // The userName is free again.
    let again =
        scim(&ts, Method::POST, "/Users", Some(user_body("grace@contoso.example", "grace2", "grace@contoso.example")))
            .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
}

#[tokio::test]
async fn pagination_echoes_start_index_and_counts_every_match() {
    let ts = scim_server(&[]).await;
    for n in 0..25 {
        let r = scim(
            &ts,
            Method::POST,
            "/Users",
            Some(user_body(&format!("p{n:02}@x.example"), &format!("p{n}"), &format!("p{n:02}@x.example"))),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let mut seen = std::collections::HashSet::new();
    for (start, expect) in [(1, 10), (11, 10), (21, 5), (26, 0)] {
        let r = scim(&ts, Method::GET, &format!("/Users?startIndex={start}&count=10"), None).await;
        assert_eq!(r.body["totalResults"], 25, "{}", r.body);
        assert_eq!(r.body["startIndex"], start);
        assert_eq!(r.body["itemsPerPage"], expect);
        for u in r.body["Resources"].as_array().unwrap() {
            assert!(seen.insert(u["id"].as_str().unwrap().to_string()), "no user on two pages");
        }
    }
    assert_eq!(seen.len(), 25);
    // Filtered pages too, and through POST /.search with attributes.
    let r =
        scim(&ts, Method::GET, &format!("/Users?filter={}&startIndex=3&count=2", filter("userName sw \"p1\"")), None)
            .await;
    assert_eq!((r.body["totalResults"].as_i64(), r.body["itemsPerPage"].as_i64()), (Some(10), Some(2)), "{}", r.body);
    let search = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "emails[value ew \"x.example\"] and userName sw \"p2\"",
        "attributes": ["userName"],
        "startIndex": 1,
        "count": 100,
    });
    let r = scim(&ts, Method::POST, "/Users/.search", Some(search)).await;
    assert_eq!(r.body["totalResults"], 5, "{}", r.body);
    let first = &r.body["Resources"][0];
    assert!(first.get("userName").is_some() && first.get("id").is_some() && first.get("emails").is_none(), "{first}");
    let r = scim(&ts, Method::GET, "/Users?count=1&excludedAttributes=emails,name", None).await;
    let first = &r.body["Resources"][0];
    assert!(first.get("emails").is_none() && first.get("name").is_none() && first.get("userName").is_some(), "{first}");
}

#[tokio::test]
async fn etags_guard_writes() {
    let ts = scim_server(&[]).await;
    let r = scim(&ts, Method::POST, "/Users", Some(user_body("e@x.example", "e", "e@x.example"))).await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let v1 = r.headers["etag"].to_str().unwrap().to_string();
    let fresh = scim_with(&ts, Method::GET, &format!("/Users/{id}"), None, &[("if-none-match", &v1)]).await;
    assert_eq!(fresh.status, StatusCode::NOT_MODIFIED);
    let r = scim_with(
        &ts,
        Method::PUT,
        &format!("/Users/{id}"),
        Some(user_body("e@x.example", "e", "e2@x.example")),
        &[("if-match", &v1)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v2 = r.headers["etag"].to_str().unwrap().to_string();
    assert_ne!(v1, v2);
    let stale = scim_with(
        &ts,
        Method::PUT,
        &format!("/Users/{id}"),
        Some(user_body("e@x.example", "e", "e3@x.example")),
        &[("if-match", &v1)],
    )
    .await;
    assert_scim_error(&stale, 412, None);
    let patch = json!({ "schemas": [PATCH], "Operations": [{ "op": "replace", "path": "active", "value": false }] });
    assert_scim_error(
        &scim_with(&ts, Method::PATCH, &format!("/Users/{id}"), Some(patch.clone()), &[("if-match", &v1)]).await,
        412,
        None,
    );
    assert_eq!(
        scim_with(&ts, Method::PATCH, &format!("/Users/{id}"), Some(patch), &[("if-match", &v2)]).await.status,
        StatusCode::OK
    );
    assert_scim_error(
        &scim_with(&ts, Method::DELETE, &format!("/Users/{id}"), None, &[("if-match", &v2)]).await,
        412,
        None,
    );
}

/// `scim2-cli`'s compliance suite (`scim2-tester`, python-scim) against KubeHero: every check SUCCESS.
#[tokio::test]
async fn scim2_tester_compliance_suite_passes() {
    let ts = scim_server(&[]).await;
    let base = format!("{}/scim/v2", ts.url);
    let results = kubehero_testkit::scim::run_compliance(&base, TOKEN).await.unwrap();
    let bad: Vec<String> = results
        .iter()
        .filter(|c| c.status != "SUCCESS")
        .map(|c| format!("{} {:?} {}: {}", c.status, c.resource_type, c.title, c.reason))
        .collect();
    assert!(results.len() > 50, "only {} checks ran", results.len());
    assert!(bad.is_empty(), "{} of {} checks not SUCCESS:\n{}", bad.len(), results.len(), bad.join("\n"));
    eprintln!("scim2-tester: {} checks, all SUCCESS", results.len());
    // And the `scim2 test` command itself, which exits 0 only when every check is SUCCESS.
    let out = tokio::process::Command::new(kubehero_testkit::scim::scim_cli())
        .args(["--url", &format!("{}/scim/v2", ts.url), "test"])
        .env("SCIM_CLI_HEADERS", format!("Authorization: Bearer {TOKEN}"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "scim2 test failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.matches("SUCCESS").count() >= results.len(), "{stdout}");
}

/// A KubeHero with SCIM and browser sign-in, and the IdP.
async fn with_idp() -> (TestServer, OidcProvider) {
    with_idp_and(&[]).await
}

/// [`with_idp`] with more settings.
pub(crate) async fn with_idp_and(extra: &[(&str, &str)]) -> (TestServer, OidcProvider) {
    let port = free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let idp = OidcProvider::start_for(free_port().unwrap(), std::slice::from_ref(&base)).await.unwrap();
    let listen = format!("127.0.0.1:{port}");
    let ts = TestServer::start(
        &[
            ("KUBEHERO_LISTEN", listen.as_str()),
            ("KUBEHERO_PUBLIC_URL", base.as_str()),
            ("KUBEHERO_REQUIRE_AUTH", "true"),
            ("OIDC_ISSUER_URL", idp.issuer.as_str()),
            ("OIDC_AUDIENCE", "kubehero"),
            ("KUBEHERO_OIDC_CLIENT_ID", "kubehero"),
            ("KUBEHERO_OIDC_CLIENT_SECRET", "kubehero-secret"),
            ("KUBEHERO_GROUP_ROLES", "kubehero-admins=admin,kubehero-owners=owner"),
            ("KUBEHERO_SCIM_TOKEN", TOKEN),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
        None,
    )
    .await;
    ts.wait_issuer_healthy().await;
    (ts, idp)
}

/// A CLI token for the person signed in with `cookie`, through the device flow over HTTP.
async fn cli_token(ts: &TestServer, cookie: &str) -> String {
    let post = |path: &str, body: Value| ts.http.post(format!("{}{path}", ts.url)).json(&body).send();
    let code: Value = post("/api/auth/device/code", json!({})).await.unwrap().json().await.unwrap();
    let user_code = code["user_code"].as_str().unwrap().to_string();
    let page = ts
        .http
        .get(format!("{}/device?user_code={user_code}", ts.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf = page[at..at + page[at..].find('"').unwrap()].to_string();
    let form = [("user_code", user_code), ("csrf", csrf), ("decision", "approve".to_string())];
    let r = ts.http.post(format!("{}/device", ts.url)).header("cookie", cookie).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tok: Value = post("/api/auth/device/token", json!({ "device_code": code["device_code"] }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tok["access_token"].as_str().unwrap().to_string()
}

/// Status of `GET /api/v1/whoami` with each credential.
async fn statuses(ts: &TestServer, creds: &[(&str, String)]) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for (kind, c) in creds {
        let rb = ts.http.get(format!("{}/api/v1/whoami", ts.url));
        let rb = if *kind == "session" { rb.header("cookie", c.as_str()) } else { rb.bearer_auth(c) };
        out.push((kind.to_string(), rb.send().await.unwrap().status().as_u16()));
    }
    out
}

async fn wait_all(ts: &TestServer, creds: &[(&str, String)], status: u16) -> Duration {
    let started = Instant::now();
    loop {
        let now = statuses(ts, creds).await;
        if now.iter().all(|(_, s)| *s == status) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "not all {status} within 5 s: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One person with a dashboard session, a CLI token, an API key and the IdP's JWT; one SCIM PATCH
/// `active=false` refuses all four; re-activation restores them; deletion revokes them for good.
#[tokio::test]
async fn deprovisioning_refuses_every_credential_and_reactivation_restores_them() {
    let (ts, idp) = with_idp().await;
    // alice signs in before the IdP provisioned her: she is created just-in-time.
    let s = idp.sign_in(&ts.url, "/login?return_to=/", "alice").await.unwrap();
    let cookie = format!("kh_session={}", s.cookies["kh_session"]);
    let jit = find_user(&ts, "alice@example.com").await;
    assert_eq!(jit["totalResults"], 1, "{jit}");
    let jit_id = jit["Resources"][0]["id"].as_str().unwrap().to_string();
    // The entry was written with its own audit row, by her.
    let rows = ts.state().store.audit_rows(0, 10_000).await.unwrap();
    let made = rows.iter().find(|r| r.body.contains("\"directory.jit_provision\"")).expect("a jit_provision row");
    assert!(made.body.contains(&jit_id), "{}", made.body);
    let cli = cli_token(&ts, &cookie).await;
    let jwt = idp.authcode("alice", "kubehero", "kubehero-secret").await.unwrap().id_token;
    let key = ts.post("/api/v1/api-keys", Some(&jwt), json!({ "name": "ci", "role": "member" })).await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.body);
    let key = key.body["key"].as_str().unwrap().to_string();
    let creds = vec![("session", cookie.clone()), ("cli_token", cli), ("api_key", key), ("jwt", jwt.clone())];
    wait_all(&ts, &creds, 200).await;

    // Okta now provisions her: the just-in-time entry is adopted, not duplicated.
    let r =
        scim(&ts, Method::POST, "/Users", Some(user_body("alice@example.com", "00ualice", "alice@example.com"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["id"], jit_id, "reconciled with the just-in-time entry");
    assert_eq!(find_user(&ts, "alice@example.com").await["totalResults"], 1);

    let deactivate = json!({ "schemas": [PATCH], "Operations": [{ "op": "replace", "value": { "active": false } }] });
    let r = scim(&ts, Method::PATCH, &format!("/Users/{jit_id}"), Some(deactivate)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let took = wait_all(&ts, &creds, 401).await;
    eprintln!("deprovisioning to the last credential refused: {took:?}");
    // Signing in again does not help while she is inactive: the callback creates no session.
    let sessions = ts.state().store.list_sessions(Some("alice")).await.unwrap().len();
    let again = idp.sign_in(&ts.url, "/login?return_to=/", "alice").await;
    assert!(again.as_ref().map_or(true, |s| !s.cookies.contains_key("kh_session")), "a session cookie was set");
    assert_eq!(ts.state().store.list_sessions(Some("alice")).await.unwrap().len(), sessions);
    let rows = ts.state().store.audit_rows(0, 10_000).await.unwrap();
    let suspended: Vec<&str> = ["\"session\"", "\"cli_token\"", "\"api_key\"", "\"idp_tokens\""]
        .into_iter()
        .filter(|k| rows.iter().any(|r| r.body.contains("\"credential.suspend\"") && r.body.contains(k)))
        .collect();
    assert_eq!(suspended.len(), 4, "one audit row per suspended credential: {suspended:?}");

    let reactivate =
        json!({ "schemas": [PATCH], "Operations": [{ "op": "Replace", "path": "active", "value": "True" }] });
    assert_eq!(scim(&ts, Method::PATCH, &format!("/Users/{jit_id}"), Some(reactivate)).await.status, StatusCode::OK);
    wait_all(&ts, &creds, 200).await;
    let rows = ts.state().store.audit_rows(0, 10_000).await.unwrap();
    assert!(rows.iter().any(|r| r.body.contains("\"credential.restore\"")));

    // Deletion: refused, and the session, CLI token and key are revoked for good.
    assert_eq!(scim(&ts, Method::DELETE, &format!("/Users/{jit_id}"), None).await.status, StatusCode::NO_CONTENT);
    wait_all(&ts, &creds, 401).await;
    let held = ts.state().store.list_sessions(Some("alice")).await.unwrap();
    assert!(held.iter().all(|s| s.revoked_at.is_some()), "{held:?}");
    let keys = ts.state().store.list_api_keys(Some("alice")).await.unwrap();
    assert!(keys.iter().all(|k| k.revoked_at.is_some()));
}

/// An IdP that puts no groups in its tokens (dave's have none): SCIM groups give the roles, and leaving the
/// group that gave a role takes it away, even from a token that still names the group.
#[tokio::test]
async fn scim_groups_feed_roles_and_removal_takes_them_away() {
    let (ts, idp) = with_idp().await;
    let dave = idp.authcode("dave", "kubehero", "kubehero-secret").await.unwrap().id_token;
    let alice = idp.authcode("alice", "kubehero", "kubehero-secret").await.unwrap().id_token;
    assert_eq!(ts.whoami(&dave).await["role"], "viewer");
    assert_eq!(ts.whoami(&alice).await["role"], "admin", "from the token's kubehero-admins");
    let d = scim(&ts, Method::POST, "/Users", Some(user_body("dave@example.com", "00udave", "dave@example.com"))).await;
    let a = scim(&ts, Method::POST, "/Users", Some(user_body("alice@example.com", "alice", "alice@example.com"))).await;
    let (d, a) = (d.body["id"].as_str().unwrap().to_string(), a.body["id"].as_str().unwrap().to_string());
    let g = scim(
        &ts,
        Method::POST,
        "/Groups",
        Some(json!({
            "schemas": [GROUP], "displayName": "kubehero-admins", "members": [{ "value": d }, { "value": a }]
        })),
    )
    .await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.body);
    let gid = g.body["id"].as_str().unwrap().to_string();
    assert_eq!(ts.whoami(&dave).await["role"], "admin", "SCIM group membership gives the role");
    let groups = ts.whoami(&dave).await["groups"].clone();
    assert!(groups.as_array().unwrap().iter().any(|g| g == "kubehero-admins"), "{groups}");
    // dave's tokens name him "dave", SCIM calls him dave@example.com with another externalId: his key still
    // finds him (the directory learns his subject when he creates it).
    let key = ts.post("/api/v1/api-keys", Some(&dave), json!({ "name": "dave-ci", "role": "member" })).await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.body);
    let key = key.body["key"].as_str().unwrap().to_string();
    let off = json!({ "schemas": [PATCH], "Operations": [{ "op": "replace", "value": { "active": false } }] });
    assert_eq!(scim(&ts, Method::PATCH, &format!("/Users/{d}"), Some(off)).await.status, StatusCode::OK);
    assert_eq!(ts.get("/api/v1/whoami", Some(&key)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(ts.get("/api/v1/whoami", Some(&dave)).await.status, StatusCode::UNAUTHORIZED);
    let on = json!({ "schemas": [PATCH], "Operations": [{ "op": "replace", "value": { "active": true } }] });
    assert_eq!(scim(&ts, Method::PATCH, &format!("/Users/{d}"), Some(on)).await.status, StatusCode::OK);
    assert_eq!(ts.get("/api/v1/whoami", Some(&key)).await.status, StatusCode::OK);

    let remove = json!({ "schemas": [PATCH], "Operations": [
        { "op": "remove", "path": format!("members[value eq \"{a}\"]") },
        { "op": "remove", "path": format!("members[value eq \"{d}\"]") },
    ]});
    assert_eq!(scim(&ts, Method::PATCH, &format!("/Groups/{gid}"), Some(remove)).await.status, StatusCode::NO_CONTENT);
    assert_eq!(ts.whoami(&dave).await["role"], "viewer");
    assert_eq!(
        ts.whoami(&alice).await["role"],
        "viewer",
        "SCIM manages kubehero-admins: the token's claim no longer counts"
    );
    let rows = ts.state().store.audit_rows(0, 10_000).await.unwrap();
    assert_eq!(rows.iter().filter(|r| r.body.contains("\"person.group_removed\"")).count(), 2);
}

/// Two replicas on one PostgreSQL: the IdP deactivates a person through one, the other refuses the person's
/// API key within seconds (its directory cache lives 2 s), and SCIM answers from either with the same data.
#[tokio::test]
async fn deprovisioning_through_one_replica_reaches_the_other() {
    let pg = kubehero_testkit::postgres::TempPostgres::start().await.unwrap();
    let env = [("KUBEHERO_DATABASE_URL", pg.url.as_str())];
    let a = scim_server(&env).await;
    let b = scim_server(&env).await;
    let u = scim(&a, Method::POST, "/Users", Some(user_body("zed@example.com", "zed", "zed@example.com"))).await;
    assert_eq!(u.status, StatusCode::CREATED, "{}", u.body);
    let id = u.body["id"].as_str().unwrap().to_string();
    assert_eq!(find_user(&b, "ZED@example.com").await["Resources"][0]["id"], id);
    // zed's key, as `POST /api/v1/api-keys` stores it (owner = zed's subject).
    let secret = "khk_replicatestkey0123456789abcdefghijklmnopqrs";
    let hash = kubehero_authn::sha256_hex(secret);
    let at = a.state().clock.now();
    let key = kubehero_store::ApiKeyRecord {
        id: hash[..16].to_string(),
        hash,
        name: "zed-ci".into(),
        role: kubehero_core::Role::Viewer,
        owner: "zed".into(),
        created_at: at,
        expires_at: None,
        revoked_at: None,
    };
    a.state().store.create_api_key(&key).await.unwrap();
    assert_eq!(b.get("/api/v1/whoami", Some(secret)).await.status, StatusCode::OK);
    let off = json!({ "schemas": [PATCH], "Operations": [{ "op": "replace", "value": { "active": false } }] });
    let started = Instant::now();
    assert_eq!(scim(&a, Method::PATCH, &format!("/Users/{id}"), Some(off)).await.status, StatusCode::OK);
    assert_eq!(a.get("/api/v1/whoami", Some(secret)).await.status, StatusCode::UNAUTHORIZED, "at once on a");
    while b.get("/api/v1/whoami", Some(secret)).await.status != StatusCode::UNAUTHORIZED {
        assert!(started.elapsed() < Duration::from_secs(5), "replica b still accepts the key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The database going away: SCIM answers 503 in its own error schema (nothing half-written), and works again
/// with everything intact once the database is back.
#[tokio::test]
async fn a_dead_database_is_503_in_the_scim_schema_and_loses_nothing() {
    let pg = kubehero_testkit::postgres::TempPostgres::start().await.unwrap();
    let ts = scim_server(&[("KUBEHERO_DATABASE_URL", pg.url.as_str())]).await;
    let u = scim(&ts, Method::POST, "/Users", Some(user_body("kim@example.com", "kim", "kim@example.com"))).await;
    let id = u.body["id"].as_str().unwrap().to_string();
    pg.stop_server();
    let r = scim(&ts, Method::GET, &format!("/Users/{id}"), None).await;
    assert_scim_error(&r, 503, None);
    let off = json!({ "schemas": [PATCH], "Operations": [{ "op": "replace", "value": { "active": false } }] });
    assert_scim_error(&scim(&ts, Method::PATCH, &format!("/Users/{id}"), Some(off)).await, 503, None);
    pg.start_server();
    let started = Instant::now();
    let back = loop {
        let r = scim(&ts, Method::GET, &format!("/Users/{id}"), None).await;
        if r.status == StatusCode::OK || started.elapsed() > Duration::from_secs(30) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    assert_eq!(back.body["active"], true, "the refused PATCH changed nothing");
    assert_eq!(back.body["userName"], "kim@example.com");
}
