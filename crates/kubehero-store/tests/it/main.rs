//! The storage conformance suite: one set of checks, run against SQLite (a file in a temporary directory and
//! `sqlite::memory:`) and against PostgreSQL (a throwaway cluster started with `initdb`/`pg_ctl`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kubehero_core::{Binding, BindingSubject, Role, Scope};
use kubehero_store::{
    ApiKeyRecord, Cluster, DeviceAuthorization, DeviceStatus, DirectoryGroup, DirectoryUser, GroupMember, GroupSelect,
    MemberChange, Membership, PersonMatch, Policy, PolicyState, SessionKind, SessionRecord, SqliteStore, Store,
    StoreError, StoredBinding, UserOrigin, UserSelect,
};
use kubehero_testkit::postgres::TempPostgres;
use serde_json::json;
use std::sync::Arc;

fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        api_server_url: Some(format!("https://{name}.example.com:6443")),
        labels: [("env".to_string(), "prod".to_string())].into_iter().collect(),
        created_by: "alice".to_string(),
        created_at: 100,
    }
}

fn policy(id: &str, cluster: &str, name: &str, at: i64) -> Policy {
    Policy {
        id: id.to_string(),
        name: name.to_string(),
        cluster: cluster.to_string(),
        namespace: Some("default".to_string()),
        owner: "bob".to_string(),
        spec: json!({"rules": [{"deny": "exec"}]}),
        state: PolicyState::Draft,
        version: 1,
        created_at: at,
        updated_at: at,
    }
}

fn key(id: &str, owner: &str, at: i64) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_string(),
        hash: format!("{id}{}", "0".repeat(64 - id.len())),
        name: format!("key {id}"),
        role: Role::Member,
        owner: owner.to_string(),
        created_at: at,
        expires_at: Some(at + 3600),
        revoked_at: None,
    }
}

fn session(id: &str, kind: SessionKind, sub: &str, at: i64) -> SessionRecord {
    SessionRecord {
        id: id.to_string(),
        hash: format!("{id}{}", "e".repeat(64 - id.len())),
        kind,
        sub: sub.to_string(),
        email: Some(format!("{sub}@example.com")),
        groups: vec!["oidc:oncall".to_string(), "oidc:payments".to_string(), "oidc:ünïcode \"quoted\"".to_string()],
        issuer: Some("https://idp.example.com".to_string()),
        csrf: (kind == SessionKind::Session).then(|| format!("csrf-{id}")),
        created_at: at,
        last_seen_at: at,
        expires_at: at + 8 * 3600,
        absolute_expires_at: at + 24 * 3600,
        revoked_at: None,
        user_agent: Some("Mozilla/5.0".to_string()),
    }
}

fn device(n: u32, at: i64, ttl: i64) -> DeviceAuthorization {
    DeviceAuthorization {
        device_hash: format!("{n:08x}{}", "d".repeat(56)),
        user_code: format!("ABCD-{n:04}"),
        status: DeviceStatus::Pending,
        sub: None,
        email: None,
        groups: Vec::new(),
        issuer: None,
        created_at: at,
        expires_at: at + ttl,
        last_poll_at: None,
    }
}

/// Every check, in one function, so both backends run exactly the same code.
async fn conformance(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    clusters(&*store).await;
    agents(&*store).await;
    policies(&*store).await;
    bindings(&*store).await;
    access_requests(&*store).await;
    shares(store.clone()).await;
    leases(&*store).await;
    api_keys(&*store).await;
    settings(&*store).await;
    sessions(&*store).await;
    devices(&*store).await;
    concurrent_device_consume(store.clone()).await;
    breakglass(store.clone()).await;
    directory(&*store).await;
    legacy_subjects(&*store).await;
}

/// Rows from before identities were (issuer, subject) pairs: bare person subjects become the one issuer's
/// subject keys; emails, key ids, qualified and non-person names stay.
async fn legacy_subjects(s: &dyn Store) {
    let bind = |id: &str, name: &str| StoredBinding {
        id: id.to_string(),
        binding: Binding { subject: BindingSubject::User(name.into()), role: Role::Admin, scope: Scope::Global },
        created_by: "erin".to_string(),
        created_at: 5,
        expires_at: None,
    };
    for (id, name) in
        [("lb1", "dave"), ("lb2", "dave@example.com"), ("lb3", "aaaa000000000002"), ("lb4", "https://x#eve")]
    {
        s.create_binding(&bind(id, name)).await.unwrap();
    }
    s.create_api_key(&key("cccc000000000001", "local-operator", 700)).await.unwrap();
    s.create_api_key(&key("cccc000000000002", "https://x#eve", 700)).await.unwrap();
    let before = s.count_legacy_subjects().await.unwrap();
    assert!(before >= 3, "dave, alice's and bob's keys at least: {before}");
    assert_eq!(s.qualify_legacy_subjects("https://idp.example").await.unwrap(), before);
    assert_eq!(s.count_legacy_subjects().await.unwrap(), 0);
    assert_eq!(s.qualify_legacy_subjects("https://other.example").await.unwrap(), 0, "runs once");
    assert_eq!(s.get_api_key("aaaa000000000002").await.unwrap().owner, "https://idp.example#bob");
    assert_eq!(s.get_api_key("cccc000000000001").await.unwrap().owner, "local-operator");
    assert_eq!(s.get_api_key("cccc000000000002").await.unwrap().owner, "https://x#eve");
    let names: std::collections::BTreeMap<String, BindingSubject> =
        s.list_bindings().await.unwrap().into_iter().map(|b| (b.id, b.binding.subject)).collect();
    assert_eq!(names["lb1"], BindingSubject::User("https://idp.example#dave".into()));
    assert_eq!(names["lb2"], BindingSubject::User("dave@example.com".into()));
    assert_eq!(names["lb3"], BindingSubject::User("aaaa000000000002".into()));
    assert_eq!(names["lb4"], BindingSubject::User("https://x#eve".into()));
}

/// Agent CAs, join tokens (single use, unexpired, their own cluster), issued certificates and revocation, and
/// connection state (never written back for a removed cluster).
async fn agents(s: &dyn Store) {
    use kubehero_store::{AgentCa, AgentCert, Change, ClusterStatus, ConnectionState, JoinToken};
    let ca = |id: &str, active: Option<i64>| AgentCa {
        id: id.into(),
        cert_pem: format!("cert {id}"),
        sealed_key: "k1:sealed".into(),
        created_at: 10,
        activated_at: active,
        retired_at: None,
    };
    s.insert_agent_ca(&ca("builtin-1", Some(10))).await.unwrap();
    assert!(matches!(s.insert_agent_ca(&ca("builtin-1", Some(10))).await, Err(StoreError::AlreadyExists(_))));
    s.apply(Change::AddAgentCa(&ca("builtin-2", None)), None).await.unwrap();
    s.apply(Change::ActivateAgentCa { id: "builtin-2", at: 20 }, None).await.unwrap();
    let again = s.apply(Change::ActivateAgentCa { id: "builtin-2", at: 21 }, None).await;
    assert!(matches!(again, Err(StoreError::NotFound(_))), "only a staged CA is activated");
    s.apply(Change::RetireAgentCa { id: "builtin-1", at: 30 }, None).await.unwrap();
    let cas = s.agent_cas().await.unwrap();
    assert_eq!((cas[0].retired_at, cas[1].activated_at), (Some(30), Some(20)));

    s.create_cluster(&cluster("edge")).await.unwrap();
    let token = |hash: &str, cluster: &str, expires_at: i64| JoinToken {
        hash: hash.into(),
        cluster: cluster.into(),
        created_by: "alice".into(),
        created_at: 100,
        expires_at,
        used_at: None,
    };
    let orphan = s.apply(Change::IssueJoinToken(&token("h0", "nowhere", 200)), None).await;
    assert!(matches!(orphan, Err(StoreError::NotFound(_))), "a token needs a registered cluster");
    s.apply(Change::IssueJoinToken(&token("h1", "edge", 200)), None).await.unwrap();
    s.apply(Change::IssueJoinToken(&token("h2", "edge", 150)), None).await.unwrap();
    let cert = |serial: &str, cluster: &str| AgentCert {
        serial: serial.into(),
        cluster: cluster.into(),
        issued_at: 160,
        not_after: 1_000,
        revoked_at: None,
    };
    let redeem = |hash: &'static str, c: &'static AgentCert| Change::RedeemJoinToken { hash, cert: c, now: 160 };
    static OTHER: std::sync::LazyLock<AgentCert> = std::sync::LazyLock::new(|| AgentCert {
        serial: "aa".into(),
        cluster: "prod".into(),
        issued_at: 160,
        not_after: 1_000,
        revoked_at: None,
    });
    static FIRST: std::sync::LazyLock<AgentCert> = std::sync::LazyLock::new(|| AgentCert {
        serial: "01".into(),
        cluster: "edge".into(),
        issued_at: 160,
        not_after: 1_000,
        revoked_at: None,
    });
    let conflict = |r: Result<_, StoreError>, says: &str| match r {
        Err(StoreError::Conflict(m)) => assert!(m.contains(says), "{m}"),
        other => panic!("expected a conflict saying {says:?}: {other:?}"),
    };
    conflict(s.apply(redeem("h1", &OTHER), None).await.map(drop), "not for cluster");
    conflict(s.apply(redeem("h2", &FIRST), None).await.map(drop), "expired");
    assert!(matches!(s.apply(redeem("nope", &FIRST), None).await, Err(StoreError::NotFound(_))));
    s.apply(redeem("h1", &FIRST), None).await.unwrap();
    conflict(s.apply(redeem("h1", &FIRST), None).await.map(drop), "already used");
    assert_eq!(s.find_join_token("h1").await.unwrap().unwrap().used_at, Some(160));
    s.apply(Change::IssueAgentCert(&cert("02", "edge")), None).await.unwrap();
    s.apply(Change::IssueAgentCert(&cert("03", "edge")), None).await.unwrap();
    let renew_orphan = s.apply(Change::IssueAgentCert(&cert("04", "nowhere")), None).await;
    assert!(matches!(renew_orphan, Err(StoreError::NotFound(_))));
    assert_eq!(s.agent_certs(Some("edge")).await.unwrap().len(), 3);
    let one = Change::RevokeAgentCerts { cluster: "edge", serial: Some("02"), at: 170 };
    assert_eq!(kubehero_store::changed_count(s.apply(one, None).await.unwrap().0).unwrap(), 1);
    assert_eq!(s.revoked_agent_serials(500).await.unwrap(), vec!["02".to_string()]);
    assert!(s.revoked_agent_serials(2_000).await.unwrap().is_empty(), "expired ones are not listed");
    let all = Change::RevokeAgentCerts { cluster: "edge", serial: None, at: 171 };
    assert_eq!(kubehero_store::changed_count(s.apply(all, None).await.unwrap().0).unwrap(), 2);

    let status = ClusterStatus {
        cluster: "edge".into(),
        state: ConnectionState::Connected,
        since: 180,
        last_seen: Some(180),
        agent_version: Some("0.1.0".into()),
        kubernetes_version: Some("v1.20.2".into()),
        cert_not_after: Some(1_000),
        replica: Some("https://10.0.0.1:8444".into()),
    };
    assert!(s.put_cluster_status(&status).await.unwrap());
    s.touch_clusters(&["edge".to_string()], status.replica.as_deref(), 190).await.unwrap();
    let edge = async || s.cluster_statuses().await.unwrap().into_iter().find(|st| st.cluster == "edge");
    assert_eq!(edge().await.unwrap().last_seen, Some(190));
    // The agent moves to another replica; the first one's late disconnect and touch leave the new row alone.
    let moved = ClusterStatus {
        since: 191,
        last_seen: Some(191),
        replica: Some("https://10.0.0.2:8444".into()),
        ..status.clone()
    };
    assert!(s.put_cluster_status(&moved).await.unwrap());
    let late = ClusterStatus { state: ConnectionState::Disconnected, since: 192, ..status.clone() };
    assert!(!s.put_cluster_status(&late).await.unwrap(), "another replica's disconnect");
    s.touch_clusters(&["edge".to_string()], status.replica.as_deref(), 193).await.unwrap();
    assert_eq!(edge().await.unwrap(), moved);
    assert_eq!(s.cluster_status("edge").await.unwrap(), Some(moved.clone()));
    assert_eq!(s.cluster_status("nowhere").await.unwrap(), None);
    // The holder is killed and starts again: what its last run held is disconnected.
    assert_eq!(s.disconnect_replica("https://10.0.0.1:8444", 194).await.unwrap(), 0);
    assert_eq!(s.disconnect_replica("https://10.0.0.2:8444", 194).await.unwrap(), 1);
    assert_eq!((edge().await.unwrap().state, edge().await.unwrap().since), (ConnectionState::Disconnected, 194));
    s.delete_cluster("edge", 200).await.unwrap();
    let removed = edge().await.unwrap();
    assert_eq!((removed.state, removed.since), (ConnectionState::Removed, 200));
    assert!(!s.put_cluster_status(&status).await.unwrap(), "a late write does not bring a removed cluster back");
    assert!(s.find_join_token("h2").await.unwrap().is_none(), "tokens go with the cluster");
    s.create_cluster(&cluster("edge")).await.unwrap();
    assert!(edge().await.is_none(), "registered again: pending");
    s.delete_cluster("edge", 210).await.unwrap();
}

