//! The Clusters pages: every cluster with its live state; one cluster's details, who can reach it and how,
//! its kubeconfig, its share links and (admins) its removal.

use super::{cells, page, scope_text, signed_in, table, when, Section};
use crate::error::{ApiError, ApiResult, Code};
use crate::login::esc;
use crate::routes::clusters::ClusterView;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kubehero_core::{Action, Principal, Role, Scope, Target};

fn state_text(v: &ClusterView) -> String {
    match (v.state, v.since) {
        ("disconnected", Some(t)) => format!("disconnected since {}", when(Some(t))),
        (st, _) => st.to_string(),
    }
}

fn row(v: &ClusterView) -> String {
    let opt = |o: &Option<String>| esc(o.as_deref().unwrap_or("—"));
    format!(
        "<tr data-cluster=\"{name}\"><th scope=\"row\"><a href=\"/ui/clusters/{name}\">{name}</a></th>\
         <td data-field=\"state\" class=\"state-{state}\">{text}</td><td data-field=\"kubernetes_version\">{k8s}</td>\
         <td data-field=\"agent_version\">{agent}</td><td data-field=\"cert_not_after\">{cert}</td>\
         <td data-field=\"last_seen\">{seen}</td></tr>",
        name = esc(&v.name),
        state = v.state,
        text = esc(&state_text(v)),
        k8s = opt(&v.kubernetes_version),
        agent = opt(&v.agent_version),
        cert = when(v.cert_not_after),
        seen = when(v.last_seen),
    )
}

/// Whether `p` is an admin or owner anywhere (a scoped admin registers clusters within its scope).
fn registers(p: &Principal) -> bool {
    p.grants.iter().any(|g| matches!(g.role, Role::Admin | Role::Owner))
}

/// `GET /ui/clusters`: every cluster, updating live; "Add cluster" for admins.
pub async fn list(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let (p, session) = match signed_in(&s, &headers, "/ui/clusters").await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    let views = crate::routes::clusters::all(&s).await?;
    let rows: Vec<String> = views.iter().map(row).collect();
    let filter = if rows.len() > 10 {
        "<p><label>Filter <input type=\"search\" data-filter=\"#clusters\" autocomplete=\"off\"></label></p>"
    } else {
        ""
    };
    let list = table(
        "clusters",
        &["Cluster", "State", "Kubernetes", "Agent", "Certificate expires", "Last seen"],
        &rows,
        "No clusters yet.",
    )
    .replacen("<div class=\"table\">", "<div class=\"table\" data-poll=\"/api/v1/clusters\">", 1);
    let add = if registers(&p) {
        "<h2>Add cluster</h2><form class=\"stack\" id=\"add-cluster\" data-api=\"POST /api/v1/clusters\" \
         data-show=\"join.agent_command join.helm_command\" data-note=\"The join token in these commands works once \
         and is shown only now: run one of them next to the cluster.\">\
         <label for=\"add-name\">Name (a DNS label)</label><input id=\"add-name\" name=\"name\" required \
         maxlength=\"63\" pattern=\"[a-z0-9]([\\-a-z0-9]*[a-z0-9])?\" autocomplete=\"off\">\
         <input type=\"hidden\" name=\"join\" value=\"true\" data-type=\"bool\">\
         <button type=\"submit\">Add cluster</button><div class=\"out\" id=\"add-out\" data-out aria-live=\"polite\">\
         </div></form>"
            .to_string()
    } else {
        format!(
            "<p class=\"hint\" id=\"add-hidden\">Adding and removing clusters needs the admin role; you are {}.</p>",
            esc(p.display_role().as_str())
        )
    };
    let body = format!("{filter}{list}{add}");
    page(&s, &p, &session, Section::Clusters, "Clusters", &body).await
}

/// Where a binding came from: a share, an elevation, break-glass, or a binding made by hand (or the file).
pub(crate) async fn sources(s: &AppState) -> ApiResult<std::collections::HashMap<String, &'static str>> {
    let mut from = std::collections::HashMap::new();
    for g in s.store.list_share_grants().await? {
        from.insert(g.binding_id, "share");
    }
    for r in s.store.list_access_requests().await? {
        if let Some(b) = r.binding_id {
            from.insert(b, "elevation");
        }
    }
    for c in s.store.list_breakglass().await? {
        if let Some(b) = c.binding_id {
            from.insert(b, "break-glass");
        }
    }
    Ok(from)
}

