//! Share links and break-glass with the real IdP (npm `oidc-provider`), a real kube-apiserver 1.20 behind a
//! connected agent with RBAC sync, real kubectl, headless Chromium for the link's sign-in round trip, and real
//! rsyslog and S3 (s3s-fs) as the audit sinks a break-glass use must alert.

use crate::direct::{bind, lab_with_agent, member_rolebinding_in_team_a};
use crate::kube::Kubectl;
use crate::support::*;
use kubehero_testkit::oidc::{free_port, OidcProvider};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// A control plane over HTTPS (kubectl sends credentials only there) with browser sign-in through `idp`, the
/// test API keys and `extra`; and its certificate (self-signed: its own CA).
pub(crate) async fn access_server(dir: &Path, extra: &[(&str, &str)]) -> (TestServer, OidcProvider, Vec<u8>) {
    let (cert, key, ca) = crate::kube::tls_files(dir);
    let port = free_port().unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let idp = OidcProvider::start_for(free_port().unwrap(), std::slice::from_ref(&base)).await.unwrap();
    let (listen, keys) = (format!("127.0.0.1:{port}"), api_keys_env());
    let mut env = vec![
        ("KUBEHERO_TLS_CERT", cert.to_str().unwrap()),
        ("KUBEHERO_TLS_KEY", key.to_str().unwrap()),
        ("KUBEHERO_LISTEN", &*listen),
        ("KUBEHERO_PUBLIC_URL", &*base),
        ("KUBEHERO_REQUIRE_AUTH", "true"),
        ("KUBEHERO_API_KEYS", &*keys),
        ("OIDC_ISSUER_URL", &*idp.issuer),
        ("OIDC_AUDIENCE", "kubehero"),
        ("KUBEHERO_OIDC_CLIENT_ID", "kubehero"),
        ("KUBEHERO_OIDC_CLIENT_SECRET", "kubehero-secret"),
        ("KUBEHERO_GROUP_ROLES", "kubehero-admins=admin,kubehero-owners=owner"),
    ];
    env.extend_from_slice(extra);
    let ts = TestServer::start(&env, None).await;
    ts.wait_issuer_healthy().await;
    (ts, idp, ca)
}

/// A person's IdP token, through the provider's real login and consent pages.
async fn id_token(idp: &OidcProvider, login: &str) -> String {
    idp.authcode(login, "kubehero", "kubehero-secret").await.unwrap().id_token
}

/// `kubectl` with `kubeconfig` whose only user is swapped for a bearer token.
fn with_token(dir: &Path, name: &str, kubeconfig: &Value, token: &str) -> std::path::PathBuf {
    let mut kc = kubeconfig.clone();
    kc["users"][0]["user"] = json!({ "token": token });
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
    path
}

/// How many rows of `action` record a success.
async fn done(ts: &TestServer, action: &str) -> usize {
    rows(ts, action).await.iter().filter(|r| r["result"]["outcome"] == "ok").count()
}