async fn clusters(s: &dyn Store) {
    assert!(s.list_clusters().await.unwrap().is_empty());
    s.create_cluster(&cluster("prod-eu")).await.unwrap();
    s.create_cluster(&cluster("dev")).await.unwrap();
    assert!(matches!(s.create_cluster(&cluster("dev")).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(s.get_cluster("prod-eu").await.unwrap(), cluster("prod-eu"));
    let names: Vec<String> = s.list_clusters().await.unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"dev".to_string()) && names.contains(&"prod-eu".to_string()));
    s.delete_cluster("dev", 2).await.unwrap();
    assert!(matches!(s.get_cluster("dev").await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.delete_cluster("dev", 2).await, Err(StoreError::NotFound(_))));
}

async fn policies(s: &dyn Store) {
    use PolicyState::*;
    let p = policy("p1", "prod-eu", "no-exec", 10);
    s.create_policy(&p).await.unwrap();
    s.create_policy(&policy("p2", "other", "no-exec", 11)).await.unwrap();
    assert!(matches!(s.create_policy(&p).await, Err(StoreError::AlreadyExists(_))), "same id");
    assert!(
        matches!(s.create_policy(&policy("p3", "prod-eu", "no-exec", 12)).await, Err(StoreError::AlreadyExists(_))),
        "same (cluster, name)"
    );
    assert_eq!(s.get_policy("p1").await.unwrap(), p);
    let ids = |v: Vec<Policy>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_policies(None).await.unwrap()), ["p1", "p2"]);
    assert_eq!(ids(s.list_policies(Some("other")).await.unwrap()), ["p2"]);
    assert!(matches!(s.get_policy("nope").await, Err(StoreError::NotFound(_))));

    // Optimistic concurrency on drafts.
    let spec = json!({"rules": []});
    let p = s.update_policy("p1", 1, "no-exec-2", &spec, "bob", 20).await.unwrap();
    assert_eq!((p.version, p.name.as_str(), &p.spec, p.updated_at), (2, "no-exec-2", &spec, 20));
    assert!(matches!(s.update_policy("p1", 1, "x", &spec, "bob", 21).await, Err(StoreError::Conflict(_))));
    assert!(matches!(s.update_policy("nope", 1, "x", &spec, "bob", 21).await, Err(StoreError::NotFound(_))));

    // State machine: only from the stated state.
    let p = s.transition_policy("p1", Draft, Armed, "arm", "admin", 30).await.unwrap();
    assert_eq!((p.state, p.version), (Armed, 3));
    assert!(matches!(s.transition_policy("p1", Draft, Armed, "arm", "admin", 31).await, Err(StoreError::Conflict(_))));
    assert!(
        matches!(s.update_policy("p1", 3, "x", &spec, "bob", 32).await, Err(StoreError::Conflict(_))),
        "armed policies are not editable"
    );
    let p = s.transition_policy("p1", Armed, Disarmed, "disarm", "admin", 40).await.unwrap();
    assert_eq!((p.state, p.version), (Disarmed, 4));
    let p = s.transition_policy("p1", Disarmed, Armed, "undo", "admin", 50).await.unwrap();
    assert_eq!((p.state, p.version), (Armed, 5));
    assert!(matches!(s.transition_policy("nope", Draft, Armed, "arm", "a", 1).await, Err(StoreError::NotFound(_))));

    let h = s.policy_history("p1").await.unwrap();
    let summary: Vec<_> = h.iter().map(|t| (t.seq, t.action.as_str(), t.from_state, t.to_state, t.version)).collect();
    assert_eq!(
        summary,
        [
            (1, "create", None, Draft, 1),
            (2, "update", Some(Draft), Draft, 2),
            (3, "arm", Some(Draft), Armed, 3),
            (4, "disarm", Some(Armed), Disarmed, 4),
            (5, "undo", Some(Disarmed), Armed, 5),
        ]
    );
    assert_eq!((h[0].actor.as_str(), h[0].at), ("bob", 10));
    assert_eq!(h[4].spec, spec);
    assert!(matches!(s.policy_history("nope").await, Err(StoreError::NotFound(_))));
}

async fn concurrent_transitions(store: Arc<dyn Store>) {
    // Sixteen writers race to arm the same draft: exactly one wins, the rest get Conflict, history has no
    // gaps or duplicates.
    store.create_policy(&policy("race", "prod-eu", "race", 1)).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                s.transition_policy("race", PolicyState::Draft, PolicyState::Armed, "arm", &format!("a{i}"), 2).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 1);
    let seqs: Vec<i64> = store.policy_history("race").await.unwrap().iter().map(|t| t.seq).collect();
    assert_eq!(seqs, [1, 2]);
}

async fn bindings(s: &dyn Store) {
    let b = |id: &str, subject: BindingSubject, role, scope| StoredBinding {
        id: id.to_string(),
        binding: Binding { subject, role, scope },
        created_by: "erin".to_string(),
        created_at: 5,
        expires_at: None,
    };
    let ns = Scope::Namespace { cluster: "prod-*".to_string(), namespace: "payments".to_string() };
    let b1 = b("b1", BindingSubject::Group("oncall".into()), Role::Admin, Scope::Cluster { cluster: "prod-*".into() });
    let b2 = b("b2", BindingSubject::User("carol@example.com".into()), Role::Member, ns.clone());
    let mut b3 = b("b3", BindingSubject::Group("oncall".into()), Role::Viewer, Scope::Global);
    b3.expires_at = Some(900);
    for x in [&b1, &b2, &b3] {
        s.create_binding(x).await.unwrap();
    }
    let dup = b("b4", BindingSubject::User("carol@example.com".into()), Role::Member, ns);
    assert!(matches!(s.create_binding(&dup).await, Err(StoreError::AlreadyExists(_))));
    let mut all = s.list_bindings().await.unwrap();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all, [b1, b2, b3.clone()]);
    s.delete_binding("b1").await.unwrap();
    assert!(matches!(s.delete_binding("b1").await, Err(StoreError::NotFound(_))));
    assert_eq!(s.list_bindings().await.unwrap().len(), 2);
}

