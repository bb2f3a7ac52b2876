//! The Access page: my access (cluster × role, and where each comes from), elevation requests to decide, my
//! requests and the form to ask, and the share links I made.

use super::{cells, page, scope_text, signed_in, table, when, Section};
use crate::error::ApiResult;
use crate::login::esc;
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use kubehero_core::Principal;

/// What `p` holds and where each comes from: group mappings, then bindings (made by hand, from a share, an
/// elevation or break-glass), with their end.
async fn my_access(s: &AppState, p: &Principal) -> ApiResult<Vec<String>> {
    let mut rows = Vec::new();
    for (group, role) in s.identity.bindings.group_roles(p.issuer.as_deref(), &p.groups) {
        rows.push(cells(&[role.to_string(), "every cluster".into(), format!("group {group}"), "—".into()]));
    }
    let key = p.subject_key();
    for b in s.identity.bindings.file_bindings().iter().filter(|b| b.applies_to(&key, p.email.as_deref(), &p.groups)) {
        rows.push(cells(&[b.role.to_string(), scope_text(&b.scope), "config file".into(), "—".into()]));
    }
    let from = super::clusters::sources(s).await?;
    let now = s.clock.now();
    for b in s.store.list_bindings().await? {
        if !b.binding.applies_to(&key, p.email.as_deref(), &p.groups) || b.expires_at.is_some_and(|e| e <= now) {
            continue;
        }
        let source = from.get(&b.id).copied().unwrap_or("role binding");
        rows.push(cells(&[
            b.binding.role.to_string(),
            scope_text(&b.binding.scope),
            source.into(),
            when(b.expires_at),
        ]));
    }
    Ok(rows)
}

fn place(cluster: &str, namespace: Option<&str>) -> String {
    namespace.map_or(cluster.to_string(), |n| format!("{cluster}/{n}"))
}

/// `GET /ui/access`.
pub async fn page_of_access(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let (p, session) = match signed_in(&s, &headers, "/ui/access").await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    let me = p.subject_key();
    let mine = table(
        "my-access",
        &["Role", "Where", "From", "Until"],
        &my_access(&s, &p).await?,
        "You hold no role on any cluster yet: ask for one below, or open a share link.",
    );
    let requests = s.store.list_access_requests().await?;
    let policies = crate::routes::access::policies(&s).await?;
    let to_decide: Vec<String> = requests
        .iter()
        .filter(|r| r.state == "pending" && r.requester != me && crate::routes::access::may_grant(&p, r))
        .map(|r| {
            let first =
                r.first_approver.as_deref().map(|f| format!(" (first approval: {})", esc(f))).unwrap_or_default();
            // The cluster's access policy may name other approvers (or want a second one): then only Deny.
            let approve = if crate::routes::access::may_approve(&p, r, &policies) {
                format!(
                    "<form class=\"inline\" data-api=\"POST /api/v1/access-requests/{id}/approve\" \
                     data-then=\"reload\"><label>Comment <input name=\"comment\" autocomplete=\"off\"></label>\
                     <button type=\"submit\" aria-label=\"Approve {id}\">Approve</button><span class=\"out\" \
                     data-out></span></form>",
                    id = esc(&r.id)
                )
            } else {
                "<span class=\"muted\">Another approver must approve (the cluster's access policy).</span> ".into()
            };
            format!(
                "<tr data-request=\"{id}\"><td>{who}</td><td>{role}</td><td>{place}</td><td>{secs} s</td>\
                 <td>{reason}{first}</td><td>{approve}<form class=\"inline\" \
                 data-api=\"POST /api/v1/access-requests/{id}/deny\" \
                 data-then=\"reload\"><button type=\"submit\" class=\"secondary\" aria-label=\"Deny {id}\">Deny\
                 </button><span class=\"out\" data-out></span></form></td></tr>",
                id = esc(&r.id),
                who = esc(r.requester_email.as_deref().unwrap_or(&r.requester)),
                role = esc(&r.role),
                place = esc(&place(&r.cluster, r.namespace.as_deref())),
                secs = r.duration_secs,
                reason = esc(&r.reason),
            )
        })
        .collect();
    let decide = table(
        "to-decide",
        &["Who", "Role", "Where", "For", "Reason", "Decide"],
        &to_decide,
        "No requests wait for you.",
    );
    let my_requests: Vec<String> = requests
        .iter()
        .filter(|r| r.requester == me)
        .map(|r| {
            cells(&[
                r.id.clone(),
                r.role.clone(),
                place(&r.cluster, r.namespace.as_deref()),
                r.state.clone(),
                r.decided_by.clone().unwrap_or_default(),
                when(r.expires_at),
            ])
        })
        .collect();
    let my_requests = table(
        "my-requests",
        &["Request", "Role", "Where", "State", "Decided by", "Until"],
        &my_requests,
        "You have asked for nothing yet.",
    );
    let clusters: String =
        s.store.list_clusters().await?.iter().map(|c| format!("<option>{}</option>", esc(&c.name))).collect();
    let ask = format!(
        "<form class=\"stack\" id=\"ask\" data-api=\"POST /api/v1/access-requests\" data-then=\"reload\">\
         <label for=\"ask-cluster\">Cluster</label><select id=\"ask-cluster\" name=\"cluster\">{clusters}</select>\
         <label for=\"ask-ns\">Namespace (empty: the whole cluster)</label>\
         <input id=\"ask-ns\" name=\"namespace\" autocomplete=\"off\">\
         <label for=\"ask-role\">Role</label><select id=\"ask-role\" name=\"role\">{roles}</select>\
         <label for=\"ask-for\">For</label><select id=\"ask-for\" name=\"duration_secs\" data-type=\"number\">\
         <option value=\"3600\">1 hour</option><option value=\"7200\">2 hours</option><option value=\"14400\">4 hours\
         </option><option value=\"28800\">8 hours</option><option value=\"86400\">24 hours</option></select>\
         <label for=\"ask-reason\">Reason (an incident or ticket)</label>\
         <input id=\"ask-reason\" name=\"reason\" required maxlength=\"500\" autocomplete=\"off\">\
         <button type=\"submit\">Ask</button><div class=\"out\" data-out aria-live=\"polite\"></div></form>",
        roles = super::role_options("member"),
    );
    let now = s.clock.now();
    let shares: Vec<String> = s
        .store
        .list_shares()
        .await?
        .into_iter()
        .filter(|sh| sh.created_by == me)
        .map(|sh| {
            cells(&[
                sh.id.clone(),
                sh.role.clone(),
                place(&sh.cluster, sh.namespace.as_deref()),
                sh.closed(now).unwrap_or("open").to_string(),
                when(Some(sh.expires_at)),
            ])
        })
        .collect();
    let shares = table(
        "my-shares",
        &["Share", "Role", "Where", "State", "Until"],
        &shares,
        "You have made no share links (make one on a cluster's page).",
    );
    let body = format!(
        "<h2>My access</h2>{mine}<h2>Requests to decide</h2>{decide}<h2>My requests</h2>{my_requests}\
         <h3>Ask for access</h3>{ask}<h2>Share links I made</h2>{shares}"
    );
    page(&s, &p, &session, Section::Access, "Access", &body).await
}