/// The audit rows of `action`, oldest first.
async fn rows(ts: &TestServer, action: &str) -> Vec<Value> {
    let r = ts.get(&format!("/api/v1/audit?action={action}&limit=100"), Some(OWNER)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut items = r.body["items"].as_array().unwrap().clone();
    items.reverse();
    items
}

fn artefacts(dir: &Path) -> std::path::PathBuf {
    match std::env::var_os("KUBEHERO_TEST_ARTEFACTS") {
        Some(d) => Path::new(&d).join("shares"),
        None => dir.join("browser"),
    }
}

/// Seed 004's story with real programs: an admin shares a namespace of a cluster with one person; a person the
/// link was not made for is told so; the recipient signs in through the link (the IdP round trip keeps it),
/// sees what it gives, accepts it and downloads a kubeconfig; kubectl then has the shared role and nothing
/// more, through the proxy and in the synced RBAC. Revoking cuts the recipient's running watch; a short link
/// expires; forged, used-up and over-privileged links are refused; every step is an audit row.
#[tokio::test]
async fn a_share_link_gives_its_role_after_sign_in_and_ends_when_revoked_or_expired() {
    let chromium = kubehero_testkit::browser::chromium();
    assert!(chromium.is_ok(), "{:#}", chromium.unwrap_err());
    let bin = kubehero_testkit::kubectl::kubectl().expect("kubectl 1.30: run scripts/test (it fetches it)");
    let dir = tempfile::tempdir().unwrap();
    let (ts, idp, _) = access_server(dir.path(), &[]).await;
    let (k, _agent) = lab_with_agent(&ts, dir.path()).await;
    let state = &ts.server.as_ref().unwrap().state;
    bind(&ts, "carol@example.com", "admin", "lab", None).await;
    let (carol, bob, dave) = (id_token(&idp, "carol").await, id_token(&idp, "bob").await, id_token(&idp, "dave").await);
    let share =
        async |body: Value| ts.call(Method::POST, "/api/v1/clusters/lab/shares", Some(&carol), Some(body)).await;
    let accept = async |who: &str, token: &str| {
        ts.call(Method::POST, "/api/v1/shares/accept", Some(who), Some(json!({ "token": token }))).await
    };

    // Bad input: a role above the creator's, too long, bad recipients and use counts, a bad namespace.
    for (body, status) in [
        (json!({"role": "owner", "expires_in_secs": 600}), 403),
        (json!({"role": "viewer", "expires_in_secs": 40 * 86_400}), 400),
        (json!({"role": "viewer", "expires_in_secs": 600, "to": ["not an email"]}), 400),
        (json!({"role": "viewer", "expires_in_secs": 600, "max_uses": 0}), 400),
        (json!({"role": "viewer", "expires_in_secs": 600, "namespace": "Bad_NS"}), 400),
        (json!({"role": "viewer", "expires_in_secs": 600, "surprise": 1}), 400),
    ] {
        let r = share(body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }
    let r = ts
        .call(
            Method::POST,
            "/api/v1/clusters/nowhere/shares",
            Some(&carol),
            Some(json!({"role": "viewer", "expires_in_secs": 60})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = ts
        .call(
            Method::POST,
            "/api/v1/clusters/lab/shares",
            Some(&bob),
            Some(json!({"role": "viewer", "expires_in_secs": 60})),
        )
        .await;
    assert_eq!(r.status, 403, "bob holds nothing on lab, so he shares nothing: {}", r.body);

    // Carol shares member in team-a with bob (or the contractors group), for two people at most.
    let r = share(json!({"role": "member", "namespace": "team-a", "expires_in_secs": 600, "max_uses": 2,
        "to": ["bob@example.com", "group:contractors"]}))
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (id, link) = (r.body["id"].as_str().unwrap().to_string(), r.body["url"].as_str().unwrap().to_string());
    assert!(link.starts_with(&format!("{}/share/khl_", ts.url)), "{link}");
    assert!(r.body.get("token_hash").is_none());
    assert!(state.store.list_shares().await.unwrap().iter().all(|s| !link.contains(&s.token_hash)));

    // Dave signs in through the link and is told it is not for him.
    let out = artefacts(dir.path());
    let refused = kubehero_testkit::browser::open_share(&link, "dave", &out).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(refused.refused.as_deref(), Some("not_recipient"), "{refused:?}");

    // Bob signs in through the link, sees what it gives, accepts and downloads the kubeconfig.
    let got = kubehero_testkit::browser::open_share(&link, "bob", &out).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(got.refused, None, "{got:?}");
    assert_eq!((got.shown["cluster"].as_str(), got.shown["role"].as_str()), (Some("lab"), Some("member")));
    assert!(got.shown["scope"].as_str().unwrap().contains("team-a"), "{got:?}");
    assert_eq!(got.shown["shared_by"], "carol@example.com");
    assert_eq!(got.shown["cli"].as_str().unwrap(), format!("kubehero kubeconfig --share {link}"));
    let kubeconfig: Value = serde_json::from_str(&got.kubeconfig).unwrap();
    assert_eq!(kubeconfig["clusters"][0]["cluster"]["server"], format!("{}/k8s/clusters/lab", ts.url));
    assert_eq!(
        kubeconfig["users"][0]["user"]["exec"]["args"],
        json!(["token", "--server", ts.url, "--cluster", "lab"])
    );
    assert_eq!(kubeconfig["current-context"], "kubehero-lab");

    // kubectl with that kubeconfig — its exec user (the CLI's `kubehero token`, tested in the CLI crate)
    // swapped for bob's IdP token — has member in team-a and nothing more.
    let kubectl = Kubectl { bin, home: dir.path().join("home") };
    let config = with_token(dir.path(), "bob.kubeconfig", &kubeconfig, &bob);
    let (ok, _, err) = kubectl.run(&config, &["create", "configmap", "shared", "-n", "team-a"], None).await;
    assert!(ok, "{err}");
    for args in
        [&["get", "configmaps", "-n", "default"][..], &["get", "namespaces"], &["delete", "namespace", "team-a"]]
    {
        let (ok, _, err) = kubectl.run(&config, args, None).await;
        assert!(!ok && err.contains("forbidden"), "{args:?}: {err}");
    }
    let t0 = Instant::now();
    while !member_rolebinding_in_team_a(&k).await {
        assert!(t0.elapsed() < Duration::from_secs(5), "RBAC sync did not bind the shared role");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Accepting again counts no second use.
    let token = link.rsplit('/').next().unwrap().to_string();
    assert_eq!(accept(&bob, &token).await.status, 200);
    let listed = ts.get("/api/v1/clusters/lab/shares", Some(&carol)).await;
    let mine = &listed.body["items"][0];
    assert_eq!((mine["uses"].as_i64(), mine["state"].as_str()), (Some(1), Some("open")), "{}", listed.body);
    assert_eq!(mine["can_revoke"], true);
    let others = ts.get("/api/v1/clusters/lab/shares", Some(&dave)).await;
    assert_eq!(others.body["items"], json!([]), "dave sees no one else's shares");

    // Revoking ends the grant: bob's running watch is cut within seconds, then kubectl is refused.
    let mut watch = crate::kube::open_watch_in(&kubectl, &config, &state.kube_streams, "team-a").await;
    let r = ts.call(Method::DELETE, &format!("/api/v1/clusters/lab/shares/{id}"), Some(&dave), None).await;
    assert_eq!(r.status, 403, "only its creator or an admin revokes: {}", r.body);
    let r = ts.call(Method::DELETE, &format!("/api/v1/clusters/lab/shares/{id}"), Some(&carol), None).await;
    assert_eq!((r.status.as_u16(), r.body["grants_ended"].as_u64()), (200, Some(1)), "{}", r.body);
    crate::kube::exits_within(&mut watch, Duration::from_secs(5)).await;
    let (ok, _, err) = kubectl.run(&config, &["get", "configmaps", "-n", "team-a"], None).await;
    assert!(!ok && err.contains("no KubeHero role"), "{err}");
    let r = accept(&bob, &token).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("revoked"), "{}", r.body);

    // A one-use, five-second link: bob takes the one use; dave is refused; a forged link is unknown; at its
    // end bob's viewer role ends with it.
    let r = share(json!({"role": "viewer", "expires_in_secs": 5, "max_uses": 1})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (short, until) = (r.body["token"].as_str().unwrap().to_string(), r.body["expires_at"].as_i64().unwrap());
    assert_eq!(accept(&bob, &short).await.status, 200);
    let r = accept(&dave, &short).await;
    assert!(r.status == 409 && r.body["message"].as_str().unwrap().contains("used as many times"), "{}", r.body);
    for forged in ["khl_forged", "not-a-link", &format!("{short}x")] {
        assert_eq!(accept(&dave, forged).await.status, 404, "{forged}");
    }
    let (ok, _, err) = kubectl.run(&config, &["get", "configmaps", "-n", "team-a"], None).await;
    assert!(ok, "{err}");
    while crate::agents::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, _, err) = kubectl.run(&config, &["get", "configmaps", "-n", "team-a"], None).await;
    assert!(!ok && err.contains("no KubeHero role"), "{err}");
    let r = accept(&dave, &short).await;
    assert!(r.status == 409 && r.body["message"].as_str().unwrap().contains("expired"), "{}", r.body);
    assert_eq!(state.identity.expire_shares().await.unwrap(), 1, "the revoked share is not 'expired'");
    assert_eq!(state.identity.expire_shares().await.unwrap(), 0, "recorded once");

    // Every step is on record, refusals with their reason.
    assert_eq!(done(&ts, "share.create").await, 2);
    assert_eq!(done(&ts, "share.open").await, 1, "bob's page");
    assert_eq!(done(&ts, "share.accept").await, 3, "bob's page, his second acceptance and the short link");
    let revokes: Vec<_> = rows(&ts, "share.revoke").await.iter().map(|r| r["result"]["outcome"].clone()).collect();
    assert_eq!(revokes, [json!("denied"), json!("ok")], "dave's refusal, then carol's revocation");
    assert_eq!(done(&ts, "share.expire").await, 1);
    let reasons: Vec<String> =
        rows(&ts, "share.refuse").await.iter().map(|r| r["result"]["code"].as_str().unwrap().to_string()).collect();
    let want = ["not_recipient", "revoked", "used_up", "unknown_link", "unknown_link", "unknown_link", "expired"];
    assert_eq!(reasons, want);
    let refusal = &rows(&ts, "share.refuse").await[0];
    assert_eq!(
        (refusal["actor"]["email"].as_str(), refusal["result"]["outcome"].as_str()),
        (Some("dave@example.com"), Some("denied"))
    );
}

/// Seed 003's emergency access with the IdP process stopped: an owner's sealed code gives owner on the
/// cluster once (kubectl proves it), a second use and an unknown code are refused, rsyslog and S3 receive the
/// use at once (syslog severity alert), `/metrics` counts it, the dashboard shows a banner until an owner
/// acknowledges it, and the audit chain still verifies.
#[tokio::test]
async fn break_glass_works_once_with_the_idp_down_and_cannot_be_used_quietly() {
    let bin = kubehero_testkit::kubectl::kubectl().expect("kubectl 1.30: run scripts/test (it fetches it)");
    let syslog = kubehero_testkit::rsyslog::Rsyslog::start().await.unwrap();
    let s3 = kubehero_testkit::s3::S3Server::start().await.unwrap();
    std::fs::create_dir_all(s3.data_dir().join("audit")).unwrap();
    let sinks = format!("tcp://127.0.0.1:{},s3://audit/cp", syslog.port);
    let endpoint = s3.endpoint();
    let extra = [
        ("KUBEHERO_AUDIT_FORWARD", &*sinks),
        ("KUBEHERO_AUDIT_S3_ENDPOINT", &*endpoint),
        ("AWS_ACCESS_KEY_ID", &*s3.access_key),
        ("AWS_SECRET_ACCESS_KEY", &*s3.secret_key),
        ("AWS_REGION", &*s3.region),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (ts, mut idp, ca) = access_server(dir.path(), &extra).await;
    let (_k, _agent) = lab_with_agent(&ts, dir.path()).await;
    crate::kube::rbac_applied(&ts, "lab").await;

    // Bad input, then two codes sealed by an owner (only owners may).
    let create = async |who: &str, body: Value| {
        ts.call(Method::POST, "/api/v1/clusters/lab/breakglass", Some(who), Some(body)).await
    };
    assert_eq!(create(ADMIN, json!({"count": 2})).await.status, 403);
    assert_eq!(create(OWNER, json!({"count": 11})).await.status, 400);
    assert_eq!(create(OWNER, json!({"ttl_secs": 10})).await.status, 400);
    let r = create(OWNER, json!({"count": 2, "ttl_secs": 600})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let code = r.body["codes"][0]["code"].as_str().unwrap().to_string();
    let code_id = r.body["codes"][0]["id"].as_str().unwrap().to_string();
    let listed = ts.get("/api/v1/breakglass", Some(AUDITOR)).await;
    assert!(!listed.body.to_string().contains(&code), "a listing never shows a code");

    // The IdP goes down.
    idp.stop().await;
    let use_code = async |code: &str, reason: &str| {
        ts.call(Method::POST, "/api/v1/breakglass/use", None, Some(json!({"code": code, "reason": reason}))).await
    };
    assert_eq!(use_code(&code, " ").await.status, 400, "a reason is required");
    assert_eq!(use_code("khb_guess", "INC-9").await.status, 401);
    let r = use_code(&code, "INC-9: the IdP is down").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["cluster"].as_str(), r.body["role"].as_str()), (Some("lab"), Some("owner")));
    let token = r.body["access_token"].as_str().unwrap().to_string();
    let again = use_code(&code, "INC-9 again").await;
    assert!(again.status == 409 && again.body["message"].as_str().unwrap().contains("already used"), "{}", again.body);

    // Owner on lab through the proxy, with no IdP.
    let kubectl = Kubectl { bin, home: dir.path().join("home") };
    let config = dir.path().join("breakglass.kubeconfig");
    let server = format!("{}/k8s/clusters/lab", ts.url);
    std::fs::write(&config, kubehero_testkit::kubectl::token_kubeconfig(&server, &ca, &token)).unwrap();
    let (ok, out, err) = kubectl.run(&config, &["auth", "can-i", "*", "*", "--all-namespaces"], None).await;
    assert!(ok && out.trim() == "yes", "{out} {err}");
    let (ok, _, err) = kubectl.run(&config, &["create", "namespace", "incident-9"], None).await;
    assert!(ok, "{err}");
    let me = ts.get("/api/v1/whoami", Some(&token)).await;
    assert_eq!(me.body["sub"], format!("breakglass:{code_id}"), "{}", me.body);
    let r = ts.call(Method::POST, "/api/v1/auth/rotate", Some(&token), Some(json!({}))).await;
    assert_eq!(r.status, 400, "a break-glass token is not rotated past its end: {}", r.body);

    // Every sink has it at once: syslog at severity alert (authpriv × 8 + 1 = 81), S3 without waiting for a
    // fuller object.
    let msgs = syslog
        .wait_for(Duration::from_secs(10), |m| serde_json::to_string(m).unwrap().contains("breakglass.use"))
        .await
        .unwrap();
    let alert = msgs.iter().find(|m| m.to_string().contains("breakglass.use")).unwrap();
    assert_eq!((alert["pri"].as_str(), alert["severity"].as_str()), (Some("81"), Some("alert")), "{alert}");
    let t0 = Instant::now();
    while !s3_holds(s3.data_dir(), "breakglass.use") {
        assert!(t0.elapsed() < Duration::from_secs(10), "S3 never received the break-glass use");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // /metrics counts it; the dashboard shows the banner to every signed-in person until an owner acknowledges.
    let metrics = ts.get("/metrics", None).await.body.as_str().unwrap().to_string();
    assert!(metrics.contains("kubehero_breakglass_uses_total{cluster=\"lab\"} 1"), "{metrics}");
    assert!(metrics.contains("kubehero_breakglass_unacknowledged 1"), "{metrics}");
    let (bob_cookie, _) = session_for(&ts, "bob", &[]).await;
    let (erin_cookie, erin_csrf) = session_for(&ts, "erin", &["kubehero-owners"]).await;
    let page = home(&ts, &bob_cookie).await;
    assert!(
        page.contains(&format!("id=\"breakglass-{code_id}\"")) && page.contains("An owner must acknowledge"),
        "{page}"
    );
    let page = home(&ts, &erin_cookie).await;
    assert!(page.contains(&format!("id=\"acknowledge-{code_id}\"")), "{page}");
    let r = ts
        .http
        .post(format!("{}/breakglass/acknowledge", ts.url))
        .header("cookie", &erin_cookie)
        .form(&[("csrf", "forged"), ("id", code_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a forged CSRF token acknowledges nothing");
    let r = ts
        .http
        .post(format!("{}/breakglass/acknowledge", ts.url))
        .header("cookie", &erin_cookie)
        .form(&[("csrf", erin_csrf.as_str()), ("id", code_id.as_str())])
        .send()
        .await
        .unwrap();
    // Back to the dashboard (the client follows the 303).
    assert_eq!((r.status().as_u16(), r.url().path()), (200, "/"));
    assert!(!home(&ts, &bob_cookie).await.contains("breakglass-"), "the banner is gone");
    let metrics = ts.get("/metrics", None).await.body.as_str().unwrap().to_string();
    assert!(metrics.contains("kubehero_breakglass_unacknowledged 0"), "{metrics}");
    let r =
        ts.call(Method::POST, &format!("/api/v1/breakglass/{code_id}/acknowledge"), Some(OWNER), Some(json!({}))).await;
    assert_eq!(r.status, 409, "acknowledged once: {}", r.body);

    // The unused code can be revoked, and then does nothing.
    let listed = ts.get("/api/v1/breakglass", Some(OWNER)).await;
    let unused = listed.body["items"].as_array().unwrap().iter().find(|c| c["state"] == "unused").unwrap().clone();
    let r = ts
        .call(Method::DELETE, &format!("/api/v1/breakglass/{}", unused["id"].as_str().unwrap()), Some(OWNER), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // On record, durably, and the chain verifies.
    let used = rows(&ts, "breakglass.use").await;
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["actor"]["auth_method"], "breakglass");
    let refusals: Vec<String> = rows(&ts, "breakglass.refuse")
        .await
        .iter()
        .map(|r| r["result"]["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(refusals, ["reason", "unknown_code", "used"]);
    for action in ["breakglass.create", "breakglass.acknowledge", "breakglass.revoke"] {
        assert_eq!(done(&ts, action).await, 1, "{action}");
    }
    let store = ts.state().store.clone();
    let keys = kubehero_audit::HmacKeys::new(TEST_AUDIT_KEY.as_bytes(), &[]).unwrap();
    let report = kubehero_audit::verify_store(&*store, &keys, &[]).await.unwrap();
    assert!(report.rows > 10, "{report:?}");
}

/// Whether any gzip object under the S3 data directory holds `needle`.
fn s3_holds(data: &Path, needle: &str) -> bool {
    use std::io::Read;
    let mut stack = vec![data.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".jsonl.gz") {
                let mut text = String::new();
                let bytes = std::fs::read(&p).unwrap_or_default();
                if flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text).is_ok() && text.contains(needle) {
                    return true;
                }
            }
        }
    }
    false
}

/// A dashboard session for an IdP person straight into the store (the IdP is down): its cookie and CSRF token.
async fn session_for(ts: &TestServer, login: &str, groups: &[&str]) -> (String, String) {
    let who = kubehero_identity::SignedIn {
        sub: login.to_string(),
        email: Some(format!("{login}@example.com")),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        issuer: None,
        user_agent: None,
    };
    let (secret, rec) = kubehero_identity::credential::mint_session(who, crate::agents::now()).unwrap();
    ts.state().store.create_session(&rec).await.unwrap();
    (format!("kh_session={secret}"), rec.csrf.unwrap())
}

async fn home(ts: &TestServer, cookie: &str) -> String {
    ts.http.get(format!("{}/", ts.url)).header("cookie", cookie).send().await.unwrap().text().await.unwrap()
}