/// An approval and its binding commit together; a request is decided once.
async fn access_requests(s: &dyn Store) {
    let req = |id: &str| kubehero_store::AccessRequest {
        id: id.into(),
        requester: "https://idp#dana".into(),
        requester_email: Some("dana@example.com".into()),
        cluster: "prod-eu".into(),
        namespace: Some("payments".into()),
        role: "admin".into(),
        duration_secs: 3600,
        reason: "INC-1234".into(),
        state: "pending".into(),
        created_at: 10,
        decided_by: None,
        decided_at: None,
        comment: None,
        binding_id: None,
        expires_at: None,
        first_approver: None,
    };
    for id in ["ar1", "ar2"] {
        s.apply(kubehero_store::Change::CreateAccessRequest(&req(id)), None).await.unwrap();
    }
    assert_eq!(s.get_access_request("ar1").await.unwrap(), req("ar1"));
    let binding = StoredBinding {
        id: "rb_elev".into(),
        binding: Binding {
            subject: BindingSubject::User("https://idp#dana".into()),
            role: Role::Admin,
            scope: Scope::Namespace { cluster: "prod-eu".into(), namespace: "payments".into() },
        },
        created_by: "https://idp#erin".into(),
        created_at: 20,
        expires_at: Some(3620),
    };
    let approve = |id, binding| kubehero_store::Change::DecideAccessRequest {
        id,
        approve: true,
        by: "https://idp#erin",
        at: 20,
        comment: Some("ok"),
        binding,
    };
    s.apply(approve("ar1", Some(&binding)), None).await.unwrap();
    let got = s.get_access_request("ar1").await.unwrap();
    assert_eq!(
        (got.state.as_str(), got.binding_id.as_deref(), got.expires_at),
        ("approved", Some("rb_elev"), Some(3620))
    );
    assert!(s.list_bindings().await.unwrap().iter().any(|b| b.id == "rb_elev" && b.expires_at == Some(3620)));
    // Decided once: a second approval (another binding) changes nothing.
    let again = StoredBinding { id: "rb_elev2".into(), ..binding.clone() };
    assert!(matches!(s.apply(approve("ar1", Some(&again)), None).await, Err(StoreError::Conflict(_))));
    assert!(!s.list_bindings().await.unwrap().iter().any(|b| b.id == "rb_elev2"));
    let deny = kubehero_store::Change::DecideAccessRequest {
        id: "ar2",
        approve: false,
        by: "x",
        at: 30,
        comment: None,
        binding: None,
    };
    s.apply(deny, None).await.unwrap();
    assert_eq!(s.get_access_request("ar2").await.unwrap().state, "denied");
    assert!(matches!(s.get_access_request("nope").await, Err(StoreError::NotFound(_))));
    // Two approvals: the first is recorded once and grants nothing; the decision then grants.
    s.apply(kubehero_store::Change::CreateAccessRequest(&req("ar3")), None).await.unwrap();
    let first = |by| kubehero_store::Change::FirstApproval { id: "ar3", by };
    s.apply(first("https://idp#erin"), None).await.unwrap();
    assert_eq!(s.get_access_request("ar3").await.unwrap().first_approver.as_deref(), Some("https://idp#erin"));
    let again = s.apply(first("https://idp#gina"), None).await;
    assert!(matches!(again, Err(StoreError::Conflict(m)) if m.contains("first approval")));
    assert_eq!(s.get_access_request("ar3").await.unwrap().state, "pending");
    assert!(matches!(s.apply(kubehero_store::Change::FirstApproval { id: "ar2", by: "x" }, None).await,
        Err(StoreError::Conflict(m)) if m.contains("denied")));
    let listed = s.list_access_requests().await.unwrap();
    assert_eq!(listed.len(), 3);
    s.delete_binding("rb_elev").await.unwrap();
}

fn dana_binding(id: &str, expires_at: Option<i64>) -> StoredBinding {
    StoredBinding {
        id: id.into(),
        binding: Binding {
            subject: BindingSubject::User(format!("https://idp#{id}")),
            role: Role::Viewer,
            scope: Scope::Cluster { cluster: "prod-eu".into() },
        },
        created_by: "https://idp#erin".into(),
        created_at: 20,
        expires_at,
    }
}

/// A lease is held by one holder until it expires or is given up.
async fn leases(s: &dyn Store) {
    assert!(s.acquire_lease("singleton", "a", 1_000, 16_000).await.unwrap());
    assert!(!s.acquire_lease("singleton", "b", 2_000, 17_000).await.unwrap(), "held by a");
    assert!(s.acquire_lease("singleton", "a", 5_000, 20_000).await.unwrap(), "a renews");
    assert!(!s.acquire_lease("singleton", "b", 19_999, 35_000).await.unwrap(), "not expired yet");
    assert!(s.acquire_lease("singleton", "b", 20_001, 35_000).await.unwrap(), "expired: b takes it");
    assert!(!s.acquire_lease("singleton", "a", 21_000, 36_000).await.unwrap());
    s.release_lease("singleton", "a").await.unwrap();
    assert!(!s.acquire_lease("singleton", "a", 21_000, 36_000).await.unwrap(), "only its holder gives it up");
    s.release_lease("singleton", "b").await.unwrap();
    assert!(s.acquire_lease("singleton", "a", 21_000, 36_000).await.unwrap(), "given up: free at once");
    assert!(s.acquire_lease("other", "b", 21_000, 36_000).await.unwrap(), "leases are independent");
}

/// A share is used at most `max_uses` times however many accept at once; revoking deletes its grants.
async fn shares(store: Arc<dyn Store>) {
    let share = kubehero_store::Share {
        id: "sh1".into(),
        token_hash: "a".repeat(64),
        cluster: "prod-eu".into(),
        namespace: None,
        role: "viewer".into(),
        created_by: "https://idp#erin".into(),
        created_by_email: Some("erin@example.com".into()),
        created_at: 10,
        expires_at: 1000,
        max_uses: Some(2),
        uses: 0,
        recipients: vec!["dana@example.com".into(), "group:contractors".into()],
        revoked_at: None,
        revoked_by: None,
        expired_at: None,
    };
    store.apply(kubehero_store::Change::CreateShare(&share), None).await.unwrap();
    assert_eq!(store.find_share_by_hash(&"a".repeat(64)).await.unwrap(), Some(share.clone()));
    assert_eq!(store.find_share_by_hash(&"b".repeat(64)).await.unwrap(), None);
    // Eight people accept at once: two win, the rest are told it is used up; no binding is made for them.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                let b = dana_binding(&format!("rb_sh{i}"), Some(1000));
                s.apply(kubehero_store::Change::AcceptShare { share_id: "sh1", binding: &b, at: 20 }, None).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(m)) => assert!(m.contains("used_up"), "{m}"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 2);
    assert_eq!(store.get_share("sh1").await.unwrap().uses, 2);
    let grants = store.list_share_grants().await.unwrap();
    assert_eq!(grants.len(), 2);
    let held = |s: Vec<StoredBinding>| s.iter().filter(|b| b.id.starts_with("rb_sh")).count();
    assert_eq!(held(store.list_bindings().await.unwrap()), 2);
    // Revoking ends the share and deletes both grants in one change; a second revocation is a conflict.
    let revoke = kubehero_store::Change::RevokeShare { id: "sh1", by: "https://idp#erin", at: 30 };
    let (changed, _) = store.apply(revoke, None).await.unwrap();
    assert_eq!(kubehero_store::changed_count(changed).unwrap(), 2);
    assert_eq!(held(store.list_bindings().await.unwrap()), 0);
    assert!(matches!(store.apply(revoke, None).await, Err(StoreError::Conflict(m)) if m.contains("revoked")));
    let b = dana_binding("rb_late", Some(1000));
    let late = kubehero_store::Change::AcceptShare { share_id: "sh1", binding: &b, at: 40 };
    assert!(matches!(store.apply(late, None).await, Err(StoreError::Conflict(m)) if m.contains("revoked")));
    let unknown = kubehero_store::Change::AcceptShare { share_id: "nope", binding: &b, at: 40 };
    assert!(matches!(store.apply(unknown, None).await, Err(StoreError::NotFound(_))));
    // An expired share refuses, and its end is recorded once.
    let old = kubehero_store::Share { id: "sh2".into(), token_hash: "c".repeat(64), expires_at: 15, ..share };
    store.apply(kubehero_store::Change::CreateShare(&old), None).await.unwrap();
    let late = kubehero_store::Change::AcceptShare { share_id: "sh2", binding: &b, at: 40 };
    assert!(matches!(store.apply(late, None).await, Err(StoreError::Conflict(m)) if m.contains("expired")));
    let expire = kubehero_store::Change::ExpireShare { id: "sh2", at: 40 };
    store.apply(expire, None).await.unwrap();
    assert!(matches!(store.apply(expire, None).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get_share("sh2").await.unwrap().expired_at, Some(40));
    assert_eq!(store.list_shares().await.unwrap().len(), 2);
}

