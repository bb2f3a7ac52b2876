//! The Policies pages: every policy with its state; drafting (members); a policy's spec, edit (its draft, at
//! the version read: a stale edit is refused with "someone changed this"), arm/disarm/undo within scope
//! (admins) and its transition history.

use super::{page, signed_in, table, when, Section};
use crate::error::ApiResult;
use crate::login::esc;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use kubehero_core::{Action, Principal, Target};
use kubehero_store::{Policy, PolicyState};

fn target<'a>(p: &Principal, x: &'a Policy) -> Target<'a> {
    Target::in_namespace(&x.cluster, x.namespace.as_deref()).owned(x.owner == p.subject_key())
}

fn place(x: &Policy) -> String {
    x.namespace.as_ref().map_or(x.cluster.clone(), |n| format!("{}/{n}", x.cluster))
}

/// `GET /ui/policies`.
pub async fn list(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let (p, session) = match signed_in(&s, &headers, "/ui/policies").await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    let rows: Vec<String> = s
        .store
        .list_policies(None)
        .await?
        .iter()
        .map(|x| {
            format!(
                "<tr data-policy=\"{id}\"><th scope=\"row\"><a href=\"/ui/policies/{id}\">{name}</a></th><td>{place}\
                 </td><td>{state}</td><td>{version}</td><td>{owner}</td><td>{updated}</td></tr>",
                id = esc(&x.id),
                name = esc(&x.name),
                place = esc(&place(x)),
                state = x.state.as_str(),
                version = x.version,
                owner = esc(&x.owner),
                updated = when(Some(x.updated_at)),
            )
        })
        .collect();
    let list =
        table("policies", &["Policy", "Where", "State", "Version", "Owner", "Updated"], &rows, "No policies yet.");
    let create = if kubehero_core::authorize(&p, Action::PolicyCreate, Target::NONE).is_allowed() {
        let clusters: String =
            s.store.list_clusters().await?.iter().map(|c| format!("<option>{}</option>", esc(&c.name))).collect();
        format!(
            "<h2>Draft a policy</h2><form class=\"stack\" id=\"draft\" data-api=\"POST /api/v1/policies\" \
             data-then=\"reload\"><label for=\"draft-name\">Name</label><input id=\"draft-name\" name=\"name\" required \
             maxlength=\"128\" autocomplete=\"off\"><label for=\"draft-cluster\">Cluster</label>\
             <select id=\"draft-cluster\" name=\"cluster\">{clusters}</select><label for=\"draft-ns\">Namespace \
             (empty: the whole cluster)</label><input id=\"draft-ns\" name=\"namespace\" autocomplete=\"off\">\
             <label for=\"draft-spec\">Spec (a JSON object)</label><textarea id=\"draft-spec\" name=\"spec\" \
             data-type=\"json\" rows=\"6\">{{}}</textarea><button type=\"submit\">Save draft</button>\
             <div class=\"out\" data-out aria-live=\"polite\"></div></form>"
        )
    } else {
        format!(
            "<p class=\"hint\" id=\"draft-hidden\">Drafting policies needs the member role; you are {}.</p>",
            esc(p.display_role().as_str())
        )
    };
    page(&s, &p, &session, Section::Policies, "Policies", &format!("{list}{create}")).await
}

/// `GET /ui/policies/{id}`.
pub async fn detail(State(s): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult<Response> {
    let here = format!("/ui/policies/{}", crate::login::urlencode(&id));
    let (p, session) = match signed_in(&s, &headers, &here).await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    let x = s.store.get_policy(&id).await?;
    let spec = serde_json::to_string_pretty(&x.spec).unwrap_or_default();
    let facts = format!(
        "<dl class=\"facts\" id=\"facts\"><dt>Where</dt><dd>{place}</dd><dt>State</dt><dd id=\"state\">{state}</dd>\
         <dt>Version</dt><dd>{version}</dd><dt>Owner</dt><dd>{owner}</dd><dt>Updated</dt><dd>{updated}</dd></dl>\
         <h2>Spec</h2><pre id=\"spec\">{spec}</pre>",
        place = esc(&place(&x)),
        state = x.state.as_str(),
        version = x.version,
        owner = esc(&x.owner),
        updated = when(Some(x.updated_at)),
        spec = esc(&spec),
    );
    let may = |a: Action| kubehero_core::authorize(&p, a, target(&p, &x)).is_allowed();
    let button = |verb: &str, label: &str| {
        format!(
            "<form class=\"inline\" data-api=\"POST /api/v1/policies/{id}/{verb}\" data-then=\"reload\">\
             <button type=\"submit\" id=\"{verb}\">{label}</button><span class=\"out\" data-out></span></form>",
            id = esc(&x.id)
        )
    };
    let mut actions = String::new();
    match x.state {
        PolicyState::Draft if may(Action::PolicyArm) => actions.push_str(&button("arm", "Arm")),
        PolicyState::Armed if may(Action::PolicyDisarm) => actions.push_str(&button("disarm", "Disarm")),
        _ => {}
    }
    if x.state != PolicyState::Draft && may(Action::PolicyUndo) {
        actions.push_str(&button("undo", "Undo the last change"));
    }
    let actions = if actions.is_empty() {
        "<p class=\"hint\" id=\"actions-hidden\">Arming, disarming and undoing need the admin role in this policy's \
         scope.</p>"
            .to_string()
    } else {
        format!("<h2>Actions</h2><div id=\"actions\">{actions}</div>")
    };
    let edit = if x.state == PolicyState::Draft && may(Action::PolicyUpdate) {
        format!(
            "<h2>Edit the draft</h2><form class=\"stack\" id=\"edit\" data-api=\"PUT /api/v1/policies/{id}\" \
             data-then=\"reload\"><input type=\"hidden\" name=\"version\" value=\"{version}\" data-type=\"number\">\
             <label for=\"edit-name\">Name</label><input id=\"edit-name\" name=\"name\" value=\"{name}\" required>\
             <label for=\"edit-spec\">Spec (a JSON object)</label><textarea id=\"edit-spec\" name=\"spec\" \
             data-type=\"json\" rows=\"8\">{spec}</textarea><button type=\"submit\">Save</button>\
             <div class=\"out\" data-out aria-live=\"polite\"></div></form>",
            id = esc(&x.id),
            version = x.version,
            name = esc(&x.name),
            spec = esc(&spec),
        )
    } else {
        String::new()
    };
    let history: Vec<String> = s
        .store
        .policy_history(&id)
        .await?
        .iter()
        .map(|t| {
            format!(
                "<tr><td>{seq}</td><td>{action}</td><td>{from} → {to}</td><td>{version}</td><td>{actor}</td>\
                 <td>{at}</td></tr>",
                seq = t.seq,
                action = esc(&t.action),
                from = t.from_state.map_or("—", |f| f.as_str()),
                to = t.to_state.as_str(),
                version = t.version,
                actor = esc(&t.actor),
                at = when(Some(t.at)),
            )
        })
        .collect();
    let history = table("history", &["#", "Change", "State", "Version", "By", "At"], &history, "No history.");
    let body = format!("{facts}{actions}{edit}<h2>History</h2>{history}");
    page(&s, &p, &session, Section::Policies, &x.name, &body).await
}
