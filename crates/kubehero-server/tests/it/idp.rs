//! Against the real npm `oidc-provider`: client-credentials and authorization-code tokens (RS256 and ES256),
//! group → role mappings including scoped ones, people minting API keys, and IdP faults (down at start-up,
//! down after warm-up, unknown-`kid` floods, key rotation).

use crate::support::*;
use base64::Engine;
use kubehero_testkit::oidc::OidcProvider;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn header(token: &str) -> Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

fn idp_file(issuer: &str, extra: &str) -> String {
    format!(
        r#"
        [[issuers]]
        issuer = "{issuer}"
        audiences = ["kubehero", "kubehero-es"]
        retry_max_secs = 1
        group_roles = {{ "kubehero-admins" = "admin", "kubehero-owners" = "owner", "auditors" = "auditor", "kubehero-members" = "member", "system:service-clients" = "member" }}
        {extra}
        [[bindings]]
        group = "oncall"
        role = "admin"
        cluster = "prod-*"
        [[bindings]]
        user = "dave@example.com"
        role = "admin"
        cluster = "staging"
        namespace = "web"
        "#
    )
}

#[tokio::test]
async fn client_credentials_rs256_and_es256() {
    let idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(
        &[
            ("OIDC_ISSUER_URL", &idp.issuer),
            ("OIDC_AUDIENCE", "kubehero"),
            ("KUBEHERO_GROUP_ROLES", "system:service-clients=member"),
        ],
        None,
    )
    .await;
    ts.wait_issuer_healthy().await;
    for (client, secret, alg) in
        [("kubehero", "kubehero-secret", "RS256"), ("kubehero-es", "kubehero-es-secret", "ES256")]
    {
        let token = idp.client_credentials(client, secret).await.unwrap();
        assert_eq!(header(&token)["alg"], alg);
        let me = ts.whoami(&token).await;
        assert_eq!(me["sub"], client);
        assert_eq!(me["groups"], json!(["system:service-clients"]));
        assert_eq!(me["roles"], json!(["member"]));
        assert_eq!(me["role"], "member");
        assert_eq!(me["auth_method"], "jwt");
        assert_eq!(me["issuer"], idp.issuer);
        // Tampering with the payload breaks the signature: 401, never anonymous.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut claims: Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&parts[1]).unwrap())
                .unwrap();
        claims["groups"] = json!(["kubehero-owners"]);
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        let r = ts.get("/api/v1/whoami", Some(&parts.join("."))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let m = ts.get("/metrics", None).await;
    assert!(m
        .body
        .as_str()
        .unwrap()
        .contains(&format!("kubehero_jwks_fetches_total{{issuer=\"{}\",outcome=\"ok\"}}", idp.issuer)));
}

#[tokio::test]
async fn authorization_code_tokens_map_to_roles() {
    let idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(&[("KUBEHERO_REQUIRE_AUTH", "true")], Some(&idp_file(&idp.issuer, ""))).await;
    ts.wait_issuer_healthy().await;
    let cases: &[(&str, &str, &str, Value, Value)] = &[
        ("alice", "kubehero", "admin", json!(["admin"]), json!([])),
        ("bob", "kubehero-es", "viewer", json!(["viewer"]), json!([])),
        (
            "carol",
            "kubehero",
            "viewer",
            json!(["viewer"]),
            json!([{ "role": "admin", "cluster": "prod-*", "namespace": null }]),
        ),
        (
            "dave",
            "kubehero-es",
            "viewer",
            json!(["viewer"]),
            json!([{ "role": "admin", "cluster": "staging", "namespace": "web" }]),
        ),
        ("erin", "kubehero", "owner", json!(["owner"]), json!([])),
        ("frank", "kubehero", "member", json!(["member"]), json!([])), // legacy kh_roles fallback
        ("grace", "kubehero-es", "member", json!(["auditor", "member"]), json!([])),
    ];
    for (login, client, role, roles, scoped) in cases {
        let secret = format!("{client}-secret");
        let tokens = idp.authcode(login, client, &secret).await.unwrap();
        let alg = if *client == "kubehero-es" { "ES256" } else { "RS256" };
        assert_eq!(header(&tokens.id_token)["alg"], alg);
        let me = ts.whoami(&tokens.id_token).await;
        assert_eq!(me["sub"], *login, "{me}");
        assert_eq!(me["email"], format!("{login}@example.com"));
        assert_eq!(me["role"], *role, "{login}: {me}");
        assert_eq!(me["roles"], *roles, "{login}: {me}");
        assert_eq!(me["scoped_roles"], *scoped, "{login}: {me}");
    }
    // The scoped mapping is enforced, not only displayed: carol arms in prod-*, not elsewhere.
    let erin = idp.authcode("erin", "kubehero", "kubehero-secret").await.unwrap().id_token;
    let carol = idp.authcode("carol", "kubehero", "kubehero-secret").await.unwrap().id_token;
    assert_eq!(
        ts.post("/api/v1/clusters", Some(&carol), json!({ "name": "prod-eu" })).await.status,
        StatusCode::CREATED
    );
    assert_eq!(ts.post("/api/v1/clusters", Some(&carol), json!({ "name": "dev" })).await.status, StatusCode::FORBIDDEN);
    assert_eq!(ts.post("/api/v1/clusters", Some(&erin), json!({ "name": "dev" })).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn group_prefix_separates_issuers() {
    let idp = OidcProvider::start().await.unwrap();
    let file = format!(
        r#"
        [[issuers]]
        issuer = "{}"
        audiences = ["kubehero"]
        group_prefix = "acme:"
        group_roles = {{ "acme:kubehero-admins" = "admin" }}
        "#,
        idp.issuer
    );
    // The unprefixed global mapping must not match prefixed groups.
    let ts = TestServer::start(&[("KUBEHERO_GROUP_ROLES", "kubehero-admins=owner")], Some(&file)).await;
    ts.wait_issuer_healthy().await;
    let alice = idp.authcode("alice", "kubehero", "kubehero-secret").await.unwrap().id_token;
    let me = ts.whoami(&alice).await;
    assert_eq!(me["groups"], json!(["acme:kubehero-admins", "acme:dev"]));
    assert_eq!(me["role"], "admin");
}

#[tokio::test]
async fn people_mint_api_keys_no_higher_than_their_role() {
    let idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(&[], Some(&idp_file(&idp.issuer, ""))).await;
    ts.wait_issuer_healthy().await;
    let alice = idp.authcode("alice", "kubehero", "kubehero-secret").await.unwrap().id_token;
    let bob = idp.authcode("bob", "kubehero", "kubehero-secret").await.unwrap().id_token;
    let r = ts.post("/api/v1/api-keys", Some(&alice), json!({ "name": "ci", "role": "owner" })).await;
    assert_eq!(error_code(&r), "permission_denied");
    let r = ts.post("/api/v1/api-keys", Some(&bob), json!({ "name": "ci", "role": "viewer" })).await;
    assert_eq!(error_code(&r), "permission_denied", "viewers mutate nothing");
    let r =
        ts.post("/api/v1/api-keys", Some(&alice), json!({ "name": "ci", "role": "admin", "expires_in_days": 7 })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let key = r.body["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("khk_"));
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(id, key_sub(&key));
    assert!(r.body.get("hash").is_none());
    // Shown once: listing never carries the key.
    let list = ts.get("/api/v1/api-keys", Some(&alice)).await;
    assert!(!list.body.to_string().contains(&key));
    assert_eq!(list.body["items"][0]["owner"], format!("{}#alice", idp.issuer), "owners name their issuer");
    assert_eq!(ts.get("/api/v1/api-keys", Some(&bob)).await.body["items"], json!([]), "bob sees only his own");
    let me = ts.whoami(&key).await;
    assert_eq!(me["sub"], id);
    assert_eq!(me["role"], "admin");
    assert_eq!(me["kind"], "api_key");
    // Revocation is immediate.
    let r = ts.call(Method::DELETE, &format!("/api/v1/api-keys/{id}"), Some(&bob), None).await;
    assert_eq!(error_code(&r), "permission_denied");
    let r = ts.call(Method::DELETE, &format!("/api/v1/api-keys/{id}"), Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = ts.get("/api/v1/whoami", Some(&key)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn idp_down_at_startup_then_recovers() {
    let mut idp = OidcProvider::start().await.unwrap();
    let token = idp.client_credentials("kubehero", "kubehero-secret").await.unwrap();
    idp.stop().await;
    let ts = TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env())], Some(&idp_file(&idp.issuer, ""))).await;
    // Ready (the database is fine), with the issuer reported unhealthy.
    let r = ts.get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["issuers"][0]["healthy"], false);
    assert!(r.body["issuers"][0]["last_error"].is_string() || r.body["issuers"][0]["last_error"].is_null());
    let r = ts.get("/api/v1/whoami", Some(&token)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "its tokens get 401");
    assert_eq!(ts.whoami(ADMIN).await["role"], "admin", "other credentials keep working");
    idp.restart(false).await.unwrap();
    ts.wait_issuer_healthy().await;
    assert_eq!(ts.whoami(&token).await["sub"], "kubehero", "recovers by itself");
}

#[tokio::test]
async fn idp_down_after_warmup_keeps_cached_keys() {
    let mut idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(&[], Some(&idp_file(&idp.issuer, ""))).await;
    ts.wait_issuer_healthy().await;
    let t1 = idp.client_credentials("kubehero", "kubehero-secret").await.unwrap();
    let t2 = idp.client_credentials("kubehero-es", "kubehero-es-secret").await.unwrap();
    ts.whoami(&t1).await;
    idp.stop().await;
    // t2 was never seen: it is verified now, with the cached keys.
    assert_eq!(ts.whoami(&t2).await["sub"], "kubehero-es");
    assert_eq!(ts.get("/readyz", None).await.body["issuers"][0]["healthy"], true);
}

#[tokio::test]
async fn unknown_kid_flood_refetches_at_most_once_per_cooldown() {
    let idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(&[], Some(&idp_file(&idp.issuer, "jwks_refetch_cooldown_secs = 60"))).await;
    ts.wait_issuer_healthy().await;
    let good = idp.client_credentials("kubehero", "kubehero-secret").await.unwrap();
    ts.whoami(&good).await;
    let before = idp.jwks_hits().await.unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let h = json!({ "alg": "RS256", "kid": format!("attacker-{i}"), "typ": "at+jwt" });
        let forged = format!(
            "{}.{}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_string()),
            parts[1],
            parts[2]
        );
        let (http, url) = (ts.http.clone(), ts.url.clone());
        tasks.push(tokio::spawn(async move {
            http.get(format!("{url}/api/v1/whoami")).bearer_auth(forged).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    let after = idp.jwks_hits().await.unwrap();
    assert!(after - before <= 1, "{} JWKS fetches for 200 unknown kids", after - before);
    // Unknown kid but a foreign issuer: never fetched at all.
    let mut claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["iss"] = json!("http://127.0.0.1:1");
    let h = json!({ "alg": "RS256", "kid": "x" });
    let forged = format!(
        "{}.{}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_string()),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(ts.get("/api/v1/whoami", Some(&forged)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(idp.jwks_hits().await.unwrap(), after);
}

#[tokio::test]
async fn key_rotation_needs_one_refetch() {
    let mut idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(&[], Some(&idp_file(&idp.issuer, ""))).await;
    ts.wait_issuer_healthy().await;
    let old = idp.client_credentials("kubehero", "kubehero-secret").await.unwrap();
    ts.whoami(&old).await;
    idp.restart(true).await.unwrap();
    let new = idp.client_credentials("kubehero", "kubehero-secret").await.unwrap();
    assert_ne!(header(&new)["kid"], header(&old)["kid"]);
    let before = idp.jwks_hits().await.unwrap();
    assert_eq!(ts.whoami(&new).await["sub"], "kubehero");
    assert_eq!(idp.jwks_hits().await.unwrap() - before, 1, "exactly one refetch");
}

/// Real tokens from the real provider, mutated the ways attackers do (RFC 8725 classes), sent over HTTP: every
/// one is 401 `unauthenticated` with the JSON error shape, none is 500, none falls back to anonymous, and the
/// untouched token still works afterwards. The full library-level corpus lives in kubehero-authn's tests.
#[tokio::test]
async fn mutated_real_tokens_are_401_never_500() {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(&[("OIDC_ISSUER_URL", &idp.issuer), ("OIDC_AUDIENCE", "kubehero")], None).await;
    ts.wait_issuer_healthy().await;
    let rs = idp.client_credentials("kubehero", "kubehero-secret").await.unwrap();
    let es = idp.client_credentials("kubehero-es", "kubehero-es-secret").await.unwrap();
    let split = |t: &str| -> (Value, Value, String) {
        let p: Vec<&str> = t.split('.').collect();
        (
            serde_json::from_slice(&b64.decode(p[0]).unwrap()).unwrap(),
            serde_json::from_slice(&b64.decode(p[1]).unwrap()).unwrap(),
            p[2].to_string(),
        )
    };
    let join =
        |h: &Value, c: &Value, s: &str| format!("{}.{}.{s}", b64.encode(h.to_string()), b64.encode(c.to_string()));
    let (h, c, sig) = split(&rs);
    let (eh, ec, esig) = split(&es);
    let with_h = |k: &str, v: Value| {
        let mut h = h.clone();
        h[k] = v;
        join(&h, &c, &sig)
    };
    let with_c = |k: &str, v: Value| {
        let mut c = c.clone();
        c[k] = v;
        join(&h, &c, &sig)
    };
    let without_c = |k: &str| {
        let mut c = c.clone();
        c.as_object_mut().unwrap().remove(k);
        join(&h, &c, &sig)
    };
    let now = c["iat"].as_i64().unwrap();
    let mut flipped = b64.decode(&sig).unwrap();
    flipped[10] ^= 1;
    let cases: Vec<(&str, String)> = vec![
        ("alg none, no signature", format!("{}.{}.", b64.encode(r#"{"alg":"none"}"#), rs.split('.').nth(1).unwrap())),
        ("alg none, signature kept", with_h("alg", json!("none"))),
        ("HS256 header on an RSA key", with_h("alg", json!("HS256"))),
        ("RS384 header on an RS256 signature", with_h("alg", json!("RS384"))),
        ("PS256 header", with_h("alg", json!("PS256"))),
        ("ES256 header on an RSA kid", with_h("alg", json!("ES256"))),
        ("RS256 header on an ES256 token", {
            let mut eh = eh.clone();
            eh["alg"] = json!("RS256");
            join(&eh, &ec, &esig)
        }),
        ("unknown kid", with_h("kid", json!("no-such-key"))),
        ("jku header", with_h("jku", json!("https://evil.example/jwks"))),
        ("x5u header", with_h("x5u", json!("https://evil.example/cert"))),
        ("embedded jwk", with_h("jwk", json!({"kty":"oct","k":"AAAA"}))),
        ("x5c header", with_h("x5c", json!(["MIIB"]))),
        ("unknown crit", with_h("crit", json!(["exp-ext"]))),
        ("wrong iss", with_c("iss", json!("https://evil.example"))),
        ("wrong aud", with_c("aud", json!("someone-else"))),
        ("expired", with_c("exp", json!(now - 3600))),
        ("not yet valid", with_c("nbf", json!(now + 3600))),
        ("no exp", without_c("exp")),
        ("escalated groups", with_c("groups", json!(["kubehero-owners"]))),
        ("signature stripped", format!("{}.", rs.rsplit_once('.').unwrap().0)),
        ("signature flipped", format!("{}.{}", rs.rsplit_once('.').unwrap().0, b64.encode(&flipped))),
        ("signature truncated", rs[..rs.len() - 10].to_string()),
        ("ES256 signature on the RS256 token", format!("{}.{esig}", rs.rsplit_once('.').unwrap().0)),
        ("two parts", rs.rsplit_once('.').unwrap().0.to_string()),
        ("four parts", format!("{rs}.x")),
        ("padded base64", format!("{}=.{}", rs.split('.').next().unwrap(), rs.split_once('.').unwrap().1)),
        ("standard base64 alphabet", rs.replace('-', "+").replace('_', "/")),
        ("header not JSON", format!("{}.{}", b64.encode("not json"), rs.split_once('.').unwrap().1)),
        ("duplicate alg member", {
            let raw = h.to_string().replacen('{', r#"{"alg":"none","#, 1);
            format!("{}.{}", b64.encode(raw), rs.split_once('.').unwrap().1)
        }),
        ("oversize (20 KiB)", format!("{rs}{}", "A".repeat(20 * 1024))),
        ("deeply nested header", format!("{}.{}.{sig}", b64.encode("[".repeat(5000)), b64.encode(c.to_string()))),
        ("non-ASCII", format!("{rs}\u{e9}")),
    ];
    assert!(cases.len() >= 30);
    for (name, token) in &cases {
        let r = ts.call(Method::GET, "/api/v1/whoami", None, None).await;
        assert_eq!(r.status, StatusCode::OK, "open mode still serves anonymous requests");
        let r = ts
            .http
            .get(format!("{}/api/v1/whoami", ts.url))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await;
        let Ok(r) = r else {
            // reqwest refuses header values that are not visible ASCII; nothing was sent.
            assert_eq!(*name, "non-ASCII");
            continue;
        };
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "unauthenticated", "{name}: {body}");
        assert!(body["request_id"].is_string(), "{name}");
    }
    assert_eq!(ts.whoami(&rs).await["sub"], "kubehero");
    assert_eq!(ts.whoami(&es).await["sub"], "kubehero-es");
    // None of the mutated kids or headers made the server fetch anything but the configured JWKS.
    assert!(idp.jwks_hits().await.unwrap() <= 2, "one fetch, at most one unknown-kid refetch");
}

/// Two real IdPs both issue `sub=alice` (same email, same groups): they are two people. Alice of B, a member,
/// must neither see, revoke nor edit what alice of A owns, and a user binding names its issuer.
#[tokio::test]
async fn same_sub_from_two_issuers_is_two_people() {
    let a = OidcProvider::start().await.unwrap();
    let b = OidcProvider::start().await.unwrap();
    let file = format!(
        r#"
        [[issuers]]
        issuer = "{}"
        audiences = ["kubehero"]
        group_roles = {{ "dev" = "member" }}
        [[issuers]]
        issuer = "{}"
        audiences = ["kubehero"]
        group_prefix = "b:"
        group_roles = {{ "b:dev" = "member" }}
        [[bindings]]
        user = "alice"
        issuer = "{}"
        role = "admin"
        cluster = "prod-a"
        "#,
        a.issuer, b.issuer, a.issuer
    );
    let ts = TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env())], Some(&file)).await;
    ts.wait_issuer_healthy().await;
    let alice_a = a.authcode("alice", "kubehero", "kubehero-secret").await.unwrap().id_token;
    let alice_b = b.authcode("alice", "kubehero", "kubehero-secret").await.unwrap().id_token;
    let (me_a, me_b) = (ts.whoami(&alice_a).await, ts.whoami(&alice_b).await);
    assert_eq!((&me_a["sub"], &me_b["sub"]), (&json!("alice"), &json!("alice")));
    assert_eq!((&me_a["role"], &me_b["role"]), (&json!("member"), &json!("member")));
    assert_eq!(me_a["scoped_roles"], json!([{ "role": "admin", "cluster": "prod-a", "namespace": null }]), "{me_a}");
    assert_eq!(me_b["scoped_roles"], json!([]), "the file binding names issuer A: {me_b}");

    // What alice of A owns.
    let key = ts.post("/api/v1/api-keys", Some(&alice_a), json!({ "name": "ci", "role": "member" })).await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.body);
    let key_id = key.body["id"].as_str().unwrap().to_string();
    assert_eq!(key.body["owner"], format!("{}#alice", a.issuer));
    ts.post("/api/v1/clusters", Some(ADMIN), json!({ "name": "prod-a" })).await;
    let p = ts.post("/api/v1/policies", Some(&alice_a), json!({ "name": "p", "cluster": "prod-a", "spec": {} })).await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.body);
    let policy = p.body["id"].as_str().unwrap().to_string();
    let edit = json!({ "name": "p", "spec": { "edited": true }, "version": 1 });

    // Alice of B: none of it is hers.
    let listed = ts.get("/api/v1/api-keys", Some(&alice_b)).await;
    assert_eq!(listed.body["items"], json!([]), "B's alice lists A's keys: {}", listed.body);
    let r = ts.call(Method::DELETE, &format!("/api/v1/api-keys/{key_id}"), Some(&alice_b), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "B's alice revoked A's key: {}", r.body);
    let r = ts.call(Method::PUT, &format!("/api/v1/policies/{policy}"), Some(&alice_b), Some(edit.clone())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "B's alice edited A's draft: {}", r.body);
    // Alice of A still can, and her key works.
    let listed = ts.get("/api/v1/api-keys", Some(&alice_a)).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    let r = ts.call(Method::PUT, &format!("/api/v1/policies/{policy}"), Some(&alice_a), Some(edit)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = ts.call(Method::DELETE, &format!("/api/v1/api-keys/{key_id}"), Some(&alice_a), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Audit rows say which alice acted; the actor filter takes the subject key.
    let actor = kubehero_server::login::urlencode(&format!("{}#alice", b.issuer));
    let rows = ts.get(&format!("/api/v1/audit?actor={actor}"), Some(OWNER)).await;
    let items = rows.body["items"].as_array().unwrap();
    assert!(!items.is_empty(), "{}", rows.body);
    for row in items {
        assert_eq!(row["actor"]["issuer"], json!(b.issuer), "{row}");
    }
    // A user binding must name the issuer (or an email): a bare sub is refused.
    let bare = json!({ "subject": { "kind": "user", "name": "alice" }, "role": "admin" });
    assert_eq!(error_code(&ts.post("/api/v1/role-bindings", Some(OWNER), bare).await), "invalid_argument");
    let qualified = json!({ "subject": { "kind": "user", "name": format!("{}#alice", b.issuer) }, "role": "admin" });
    assert_eq!(ts.post("/api/v1/role-bindings", Some(OWNER), qualified).await.status, StatusCode::CREATED);
    ts.wait_ok("/healthz", None).await;
    assert_eq!(ts.whoami(&alice_b).await["role"], "admin");
    assert_eq!(ts.whoami(&alice_a).await["role"], "member");
}