/// A code is used once however many use it at once, and its binding and CLI token commit with the use.
async fn breakglass(store: Arc<dyn Store>) {
    let code = |id: &str| {
        let hash = format!("{id}{}", "f".repeat(64 - id.len()));
        kubehero_store::BreakglassCode::sealed(id.into(), hash, "prod-eu", 3600, "https://idp#erin".into(), 10)
    };
    let codes = [code("bg1"), code("bg2")];
    store.apply(kubehero_store::Change::CreateBreakglassCodes(&codes), None).await.unwrap();
    let found = store.find_breakglass_by_hash(&codes[0].code_hash).await.unwrap();
    assert_eq!(found, Some(codes[0].clone()));
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                let b = dana_binding(&format!("rb_bg{i}"), Some(3620));
                let t = session(&format!("bgs{i}"), SessionKind::CliToken, &format!("breakglass:bg1:{i}"), 20);
                let use_it = kubehero_store::Change::UseBreakglass {
                    id: "bg1",
                    at: 20,
                    reason: "INC-9",
                    from: Some("10.0.0.1"),
                    binding: &b,
                    session: &t,
                };
                s.apply(use_it, None).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(m)) => assert!(m.contains("already used"), "{m}"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 1);
    let used = store.list_breakglass().await.unwrap().into_iter().find(|c| c.id == "bg1").unwrap();
    assert_eq!((used.used_at, used.reason.as_deref(), used.expires_at), (Some(20), Some("INC-9"), Some(3620)));
    let binding = used.binding_id.clone().unwrap();
    assert!(store.list_bindings().await.unwrap().iter().any(|b| b.id == binding));
    let token = session(used.session_id.as_deref().unwrap(), SessionKind::CliToken, "x", 0);
    assert!(store.find_session_by_hash(&token.hash).await.unwrap().is_some(), "the CLI token of the use");
    // Acknowledged once; an unused code cannot be acknowledged; revoked only while unused.
    let ack = |id| kubehero_store::Change::AcknowledgeBreakglass { id, by: "https://idp#erin", at: 30 };
    store.apply(ack("bg1"), None).await.unwrap();
    assert!(matches!(store.apply(ack("bg1"), None).await, Err(StoreError::Conflict(m)) if m.contains("acknowledged")));
    assert!(matches!(store.apply(ack("bg2"), None).await, Err(StoreError::Conflict(m)) if m.contains("not used")));
    let revoke = |id| kubehero_store::Change::RevokeBreakglass { id, at: 40 };
    assert!(matches!(store.apply(revoke("bg1"), None).await, Err(StoreError::Conflict(_))));
    store.apply(revoke("bg2"), None).await.unwrap();
    let b = dana_binding("rb_bg_late", Some(3620));
    let t = session("bgslate", SessionKind::CliToken, "breakglass:bg2", 20);
    let late =
        kubehero_store::Change::UseBreakglass { id: "bg2", at: 50, reason: "x", from: None, binding: &b, session: &t };
    assert!(matches!(store.apply(late, None).await, Err(StoreError::Conflict(m)) if m.contains("revoked")));
    assert!(matches!(store.apply(revoke("nope"), None).await, Err(StoreError::NotFound(_))));
    store.delete_binding(&binding).await.unwrap();
}

async fn api_keys(s: &dyn Store) {
    let k1 = key("aaaa000000000001", "alice", 100);
    let k2 = key("aaaa000000000002", "bob", 200);
    let k3 = key("aaaa000000000003", "alice", 300);
    for k in [&k1, &k2, &k3] {
        s.create_api_key(k).await.unwrap();
    }
    assert!(matches!(s.create_api_key(&k1).await, Err(StoreError::AlreadyExists(_))));
    let mut same_hash = key("bbbb000000000001", "alice", 1);
    same_hash.hash = k1.hash.clone();
    assert!(matches!(s.create_api_key(&same_hash).await, Err(StoreError::AlreadyExists(_))));

    assert_eq!(s.find_api_key_by_hash(&k2.hash).await.unwrap(), Some(k2.clone()));
    assert_eq!(s.find_api_key_by_hash(&"f".repeat(64)).await.unwrap(), None);
    let ids = |v: Vec<ApiKeyRecord>| v.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_api_keys(None).await.unwrap()), [k3.id.clone(), k2.id.clone(), k1.id.clone()]);
    assert_eq!(ids(s.list_api_keys(Some("alice")).await.unwrap()), [k3.id.clone(), k1.id.clone()]);

    let revoked = s.revoke_api_key(&k1.id, 500).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(500));
    let again = s.revoke_api_key(&k1.id, 600).await.unwrap();
    assert_eq!(again.revoked_at, Some(500), "the first revocation time is kept");
    assert_eq!(s.find_api_key_by_hash(&k1.hash).await.unwrap().unwrap().revoked_at, Some(500));
    assert!(matches!(s.revoke_api_key("nope", 1).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.get_api_key("nope").await, Err(StoreError::NotFound(_))));
    assert_eq!(s.get_api_key(&k2.id).await.unwrap(), k2);
}

async fn settings(s: &dyn Store) {
    assert_eq!(s.get_setting("idp").await.unwrap(), None);
    s.put_setting("idp", &json!({"issuer": "https://a"}), 1).await.unwrap();
    s.put_setting("idp", &json!({"issuer": "https://b"}), 2).await.unwrap();
    s.put_setting("integrations", &json!({"slack": {"channel": "#ops"}}), 3).await.unwrap();
    assert_eq!(s.get_setting("idp").await.unwrap(), Some(json!({"issuer": "https://b"})));
    let keys: Vec<String> = s.list_settings().await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["idp", "integrations"]);
}

async fn sessions(s: &dyn Store) {
    assert!(s.list_sessions(None).await.unwrap().is_empty());
    let s1 = session("cccc000000000001", SessionKind::Session, "alice", 100);
    let s2 = session("cccc000000000002", SessionKind::CliToken, "bob", 200);
    // Every optional field empty, no groups.
    let s3 = SessionRecord {
        email: None,
        groups: Vec::new(),
        issuer: None,
        csrf: None,
        revoked_at: Some(350),
        user_agent: None,
        ..session("cccc000000000003", SessionKind::CliToken, "alice", 300)
    };
    // Same creation time as s1: ties are ordered by id.
    let s4 = session("cccc000000000000", SessionKind::Session, "alice", 100);
    for x in [&s1, &s2, &s3, &s4] {
        s.create_session(x).await.unwrap();
    }

    // Round trips of every field.
    for x in [&s1, &s2, &s3, &s4] {
        assert_eq!(s.find_session_by_hash(&x.hash).await.unwrap().as_ref(), Some(x));
    }
    assert_eq!(s.find_session_by_hash(&"f".repeat(64)).await.unwrap(), None);

    // Uniqueness of id and hash.
    assert!(matches!(s.create_session(&s1).await, Err(StoreError::AlreadyExists(_))), "same id");
    let mut same_hash = session("dddd000000000001", SessionKind::Session, "carol", 1);
    same_hash.hash = s2.hash.clone();
    let err = s.create_session(&same_hash).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "same hash: {err:?}");
    assert!(!err.to_string().contains(&s2.hash), "errors never name the hash: {err}");

    // Newest first, ties by id; filtered by person.
    let ids = |v: Vec<SessionRecord>| v.into_iter().map(|x| x.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_sessions(None).await.unwrap()),
        [s3.id.as_str(), s2.id.as_str(), s4.id.as_str(), s1.id.as_str()]
    );
    assert_eq!(ids(s.list_sessions(Some("alice")).await.unwrap()), [s3.id.as_str(), s4.id.as_str(), s1.id.as_str()]);
    assert_eq!(ids(s.list_sessions(Some("bob")).await.unwrap()), [s2.id.as_str()]);
    assert!(s.list_sessions(Some("nobody")).await.unwrap().is_empty());
    assert_eq!(s.list_sessions(Some("bob")).await.unwrap(), std::slice::from_ref(&s2));
    // A person's sessions by subject or sign-in email (any case), in one query.
    assert_eq!(ids(s.sessions_of(&["bob"], &[]).await.unwrap()), [s2.id.as_str()]);
    let by_email = ids(s.sessions_of(&[], &["ALICE@example.com"]).await.unwrap());
    assert_eq!(by_email, [s4.id.as_str(), s1.id.as_str()], "s3 has no email");
    let both = ids(s.sessions_of(&["bob"], &["alice@example.com"]).await.unwrap());
    assert_eq!(both, [s2.id.as_str(), s4.id.as_str(), s1.id.as_str()]);
    assert!(s.sessions_of(&[], &[]).await.unwrap().is_empty());

    // Sliding: only last_seen_at and expires_at move.
    s.touch_session(&s1.id, 150, 150 + 8 * 3600).await.unwrap();
    let touched = s.find_session_by_hash(&s1.hash).await.unwrap().unwrap();
    assert_eq!(touched, SessionRecord { last_seen_at: 150, expires_at: 150 + 8 * 3600, ..s1.clone() });
    assert!(matches!(s.touch_session("nope", 1, 2).await, Err(StoreError::NotFound(_))));

    // Revocation keeps the first time.
    let revoked = s.revoke_session(&s1.id, 500).await.unwrap();
    assert_eq!(revoked, SessionRecord { revoked_at: Some(500), ..touched.clone() });
    let again = s.revoke_session(&s1.id, 600).await.unwrap();
    assert_eq!(again.revoked_at, Some(500), "the first revocation time is kept");
    assert_eq!(s.find_session_by_hash(&s1.hash).await.unwrap().unwrap().revoked_at, Some(500));
    assert_eq!(s.revoke_session(&s3.id, 900).await.unwrap().revoked_at, Some(350));
    assert!(matches!(s.revoke_session("nope", 1).await, Err(StoreError::NotFound(_))));
    assert_eq!(s.find_session_by_hash(&s2.hash).await.unwrap().unwrap(), s2, "others untouched");
}