/// Who reaches `cluster`: group mappings (every cluster), then file and database bindings whose scope covers it.
async fn reach(s: &AppState, cluster: &str) -> ApiResult<Vec<String>> {
    let covers = |scope: &Scope| match scope {
        Scope::Global => true,
        Scope::Cluster { cluster: g } | Scope::Namespace { cluster: g, .. } => kubehero_core::glob::matches(g, cluster),
    };
    let subject = |b: &kubehero_core::Binding| match &b.subject {
        kubehero_core::BindingSubject::User(u) => format!("user {u}"),
        kubehero_core::BindingSubject::Group(g) => format!("group {g}"),
    };
    let mut rows = Vec::new();
    for (group, role, issuer) in s.identity.bindings.group_mappings() {
        let from = issuer.map_or("group mapping".to_string(), |i| format!("group mapping of {i}"));
        rows.push([format!("group {group}"), role.to_string(), "every cluster".into(), "—".into(), from]);
    }
    for b in s.identity.bindings.file_bindings().iter().filter(|b| covers(&b.scope)) {
        rows.push([subject(b), b.role.to_string(), scope_text(&b.scope), "—".into(), "config file".into()]);
    }
    let from = sources(s).await?;
    let now = s.clock.now();
    for b in s.store.list_bindings().await? {
        if !covers(&b.binding.scope) || b.expires_at.is_some_and(|e| e <= now) {
            continue;
        }
        let source = from.get(&b.id).copied().unwrap_or("role binding");
        let until = when(b.expires_at);
        rows.push([
            subject(&b.binding),
            b.binding.role.to_string(),
            scope_text(&b.binding.scope),
            until,
            source.into(),
        ]);
    }
    Ok(rows.into_iter().map(|row| cells(&row)).collect())
}

/// `GET /ui/clusters/{name}`: details, who can reach it, kubeconfig, share links, removal.
pub async fn detail(State(s): State<AppState>, Path(name): Path<String>, headers: HeaderMap) -> ApiResult<Response> {
    let here = format!("/ui/clusters/{}", crate::login::urlencode(&name));
    let (p, session) = match signed_in(&s, &headers, &here).await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    let v = crate::routes::clusters::one(&s, name.clone()).await?;
    let c = v.cluster.clone().ok_or_else(|| ApiError::not_found(format!("cluster {name:?}")))?;
    let labels: String = c.labels.iter().map(|(k, v)| format!("<code>{}={}</code> ", esc(k), esc(v))).collect();
    let facts = format!(
        "<dl class=\"facts\" id=\"facts\"><dt>State</dt><dd class=\"state-{state}\">{text}</dd>\
         <dt>Kubernetes</dt><dd>{k8s}</dd><dt>Agent</dt><dd>{agent}</dd><dt>Certificate expires</dt><dd>{cert}</dd>\
         <dt>Last seen</dt><dd>{seen}</dd><dt>API server</dt><dd>{api}</dd><dt>Labels</dt><dd>{labels}</dd>\
         <dt>Registered</dt><dd>{at} by {by}</dd></dl>",
        state = v.state,
        text = esc(&state_text(&v)),
        k8s = esc(v.kubernetes_version.as_deref().unwrap_or("—")),
        agent = esc(v.agent_version.as_deref().unwrap_or("—")),
        cert = when(v.cert_not_after),
        seen = when(v.last_seen),
        api = esc(c.api_server_url.as_deref().unwrap_or("—")),
        labels = if labels.is_empty() { "—".to_string() } else { labels },
        at = when(Some(c.created_at)),
        by = esc(&c.created_by),
    );
    let kubeconfig = format!(
        "<h2>Get kubeconfig</h2><p><a id=\"kubeconfig\" href=\"{here}/kubeconfig\" download=\"kubeconfig-{n}.yaml\">\
         Download the kubeconfig of {n}</a>. It runs <code>kubehero token</code> for credentials: install the CLI \
         and run <code>kubehero login --server {server}</code> once. Or: <code>kubehero kubeconfig --cluster {n}</code>.\
         </p>",
        here = esc(&here),
        n = esc(&name),
        server = esc(s.public_url.as_deref().unwrap_or_default()),
    );
    let reach = table(
        "reach",
        &["Who", "Role", "Where", "Until", "From"],
        &reach(&s, &name).await?,
        "Nobody has a role on this cluster yet.",
    );
    let shares = shares_section(&s, &p, &name).await?;
    let remove = if kubehero_core::authorize(&p, Action::ClusterDelete, Target::cluster(&name)).is_allowed() {
        format!(
            "<h2>Remove</h2><form class=\"stack\" id=\"remove\" data-api=\"DELETE /api/v1/clusters/{n}\" \
             data-confirm=\"{n}\" data-then=\"/ui/clusters\"><p>Removing revokes the agent's certificates and closes \
             its tunnel at once.</p><label for=\"confirm\">Type <strong>{n}</strong> to confirm</label>\
             <input id=\"confirm\" name=\"confirm\" autocomplete=\"off\"><button type=\"submit\" class=\"danger\">\
             Remove {n}</button><div class=\"out\" data-out aria-live=\"polite\"></div></form>",
            n = esc(&name)
        )
    } else {
        "<p class=\"hint\" id=\"remove-hidden\">Removing a cluster needs the admin role in its scope.</p>".to_string()
    };
    let body = format!("{facts}{kubeconfig}<h2>Who can reach it</h2>{reach}{shares}{remove}");
    page(&s, &p, &session, Section::Clusters, &name, &body).await
}