async fn devices(s: &dyn Store) {
    // Expired authorizations are counted out and swept; live ones stay.
    s.create_device(&device(90, 100, 50)).await.unwrap();
    s.create_device(&device(91, 100, 500)).await.unwrap();
    assert_eq!(s.count_live_devices(200).await.unwrap(), 1);
    assert_eq!(s.purge_expired_devices(200).await.unwrap(), 1);
    assert_eq!(s.purge_expired_devices(200).await.unwrap(), 0);
    assert_eq!(s.purge_expired_devices(600).await.unwrap(), 1);
    assert_eq!(s.count_live_devices(0).await.unwrap(), 0);

    let d1 = device(1, 1000, 600);
    s.create_device(&d1).await.unwrap();
    assert_eq!(s.find_device_by_user_code(&d1.user_code).await.unwrap(), Some(d1.clone()), "round trip");
    assert_eq!(s.find_device_by_user_code("ZZZZ-0000").await.unwrap(), None);

    // Uniqueness of the device hash and the user code; errors never name the hash.
    let err = s.create_device(&d1).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "same device: {err:?}");
    assert!(!err.to_string().contains(&d1.device_hash), "errors never name the hash: {err}");
    let same_code = DeviceAuthorization { user_code: d1.user_code.clone(), ..device(2, 1000, 600) };
    assert!(matches!(s.create_device(&same_code).await, Err(StoreError::AlreadyExists(_))), "same user code");
    let same_hash = DeviceAuthorization { device_hash: d1.device_hash.clone(), ..device(3, 1000, 600) };
    assert!(matches!(s.create_device(&same_hash).await, Err(StoreError::AlreadyExists(_))), "same hash");

    // Polling returns the row as it was before the poll, then records the poll.
    assert_eq!(s.poll_device(&d1.device_hash, 1005).await.unwrap(), Some(d1.clone()), "first poll");
    let polled = s.poll_device(&d1.device_hash, 1010).await.unwrap().unwrap();
    assert_eq!(polled, DeviceAuthorization { last_poll_at: Some(1005), ..d1.clone() }, "previous poll time");
    assert_eq!(s.poll_device(&d1.device_hash, 1020).await.unwrap().unwrap().last_poll_at, Some(1010));
    assert_eq!(s.poll_device(&"f".repeat(64), 1020).await.unwrap(), None);
    assert_eq!(s.find_device_by_user_code(&d1.user_code).await.unwrap().unwrap().last_poll_at, Some(1020));

    // Not approved yet: nothing to consume.
    assert!(!s.consume_device(&d1.device_hash).await.unwrap());

    // Approving records who.
    let who = session("eeee000000000001", SessionKind::Session, "alice", 900);
    let approved = s.decide_device(&d1.user_code, true, Some(&who), 1030).await.unwrap();
    let expected = DeviceAuthorization {
        status: DeviceStatus::Approved,
        sub: Some("alice".to_string()),
        email: who.email.clone(),
        groups: who.groups.clone(),
        issuer: who.issuer.clone(),
        last_poll_at: Some(1020),
        ..d1.clone()
    };
    assert_eq!(approved, expected);
    assert_eq!(s.find_device_by_user_code(&d1.user_code).await.unwrap(), Some(expected.clone()));

    // Deciding twice is a conflict, either way; the first decision stands.
    let err = s.decide_device(&d1.user_code, true, Some(&who), 1031).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "approve twice: {err:?}");
    let err = s.decide_device(&d1.user_code, false, None, 1031).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "deny after approve: {err:?}");
    assert_eq!(s.find_device_by_user_code(&d1.user_code).await.unwrap(), Some(expected.clone()));

    // Unknown user code.
    let err = s.decide_device("ZZZZ-0000", true, Some(&who), 1031).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "unknown: {err:?}");

    // Consumed once.
    assert!(s.consume_device(&d1.device_hash).await.unwrap());
    assert!(!s.consume_device(&d1.device_hash).await.unwrap(), "second consume");
    assert!(!s.consume_device(&"f".repeat(64)).await.unwrap(), "unknown device");
    let consumed = s.find_device_by_user_code(&d1.user_code).await.unwrap().unwrap();
    assert_eq!(consumed, DeviceAuthorization { status: DeviceStatus::Consumed, ..expected });
    let err = s.decide_device(&d1.user_code, true, Some(&who), 1032).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "decide after consume: {err:?}");

    // Denying sets only the status; a denied authorization cannot be consumed or decided again.
    let d2 = device(2, 1000, 600);
    s.create_device(&d2).await.unwrap();
    let denied = s.decide_device(&d2.user_code, false, Some(&who), 1040).await.unwrap();
    assert_eq!(denied, DeviceAuthorization { status: DeviceStatus::Denied, ..d2.clone() });
    assert!(!s.consume_device(&d2.device_hash).await.unwrap());
    let err = s.decide_device(&d2.user_code, true, Some(&who), 1041).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "approve after deny: {err:?}");
    assert_eq!(s.poll_device(&d2.device_hash, 1042).await.unwrap().unwrap().status, DeviceStatus::Denied);

    // Expiry: at `expires_at` it is expired; neither approve nor deny, and it stays pending.
    let d3 = device(3, 1000, 600);
    s.create_device(&d3).await.unwrap();
    let err = s.decide_device(&d3.user_code, true, Some(&who), 1600).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "expired: {err:?}");
    let err = s.decide_device(&d3.user_code, false, None, 1700).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "expired deny: {err:?}");
    assert_eq!(s.find_device_by_user_code(&d3.user_code).await.unwrap(), Some(d3.clone()));

    // Approving without a session records nobody; just before expiry still works.
    let d4 = device(4, 1000, 600);
    s.create_device(&d4).await.unwrap();
    let anon = s.decide_device(&d4.user_code, true, None, 1599).await.unwrap();
    assert_eq!(anon, DeviceAuthorization { status: DeviceStatus::Approved, ..d4 });
}

async fn concurrent_device_consume(store: Arc<dyn Store>) {
    // Eight pollers race to collect the same approved authorization: exactly one consumes it.
    let d = device(99, 10, 600);
    store.create_device(&d).await.unwrap();
    let who = session("eeee000000000099", SessionKind::Session, "bob", 10);
    store.decide_device(&d.user_code, true, Some(&who), 20).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            let hash = d.device_hash.clone();
            tokio::spawn(async move { s.consume_device(&hash).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    let after = store.find_device_by_user_code(&d.user_code).await.unwrap().unwrap();
    assert_eq!(after.status, DeviceStatus::Consumed);

    // Eight concurrent polls: each sees the previous one's time, so the poll times form one chain.
    let p = device(98, 10, 600);
    store.create_device(&p).await.unwrap();
    let tasks: Vec<_> = (0..8i64)
        .map(|i| {
            let s = store.clone();
            let hash = p.device_hash.clone();
            tokio::spawn(async move { (100 + i, s.poll_device(&hash, 100 + i).await.unwrap().unwrap().last_poll_at) })
        })
        .collect();
    let mut previous = Vec::new();
    for t in tasks {
        previous.push(t.await.unwrap().1);
    }
    previous.sort();
    assert_eq!(previous.iter().filter(|x| x.is_none()).count(), 1, "exactly one poll came first: {previous:?}");
    let mut seen: Vec<i64> = previous.into_iter().flatten().collect();
    seen.dedup();
    assert_eq!(seen.len(), 7, "no two polls saw the same previous poll");
}

fn duser(id: &str, user_name: &str, at: i64) -> DirectoryUser {
    DirectoryUser {
        id: id.to_string(),
        user_name: user_name.to_string(),
        external_id: Some(format!("ext-{id}")),
        active: true,
        subject: None,
        emails: vec![format!("{}@Example.com", user_name.to_lowercase())],
        resource: json!({"userName": user_name, "name": {"givenName": "Zoë \"Z\""}}),
        origin: UserOrigin::Scim,
        version: 1,
        created_at: at,
        updated_at: at,
        deleted_at: None,
    }
}

fn dgroup(id: &str, display_name: &str, at: i64) -> DirectoryGroup {
    DirectoryGroup {
        id: id.to_string(),
        display_name: display_name.to_string(),
        external_id: Some(format!("ext-{id}")),
        resource: json!({"displayName": display_name}),
        version: 1,
        created_at: at,
        updated_at: at,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The SCIM directory: users, tombstones, identity lookups, groups and memberships.
async fn directory(s: &dyn Store) {
    directory_users(s).await;
    directory_people(s).await;
    directory_groups(s).await;
    directory_bulk(s).await;
}

async fn user_ids(s: &dyn Store, select: UserSelect<'_>, offset: i64, limit: i64) -> (i64, Vec<String>) {
    let (total, users) = s.select_users(select, offset, limit).await.unwrap();
    (total, users.into_iter().map(|u| u.id).collect())
}

async fn directory_users(s: &dyn Store) {
    assert_eq!(s.select_users(UserSelect::All, 0, 100).await.unwrap(), (0, Vec::new()));
    let u1 = duser("u1", "Alice", 10);
    let u2 = duser("u2", "bob", 20);
    // Non-ASCII names compare case-insensitively too.
    let u3 = DirectoryUser { subject: Some("sub-carol".into()), origin: UserOrigin::Jit, ..duser("u3", "Çarol", 30) };
    // A user named like someone else's email, without emails of its own.
    let u4 = DirectoryUser { emails: Vec::new(), external_id: None, ..duser("u4", "bob@example.com", 40) };
    s.create_users(&[u1.clone(), u2.clone(), u3.clone()]).await.unwrap();
    s.create_users(std::slice::from_ref(&u4)).await.unwrap();
    assert_eq!(s.get_user("u1").await.unwrap(), u1, "round trip");
    assert_eq!(s.get_user("u3").await.unwrap(), u3);
    assert!(matches!(s.get_user("nope").await, Err(StoreError::NotFound(_))));

    // Uniqueness: id, and userName among live users case-insensitively; a failing batch writes nothing.
    for dup in [duser("u9", "ALICE", 1), duser("u9", "çAROL", 1), duser("u1", "someone-else", 1)] {
        let err = s.create_users(std::slice::from_ref(&dup)).await.unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists(_)), "{dup:?}: {err:?}");
    }
    let err = s.create_users(&[duser("u8", "dave", 1), duser("u9", "BOB", 1)]).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
    let err = s.create_users(&[duser("u8", "dave", 1), duser("u9", "Dave", 1)]).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "within one batch: {err:?}");
    assert!(matches!(s.get_user("u8").await, Err(StoreError::NotFound(_))), "the batch was rolled back");

    // Updates bump the version whatever the caller's copy says; stale versions conflict.
    let edit = DirectoryUser {
        user_name: "Alice.W".into(),
        active: false,
        emails: vec!["Alice.W@Example.com".into(), "aw@example.org".into()],
        resource: json!({"userName": "Alice.W"}),
        version: 77,
        updated_at: 50,
        created_at: 999,
        deleted_at: Some(1),
        ..u1.clone()
    };
    let stored = s.update_user(&edit, Some(1)).await.unwrap();
    assert_eq!(stored, DirectoryUser { version: 2, created_at: 10, deleted_at: None, ..edit.clone() });
    assert_eq!(s.get_user("u1").await.unwrap(), stored);
    let err = s.update_user(&edit, Some(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "stale: {err:?}");
    let stored = s.update_user(&DirectoryUser { updated_at: 60, ..edit.clone() }, None).await.unwrap();
    assert_eq!((stored.version, stored.updated_at), (3, 60));
    let err = s.update_user(&DirectoryUser { user_name: "BOB".into(), ..edit.clone() }, None).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "userName clash: {err:?}");
    let same = s.update_user(&DirectoryUser { user_name: "alice.w".into(), ..edit.clone() }, Some(3)).await.unwrap();
    assert_eq!((same.user_name.as_str(), same.version), ("alice.w", 4), "a case change of one's own name");
    let err = s.update_user(&duser("nope", "nope", 1), None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");

    // Selectors, ordered by created_at then id, with totals.
    assert_eq!(user_ids(s, UserSelect::All, 0, 100).await, (4, strings(&["u1", "u2", "u3", "u4"])));
    assert_eq!(user_ids(s, UserSelect::All, 1, 2).await, (4, strings(&["u2", "u3"])));
    assert_eq!(user_ids(s, UserSelect::All, 3, i64::MAX).await, (4, strings(&["u4"])));
    assert_eq!(user_ids(s, UserSelect::All, 10, 5).await, (4, Vec::new()));
    assert_eq!(user_ids(s, UserSelect::All, 0, 0).await, (4, Vec::new()));
    assert_eq!(user_ids(s, UserSelect::Id("u2"), 0, 10).await, (1, strings(&["u2"])));
    assert_eq!(user_ids(s, UserSelect::Id("nope"), 0, 10).await, (0, Vec::new()));
    assert_eq!(user_ids(s, UserSelect::UserName("ALICE.W"), 0, 10).await, (1, strings(&["u1"])));
    assert_eq!(user_ids(s, UserSelect::UserName("ÇAROL"), 0, 10).await, (1, strings(&["u3"])));
    assert_eq!(user_ids(s, UserSelect::UserName("Alice"), 0, 10).await, (0, Vec::new()), "renamed");
    assert_eq!(user_ids(s, UserSelect::ExternalId("ext-u2"), 0, 10).await, (1, strings(&["u2"])));
    assert_eq!(user_ids(s, UserSelect::ExternalId("EXT-U2"), 0, 10).await, (0, Vec::new()), "exact");
    assert_eq!(user_ids(s, UserSelect::Email("AW@EXAMPLE.ORG"), 0, 10).await, (1, strings(&["u1"])));
    assert_eq!(user_ids(s, UserSelect::Email("alice@example.com"), 0, 10).await, (0, Vec::new()), "old email");
    // u4's userName is bob's email, but u4 has no email: only bob is selected.
    assert_eq!(user_ids(s, UserSelect::Email("Bob@Example.COM"), 0, i64::MAX).await, (1, strings(&["u2"])));
    assert_eq!(user_ids(s, UserSelect::Email("bob@example.com"), 1, 10).await, (1, Vec::new()));
    let (_, page) = s.select_users(UserSelect::Id("u3"), 0, 1).await.unwrap();
    assert_eq!(page, std::slice::from_ref(&u3));

    // Deleting leaves a tombstone, invisible to reads and to userName uniqueness.
    let err = s.delete_user("u2", Some(5), 70).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "stale: {err:?}");
    assert_eq!(s.delete_user("u2", Some(1), 70).await.unwrap(), u2, "returns the user as it was");
    assert!(matches!(s.get_user("u2").await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.delete_user("u2", None, 71).await, Err(StoreError::NotFound(_))), "deleted twice");
    assert!(matches!(s.delete_user("nope", None, 71).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.update_user(&u2, None).await, Err(StoreError::NotFound(_))), "a tombstone is not updated");
    assert_eq!(user_ids(s, UserSelect::All, 0, 100).await, (3, strings(&["u1", "u3", "u4"])));
    assert_eq!(user_ids(s, UserSelect::Id("u2"), 0, 10).await, (0, Vec::new()));
    assert_eq!(user_ids(s, UserSelect::UserName("bob"), 0, 10).await, (0, Vec::new()));
    assert_eq!(user_ids(s, UserSelect::ExternalId("ext-u2"), 0, 10).await, (0, Vec::new()));
    assert_eq!(user_ids(s, UserSelect::Email("bob@example.com"), 0, 10).await, (0, Vec::new()));
    // The name is free again, but the id is never reused.
    let u5 = DirectoryUser { subject: Some("sub-bob-2".into()), ..duser("u5", "BOB", 80) };
    s.create_users(std::slice::from_ref(&u5)).await.unwrap();
    assert!(matches!(s.create_users(&[duser("u2", "bob-again", 81)]).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(user_ids(s, UserSelect::UserName("bob"), 0, 10).await, (1, strings(&["u5"])));
}

fn person(id: &str, name: &str, deleted: bool, groups: &[&str]) -> PersonMatch {
    PersonMatch { user_id: id.to_string(), user_name: name.to_string(), active: true, deleted, groups: strings(groups) }
}

async fn directory_people(s: &dyn Store) {
    // State from `directory_users`: u1 alice.w (inactive), u2 bob (tombstone), u3 Çarol (subject sub-carol),
    // u4 bob@example.com (no email), u5 BOB (subject sub-bob-2).
    let carol = person("u3", "Çarol", false, &[]);
    assert_eq!(s.find_people("sub-carol", None).await.unwrap(), std::slice::from_ref(&carol), "by subject");
    assert!(s.find_people("SUB-CAROL", None).await.unwrap().is_empty(), "subjects are exact");
    assert_eq!(s.find_people("ext-u3", None).await.unwrap(), std::slice::from_ref(&carol), "by externalId");
    assert_eq!(s.find_people("çarol", None).await.unwrap(), std::slice::from_ref(&carol), "by userName, any case");
    assert_eq!(s.find_people("x", Some("ÇAROL@EXAMPLE.COM")).await.unwrap(), std::slice::from_ref(&carol), "by email");
    assert_eq!(
        s.find_people("çarol@example.com", None).await.unwrap(),
        std::slice::from_ref(&carol),
        "subject as email"
    );
    let alice = PersonMatch { active: false, ..person("u1", "alice.w", false, &[]) };
    assert_eq!(s.find_people("nobody", Some("AW@example.org")).await.unwrap(), std::slice::from_ref(&alice));
    assert!(s.find_people("nobody", Some("alice@example.com")).await.unwrap().is_empty(), "the old email");
    assert!(s.find_people("", Some("")).await.unwrap().is_empty());
    assert!(s.find_people("", None).await.unwrap().is_empty());
    // The tombstone keeps its keys; several people can match, ordered by creation.
    let bob = person("u2", "bob", true, &[]);
    let bob_at = person("u4", "bob@example.com", false, &[]);
    let bob2 = person("u5", "BOB", false, &[]);
    assert_eq!(s.find_people("ext-u2", None).await.unwrap(), std::slice::from_ref(&bob));
    assert_eq!(
        s.find_people("Bob", Some("bob@example.COM")).await.unwrap(),
        [bob.clone(), bob_at.clone(), bob2.clone()]
    );
    assert_eq!(s.find_people("sub-bob-2", Some("ÇAROL@example.com")).await.unwrap(), [carol, bob2]);
}

async fn group_ids(s: &dyn Store, select: GroupSelect<'_>, offset: i64, limit: i64) -> (i64, Vec<String>) {
    let (total, groups) = s.select_groups(select, offset, limit).await.unwrap();
    (total, groups.into_iter().map(|g| g.id).collect())
}

async fn member_ids(s: &dyn Store, group: &str) -> Vec<String> {
    let mut ids: Vec<String> = s.group_members(group).await.unwrap().into_iter().map(|m| m.user_id).collect();
    ids.sort();
    ids
}

async fn directory_groups(s: &dyn Store) {
    // Live users: u1 alice.w, u3 Çarol, u4 bob@example.com, u5 BOB; u2 is a tombstone.
    assert_eq!(s.select_groups(GroupSelect::All, 0, 10).await.unwrap(), (0, Vec::new()));
    assert!(s.group_names().await.unwrap().is_empty());
    let g1 = dgroup("g1", "Oncall", 100);
    s.create_group(&g1, &strings(&["u1", "u3", "u1"])).await.unwrap();
    s.create_group(&dgroup("g2", "payments", 110), &[]).await.unwrap();
    s.create_group(&dgroup("g3", "Ünits", 120), &strings(&["u5"])).await.unwrap();
    assert_eq!(s.get_group("g1").await.unwrap(), g1, "round trip");
    assert!(matches!(s.get_group("nope").await, Err(StoreError::NotFound(_))));
    for dup in [dgroup("g9", "ONCALL", 1), dgroup("g9", "ünits", 1), dgroup("g1", "other", 1)] {
        let err = s.create_group(&dup, &[]).await.unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists(_)), "{dup:?}: {err:?}");
    }
    for missing in ["ghost", "u2"] {
        let err = s.create_group(&dgroup("g9", "new", 1), &strings(&["u1", missing])).await.unwrap_err();
        assert!(matches!(&err, StoreError::NotFound(m) if m.contains(missing) && m.contains("user")), "{err:?}");
    }
    assert!(matches!(s.get_group("g9").await, Err(StoreError::NotFound(_))), "nothing was written");

    // Members, ordered by userName case-insensitively.
    let m = |id: &str, name: &str| GroupMember { user_id: id.to_string(), user_name: name.to_string() };
    assert_eq!(s.group_members("g1").await.unwrap(), [m("u1", "alice.w"), m("u3", "Çarol")]);
    s.create_group(&dgroup("g-order", "order", 1), &strings(&["u3", "u4", "u5", "u1"])).await.unwrap();
    assert_eq!(
        s.group_members("g-order").await.unwrap(),
        [m("u1", "alice.w"), m("u5", "BOB"), m("u4", "bob@example.com"), m("u3", "Çarol")]
    );
    assert_eq!(s.delete_group("g-order", Some(1)).await.unwrap().1, ["u1", "u3", "u4", "u5"]);
    assert!(s.group_members("g2").await.unwrap().is_empty());
    assert!(matches!(s.group_members("nope").await, Err(StoreError::NotFound(_))));

    // Every update bumps the version, membership changes included.
    let edit =
        DirectoryGroup { resource: json!({"displayName": "Oncall", "x": 1}), updated_at: 200, version: 42, ..g1 };
    let g = s.update_group(&edit, MemberChange::Keep, Some(1)).await.unwrap();
    assert_eq!(g, DirectoryGroup { version: 2, ..edit.clone() });
    assert_eq!(s.get_group("g1").await.unwrap(), g);
    assert_eq!(member_ids(s, "g1").await, ["u1", "u3"], "Keep");
    let err = s.update_group(&edit, MemberChange::Keep, Some(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "stale: {err:?}");
    let (add, remove) = (strings(&["u4", "u1", "u4"]), strings(&["nobody", "u5"]));
    let g = s.update_group(&edit, MemberChange::Edit { add: &add, remove: &remove }, Some(2)).await.unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(member_ids(s, "g1").await, ["u1", "u3", "u4"], "idempotent add, non-members ignored");
    let (add, remove) = (Vec::new(), strings(&["u3"]));
    let g = s.update_group(&edit, MemberChange::Edit { add: &add, remove: &remove }, None).await.unwrap();
    assert_eq!(g.version, 4);
    assert_eq!(member_ids(s, "g1").await, ["u1", "u4"]);
    let g = s.update_group(&edit, MemberChange::Replace(&strings(&["u4", "u5"])), Some(4)).await.unwrap();
    assert_eq!(g.version, 5);
    assert_eq!(member_ids(s, "g1").await, ["u4", "u5"], "Replace");
    for bad in ["ghost", "u2"] {
        let add = strings(&["u1", bad]);
        let err = s.update_group(&edit, MemberChange::Edit { add: &add, remove: &[] }, None).await.unwrap_err();
        assert!(matches!(&err, StoreError::NotFound(m) if m.contains(bad)), "{err:?}");
        let err = s.update_group(&edit, MemberChange::Replace(&add), None).await.unwrap_err();
        assert!(matches!(&err, StoreError::NotFound(m) if m.contains(bad)), "{err:?}");
    }
    assert_eq!(s.get_group("g1").await.unwrap().version, 5, "failed updates change nothing");
    assert_eq!(member_ids(s, "g1").await, ["u4", "u5"]);
    let err = s.update_group(&dgroup("nope", "nope", 1), MemberChange::Keep, None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let clash = DirectoryGroup { display_name: "PAYMENTS".into(), ..edit.clone() };
    let err = s.update_group(&clash, MemberChange::Keep, None).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "displayName clash: {err:?}");
    let renamed = DirectoryGroup { display_name: "ONCALL".into(), updated_at: 300, ..edit.clone() };
    let g = s.update_group(&renamed, MemberChange::Keep, Some(5)).await.unwrap();
    assert_eq!((g.display_name.as_str(), g.version, g.updated_at), ("ONCALL", 6, 300), "a case change");
    let g = s.update_group(&renamed, MemberChange::Edit { add: &[], remove: &[] }, None).await.unwrap();
    assert_eq!(g.version, 7, "an empty edit is still a change");

    // Memberships of users, and the groups found with a person.
    let mut ms = s.memberships(&strings(&["u5", "u4", "u1", "ghost", "u5"])).await.unwrap();
    ms.sort_by(|a, b| (&a.user_id, &a.group_id).cmp(&(&b.user_id, &b.group_id)));
    let ship = |u: &str, g: &str, n: &str| Membership {
        user_id: u.to_string(),
        group_id: g.to_string(),
        display_name: n.to_string(),
    };
    assert_eq!(ms, [ship("u4", "g1", "ONCALL"), ship("u5", "g1", "ONCALL"), ship("u5", "g3", "Ünits")]);
    assert!(s.memberships(&[]).await.unwrap().is_empty());
    assert_eq!(s.find_people("sub-bob-2", None).await.unwrap(), [person("u5", "BOB", false, &["ONCALL", "Ünits"])]);

    // Selectors.
    assert_eq!(group_ids(s, GroupSelect::All, 0, 10).await, (3, strings(&["g1", "g2", "g3"])));
    assert_eq!(group_ids(s, GroupSelect::All, 1, 1).await, (3, strings(&["g2"])));
    assert_eq!(group_ids(s, GroupSelect::All, 2, i64::MAX).await, (3, strings(&["g3"])));
    assert_eq!(group_ids(s, GroupSelect::Id("g2"), 0, 10).await, (1, strings(&["g2"])));
    assert_eq!(group_ids(s, GroupSelect::DisplayName("oncall"), 0, 10).await, (1, strings(&["g1"])));
    assert_eq!(group_ids(s, GroupSelect::DisplayName("ÜNITS"), 0, 10).await, (1, strings(&["g3"])));
    assert_eq!(group_ids(s, GroupSelect::ExternalId("ext-g3"), 0, 10).await, (1, strings(&["g3"])));
    assert_eq!(group_ids(s, GroupSelect::Member("u5"), 0, 10).await, (2, strings(&["g1", "g3"])));
    assert_eq!(group_ids(s, GroupSelect::Member("u5"), 1, 10).await, (2, strings(&["g3"])));
    assert_eq!(group_ids(s, GroupSelect::Member("u1"), 0, 10).await, (0, Vec::new()));
    assert_eq!(s.group_names().await.unwrap(), ["ONCALL", "payments", "Ünits"]);

    // Deleting a user removes their memberships and bumps those groups, in one go.
    s.delete_user("u5", None, 400).await.unwrap();
    let g1 = s.get_group("g1").await.unwrap();
    assert_eq!((g1.version, g1.updated_at), (8, 400));
    let g3 = s.get_group("g3").await.unwrap();
    assert_eq!((g3.version, g3.updated_at), (2, 400));
    assert_eq!(s.get_group("g2").await.unwrap().version, 1, "other groups untouched");
    assert_eq!(member_ids(s, "g1").await, ["u4"]);
    assert!(s.memberships(&strings(&["u5"])).await.unwrap().is_empty());
    assert_eq!(s.find_people("sub-bob-2", None).await.unwrap(), [person("u5", "BOB", true, &[])]);

    // Deleting a group returns it and its former members.
    s.update_group(&g3, MemberChange::Replace(&strings(&["u3", "u1"])), None).await.unwrap();
    let err = s.delete_group("g3", Some(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "stale: {err:?}");
    let (gone, members) = s.delete_group("g3", Some(3)).await.unwrap();
    assert_eq!((gone.id.as_str(), gone.version), ("g3", 3));
    assert_eq!(members, ["u1", "u3"]);
    assert!(matches!(s.get_group("g3").await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.group_members("g3").await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.delete_group("g3", None).await, Err(StoreError::NotFound(_))));
    assert!(s.memberships(&strings(&["u1", "u3"])).await.unwrap().is_empty());
    assert_eq!(s.group_names().await.unwrap(), ["ONCALL", "payments"]);
    // The name is free again.
    s.create_group(&dgroup("g4", "ÜNITS", 500), &[]).await.unwrap();
}

async fn directory_bulk(s: &dyn Store) {
    // Ten thousand users in one call; memberships across several statement chunks.
    let users: Vec<DirectoryUser> =
        (0..10_000).map(|i| duser(&format!("bulk-{i:05}"), &format!("bulk{i}"), 1000)).collect();
    s.create_users(&users).await.unwrap();
    let (total, _) = s.select_users(UserSelect::All, 0, 0).await.unwrap();
    assert_eq!(total, 10_000 + 3);
    assert_eq!(
        s.find_people("x", Some("BULK9999@example.com")).await.unwrap(),
        [person("bulk-09999", "bulk9999", false, &[])]
    );
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    s.create_group(&dgroup("big", "big", 1000), &ids[..2_500]).await.unwrap();
    let g = s.get_group("big").await.unwrap();
    let g = s
        .update_group(&g, MemberChange::Edit { add: &ids[2_000..4_000], remove: &ids[..1_000] }, Some(1))
        .await
        .unwrap();
    assert_eq!(g.version, 2);
    assert_eq!(member_ids(s, "big").await, ids[1_000..4_000]);
    let (total, page) = s.select_users(UserSelect::All, 9_000, 100).await.unwrap();
    assert_eq!((total, page.len()), (10_003, 100));
    assert_eq!(s.memberships(&ids).await.unwrap().len(), 3_000);
    let mut ghost = ids[5_000..6_000].to_vec();
    ghost.push("ghost".to_string());
    let err = s.update_group(&g, MemberChange::Replace(&ghost), None).await.unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(m) if m.contains("ghost")), "{err:?}");
    let g = s.update_group(&g, MemberChange::Replace(&ids[5_000..7_000]), None).await.unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(member_ids(s, "big").await, ids[5_000..7_000]);
    let (_, members) = s.delete_group("big", None).await.unwrap();
    assert_eq!(members, ids[5_000..7_000]);
}

#[tokio::test]
async fn sqlite_file_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    conformance(kubehero_store::open(&url).await.unwrap()).await;
    // Data survives closing and reopening, and re-running migrations is a no-op.
    let s = kubehero_store::open(&url).await.unwrap();
    assert_eq!(s.get_policy("p1").await.unwrap().version, 5);
    concurrent_transitions(s).await;
}