/// The cluster's share links the person may see (their own; an admin's: all in scope), and the form to make one.
async fn shares_section(s: &AppState, p: &Principal, cluster: &str) -> ApiResult<String> {
    let now = s.clock.now();
    let grants = s.store.list_share_grants().await?;
    let rows: Vec<String> = s
        .store
        .list_shares()
        .await?
        .into_iter()
        .filter(|sh| sh.cluster == cluster && crate::routes::shares::may_revoke(p, sh))
        .map(|sh| {
            let state = sh.closed(now).unwrap_or("open");
            let accepted: Vec<&str> =
                grants.iter().filter(|g| g.share_id == sh.id).map(|g| g.subject.as_str()).collect();
            let revoke = if state == "open" || state == "used_up" {
                format!(
                    "<form data-api=\"DELETE /api/v1/clusters/{c}/shares/{id}\" data-then=\"reload\">\
                     <button type=\"submit\" class=\"secondary\" aria-label=\"Revoke share {id}\">Revoke</button>\
                     <span class=\"out\" data-out></span></form>",
                    c = esc(cluster),
                    id = esc(&sh.id)
                )
            } else {
                String::new()
            };
            format!(
                "<tr><td>{id}</td><td>{role}</td><td>{ns}</td><td>{state}</td><td>{until}</td><td>{accepted}</td>\
                 <td>{revoke}</td></tr>",
                id = esc(&sh.id),
                role = esc(&sh.role),
                ns = esc(sh.namespace.as_deref().unwrap_or("all")),
                until = when(Some(sh.expires_at)),
                accepted = esc(&accepted.join(", ")),
            )
        })
        .collect();
    let list = table(
        "shares",
        &["Share", "Role", "Namespace", "State", "Until", "Accepted by", ""],
        &rows,
        "No share links you can see.",
    );
    let form = format!(
        "<form class=\"stack\" id=\"share\" data-api=\"POST /api/v1/clusters/{c}/shares\" data-show=\"url\" \
         data-note=\"Send this link to the people it is for: it is shown only now.\">\
         <label for=\"share-role\">Role (at most yours)</label><select id=\"share-role\" name=\"role\">{roles}</select>\
         <label for=\"share-expires\">Lasts</label><select id=\"share-expires\" name=\"expires_in_secs\" \
         data-type=\"number\"><option value=\"3600\">1 hour</option><option value=\"86400\" selected>1 day</option>\
         <option value=\"604800\">7 days</option><option value=\"2592000\">30 days</option></select>\
         <label for=\"share-to\">Only for (emails, group:&lt;name&gt;; comma-separated; empty: anyone who signs in)\
         </label><input id=\"share-to\" name=\"to\" data-type=\"list\" autocomplete=\"off\">\
         <label for=\"share-uses\">At most this many people (empty: any)</label>\
         <input id=\"share-uses\" name=\"max_uses\" type=\"number\" min=\"1\" max=\"1000\" data-type=\"number\">\
         <label for=\"share-ns\">Namespace (empty: the whole cluster)</label>\
         <input id=\"share-ns\" name=\"namespace\" autocomplete=\"off\">\
         <button type=\"submit\">Make share link</button><div class=\"out\" data-out aria-live=\"polite\"></div></form>",
        c = esc(cluster),
        roles = super::role_options("viewer"),
    );
    Ok(format!("<h2>Share links</h2>{list}<h3>Share this cluster</h3>{form}"))
}

/// `GET /ui/clusters/{name}/kubeconfig`: a kubeconfig for this cluster through the proxy, its user running
/// `kubehero token`.
pub async fn kubeconfig(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let here = format!("/ui/clusters/{}", crate::login::urlencode(&name));
    if let Err(r) = signed_in(&s, &headers, &here).await {
        return Ok(r);
    }
    s.store.get_cluster(&name).await?;
    let base = s.public_url.as_deref().unwrap_or_default().trim_end_matches('/').to_string();
    let doc = crate::kube::kubeconfig::document_for(&base, &name, s.serving_ca_pem.as_deref());
    let text = serde_json::to_string_pretty(&doc).map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"kubeconfig-{name}.yaml\"")) {
        r.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    Ok(r)
}