#[tokio::test]
async fn sqlite_memory_conforms() {
    let s = kubehero_store::open("sqlite::memory:").await.unwrap();
    assert_eq!(s.backend(), "sqlite");
    conformance(s.clone()).await;
    concurrent_transitions(s).await;
}

#[tokio::test]
async fn postgres_conforms() {
    let pg = TempPostgres::start().await.unwrap();
    let s = kubehero_store::open(&pg.url).await.unwrap();
    assert_eq!(s.backend(), "postgres");
    conformance(s.clone()).await;
    concurrent_transitions(s.clone()).await;

    // Replicas starting together run each migration once.
    let (a, b, c, d) = tokio::join!(
        kubehero_store::open(&pg.url),
        kubehero_store::open(&pg.url),
        kubehero_store::open(&pg.url),
        kubehero_store::open(&pg.url)
    );
    for o in [a, b, c, d] {
        o.unwrap();
    }

    // A dead database is `Unavailable` within the acquire timeout, never a hang; it recovers by itself.
    pg.stop_server();
    let started = std::time::Instant::now();
    let err = s.list_clusters().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(!err.to_string().contains("password"));
    pg.start_server();
    let mut recovered = false;
    for _ in 0..50 {
        if s.ping().await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(recovered, "the pool reconnects after the database comes back");
    assert_eq!(s.get_policy("p1").await.unwrap().version, 5);
}

#[tokio::test]
async fn postgres_newer_schema_is_refused() {
    // A database migrated by a newer release is refused with a message that says what to do.
    let pg = TempPostgres::start().await.unwrap();
    let s = kubehero_store::open(&pg.url).await.unwrap();
    drop(s);
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)")
        .execute(&pool)
        .await
        .unwrap();
    let Err(err) = kubehero_store::open(&pg.url).await else { panic!("opened a newer schema") };
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("newer release"), "{err}");
}

#[tokio::test]
async fn sqlite_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    let s = SqliteStore::open(&url).await.unwrap();
    s.close().await;
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let Err(err) = kubehero_store::open(&url).await else { panic!("opened a newer schema") };
    assert!(err.to_string().contains("newer release"), "{err}");
}

#[tokio::test]
async fn bad_urls_are_config_errors() {
    for url in ["mysql://x", "", "postgres://u:hunter2@/db?sslmode=bogus"] {
        let Err(err) = kubehero_store::open(url).await else { panic!("{url} opened") };
        assert!(matches!(err, StoreError::Config(_) | StoreError::Unavailable(_)), "{url}: {err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

/// Seeds the scale the server is sized for: 100,000 users (500 of them deleted), 1,000 groups, one group of
/// 10,000 members. The
/// `directory_scale_*` tests then print the median time of the directory's hot paths over several runs; run
/// them with `cargo test -p kubehero-store --release --test it -- --ignored directory_scale --nocapture`.
async fn seed_directory_scale(s: &dyn Store, label: &str) {
    let started = std::time::Instant::now();
    for batch in 0..10 {
        let users: Vec<DirectoryUser> = (0..10_000)
            .map(|i| {
                let n = batch * 10_000 + i;
                DirectoryUser {
                    subject: Some(format!("sub-{n}")),
                    ..duser(&format!("user-{n:06}"), &format!("person{n}@example.com"), 1_000 + n)
                }
            })
            .collect();
        s.create_users(&users).await.unwrap();
    }
    let seeded_users = started.elapsed();
    for g in 0..1_000 {
        let members: Vec<String> = (0..20).map(|i| format!("user-{:06}", (g * 97 + i * 4_999) % 100_000)).collect();
        s.create_group(&dgroup(&format!("group-{g:04}"), &format!("Group {g}"), 10), &members).await.unwrap();
    }
    let big: Vec<String> = (0..10_000).map(|i| format!("user-{:06}", i * 7)).collect();
    s.create_group(&dgroup("big", "Big", 10), &big).await.unwrap();
    for i in 0..500 {
        s.delete_user(&format!("user-{:06}", i * 100 + 3), None, 20).await.unwrap();
    }
    println!("{label}: seeded 100,000 users in {seeded_users:?}, everything in {:?}", started.elapsed());
}

/// Measures what [`seed_directory_scale`] seeded.
async fn directory_scale(s: &dyn Store, label: &str) {
    use std::time::{Duration, Instant};

    async fn median<F: std::future::Future<Output = ()>>(runs: usize, mut f: impl FnMut(usize) -> F) -> Duration {
        let mut times = Vec::with_capacity(runs);
        for i in 0..runs {
            let t = Instant::now();
            f(i).await;
            times.push(t.elapsed());
        }
        times.sort();
        times[runs / 2]
    }
    let by_name = median(50, |i| async move {
        let name = format!("PERSON{}@EXAMPLE.COM", i * 1_999);
        assert_eq!(s.select_users(UserSelect::UserName(&name), 0, 100).await.unwrap().0, 1);
    })
    .await;
    let page = median(20, |i| async move {
        let (total, page) = s.select_users(UserSelect::All, (i as i64) * 4_000, 100).await.unwrap();
        assert_eq!((total, page.len()), (99_500, 100));
    })
    .await;
    let count_only = median(20, |_| async move {
        assert_eq!(s.select_users(UserSelect::All, 0, 0).await.unwrap().0, 99_500);
    })
    .await;
    let first_page = median(20, |_| async move {
        assert_eq!(s.select_users(UserSelect::All, 0, 100).await.unwrap().1.len(), 100);
    })
    .await;
    println!("{label}: count only {count_only:?}, first page {first_page:?}");
    let ids: Vec<String> = (0..100).map(|i| format!("user-{:06}", i * 7)).collect();
    let memberships = median(20, |_| async { assert!(s.memberships(&ids).await.unwrap().len() >= 90) }).await;
    let people = median(50, |i| async move {
        let found = s.find_people(&format!("sub-{}", i * 7), Some(&format!("Person{}@Example.com", i * 7))).await;
        assert_eq!(found.unwrap().len(), 1);
    })
    .await;
    let add = median(5, |i| async move {
        let add: Vec<String> = (0..1_000).map(|j| format!("user-{:06}", 70_001 + i * 1_000 + j)).collect();
        let g = s.get_group("big").await.unwrap();
        s.update_group(&g, MemberChange::Edit { add: &add, remove: &[] }, Some(g.version)).await.unwrap();
    })
    .await;
    println!(
        "{label}: select_users(UserName) {by_name:?}, page of 100 {page:?}, memberships(100) {memberships:?}, \
         find_people {people:?}, update_group(add 1,000 to 10,000) {add:?}"
    );
}

#[tokio::test]
#[ignore = "slow: seeds 100,000 users; run by hand to measure"]
async fn directory_scale_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    let s = kubehero_store::open(&url).await.unwrap();
    seed_directory_scale(&*s, "sqlite file").await;
    directory_scale(&*s, "sqlite file").await;
}

#[tokio::test]
#[ignore = "slow: seeds 100,000 users; run by hand to measure"]
async fn directory_scale_postgres() {
    let pg = TempPostgres::start().await.unwrap();
    let s = kubehero_store::open(&pg.url).await.unwrap();
    seed_directory_scale(&*s, "postgres").await;
    // Fresh from a bulk load the planner has no statistics and the visibility map is empty; measure the steady
    // state autovacuum reaches shortly after.
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    sqlx::query("VACUUM ANALYZE").execute(&pool).await.unwrap();
    directory_scale(&*s, "postgres").await;
}

/// The audit log filtered by cluster reads the partial `audit_log_cluster` index (schema v15) on both backends,
/// with or without an action filter, instead of scanning every row.
#[tokio::test]
async fn the_audit_filter_by_cluster_reads_an_index() {
    let queries = [
        "SELECT seq, key_id, mac, body FROM audit_log WHERE cluster = $1 ORDER BY seq DESC LIMIT 50",
        "SELECT seq, key_id, mac, body FROM audit_log WHERE action = 'k8s.list' AND cluster = $1 AND seq < 100 \
         ORDER BY seq DESC LIMIT 50",
    ];
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    kubehero_store::open(&url).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for q in queries {
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {q}")).bind("prod").fetch_all(&pool).await.unwrap();
        assert!(plan.iter().any(|p| p.3.contains("audit_log_cluster")), "{q}: {plan:?}");
    }
    pool.close().await;

    let pg = TempPostgres::start().await.unwrap();
    kubehero_store::open(&pg.url).await.unwrap();
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    // An empty table is cheapest to scan: forbid that to see whether the index is usable for `cluster = $1`.
    sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await.unwrap();
    for q in queries {
        let plan: Vec<(String,)> =
            sqlx::query_as(&format!("EXPLAIN {q}")).bind("prod").fetch_all(&mut *conn).await.unwrap();
        assert!(plan.iter().any(|p| p.0.contains("audit_log_cluster")), "{q}: {plan:?}");
    }
}
