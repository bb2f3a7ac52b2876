//! The People, Role bindings and Settings pages. People (from SCIM and just-in-time sign-in) and Settings are for
//! owners and auditors (personal data, the IdP and integration set-up); role bindings are listed to everyone
//! and edited by owners. Secrets are never displayed.

use super::{cells, page, scope_text, signed_in, table, when, Section};
use crate::error::ApiResult;
use crate::login::esc;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use kubehero_core::{Action, Grant, Principal, Target};
use kubehero_identity::grants::Facts;
use kubehero_store::{GroupSelect, UserSelect};
use serde::Deserialize;
use std::collections::HashMap;

const PEOPLE_PAGE: i64 = 100;

fn grants_text(grants: &[Grant]) -> String {
    grants.iter().map(|g| format!("{} ({})", g.role, scope_text(&g.scope))).collect::<Vec<_>>().join(", ")
}

/// Whether `p` may see the directory and the settings (owners and auditors).
fn reads_settings(p: &Principal) -> bool {
    kubehero_core::authorize(p, Action::SettingsRead, Target::NONE).is_allowed()
}

async fn hidden(
    s: &AppState,
    p: &Principal,
    session: &kubehero_store::SessionRecord,
    section: Section,
    title: &str,
) -> ApiResult<Response> {
    let body = format!(
        "<p id=\"hidden\">This page is for owners and auditors; you are {}.</p>",
        esc(p.display_role().as_str())
    );
    page(s, p, session, section, title, &body).await
}

#[derive(Debug, Default, Deserialize)]
pub struct PeopleQuery {
    #[serde(default)]
    page: Option<i64>,
}

/// `GET /ui/people`: people with their standing, groups, roles and credentials; groups with their members.
pub async fn people(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PeopleQuery>,
) -> ApiResult<Response> {
    let (p, session) = match signed_in(&s, &headers, "/ui/people").await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    if !reads_settings(&p) {
        return hidden(&s, &p, &session, Section::People, "People and groups").await;
    }
    let n = q.page.unwrap_or(0).max(0);
    let (total, users) = s.store.select_users(UserSelect::All, n * PEOPLE_PAGE, PEOPLE_PAGE).await?;
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    let mut groups_of: HashMap<String, Vec<String>> = HashMap::new();
    for m in s.store.memberships(&ids).await? {
        groups_of.entry(m.user_id).or_default().push(m.display_name);
    }
    let now = s.clock.now();
    let mut live: HashMap<String, (usize, usize)> = HashMap::new();
    for x in s.store.list_sessions(None).await? {
        if x.revoked_at.is_none() && x.expires_at > now {
            let e = live.entry(kubehero_core::subject_key(x.issuer.as_deref(), &x.sub)).or_default();
            match x.kind {
                kubehero_store::SessionKind::Session => e.0 += 1,
                kubehero_store::SessionKind::CliToken => e.1 += 1,
            }
        }
    }
    let mut keys: HashMap<String, usize> = HashMap::new();
    for k in s.store.list_api_keys(None).await? {
        if k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now) {
            *keys.entry(k.owner).or_default() += 1;
        }
    }
    let rows: Vec<String> = users
        .iter()
        .map(|u| {
            let standing = if u.deleted_at.is_some() {
                "deleted"
            } else if u.active {
                "active"
            } else {
                "inactive"
            };
            let groups = groups_of.get(&u.id).cloned().unwrap_or_default();
            let (issuer, sub) = match u.subject.as_deref() {
                Some(k) => kubehero_core::split_subject_key(k),
                None => (None, ""),
            };
            let grants = s.identity.bindings.grants_for(&Facts {
                issuer,
                sub,
                email: u.emails.first().map(String::as_str),
                groups: &groups,
                legacy_roles: &[],
            });
            let key = u.subject.clone().unwrap_or_default();
            let (sessions, cli) = live.get(&key).copied().unwrap_or_default();
            let creds =
                format!("{sessions} sessions, {cli} CLI tokens, {} API keys", keys.get(&key).copied().unwrap_or(0));
            cells(&[
                u.user_name.clone(),
                u.emails.join(", "),
                standing.into(),
                format!("{:?}", u.origin).to_lowercase(),
                groups.join(", "),
                grants_text(&grants),
                creds,
            ])
        })
        .collect();
    let people = table(
        "people",
        &["User", "Emails", "Standing", "From", "Groups", "Roles", "Credentials"],
        &rows,
        "Nobody yet: people appear when the IdP provisions them (SCIM) or when they first sign in.",
    );
    let pages = if total > PEOPLE_PAGE {
        let last = (total - 1) / PEOPLE_PAGE;
        let prev = if n > 0 { format!("<a href=\"/ui/people?page={}\">Previous</a> ", n - 1) } else { String::new() };
        let next = if n < last { format!("<a href=\"/ui/people?page={}\">Next</a>", n + 1) } else { String::new() };
        format!("<p>Page {} of {}. {prev}{next}</p>", n + 1, last + 1)
    } else {
        String::new()
    };
    let (_, groups) = s.store.select_groups(GroupSelect::All, 0, 200).await?;
    let mut group_rows = Vec::new();
    for g in &groups {
        let members = s.store.group_members(&g.id).await?.len();
        group_rows.push(cells(&[g.display_name.clone(), members.to_string(), when(Some(g.updated_at))]));
    }
    let groups = table("groups", &["Group", "Members", "Updated"], &group_rows, "No groups.");
    let body = format!("<p class=\"hint\">{total} people.</p>{people}{pages}<h2>Groups</h2>{groups}");
    page(&s, &p, &session, Section::People, "People and groups", &body).await
}

/// `GET /ui/bindings`: every role binding (the config file's and the database's); owners add and delete them.
pub async fn bindings(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let (p, session) = match signed_in(&s, &headers, "/ui/bindings").await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    let owner = kubehero_core::authorize(&p, Action::RoleBindingCreate, Target::NONE).is_allowed();
    let subject = |b: &kubehero_core::Binding| match &b.subject {
        kubehero_core::BindingSubject::User(u) => format!("user {u}"),
        kubehero_core::BindingSubject::Group(g) => format!("group {g}"),
    };
    let mut rows: Vec<String> = s
        .identity
        .bindings
        .file_bindings()
        .iter()
        .map(|b| {
            cells(&[
                subject(b),
                b.role.to_string(),
                scope_text(&b.scope),
                "—".into(),
                "config file".into(),
                String::new(),
            ])
        })
        .collect();
    let from = super::clusters::sources(&s).await?;
    let now = s.clock.now();
    for b in s.store.list_bindings().await? {
        if b.expires_at.is_some_and(|e| e <= now) {
            continue;
        }
        let delete = if owner {
            format!(
                "<form data-api=\"DELETE /api/v1/role-bindings/{id}\" data-then=\"reload\"><button type=\"submit\" \
                 class=\"secondary\" aria-label=\"Delete binding {id}\">Delete</button><span class=\"out\" data-out>\
                 </span></form>",
                id = esc(&b.id)
            )
        } else {
            String::new()
        };
        let source = from.get(&b.id).copied().unwrap_or("role binding");
        rows.push(format!(
            "<tr data-binding=\"{id}\"><td>{who}</td><td>{role}</td><td>{scope}</td><td>{until}</td><td>{source} by {by}\
             </td><td>{delete}</td></tr>",
            id = esc(&b.id),
            who = esc(&subject(&b.binding)),
            role = b.binding.role,
            scope = esc(&scope_text(&b.binding.scope)),
            until = when(b.expires_at),
            by = esc(&b.created_by),
        ));
    }
    let list = table("bindings", &["Who", "Role", "Where", "Until", "From", ""], &rows, "No role bindings.");
    let add = if owner {
        format!(
            "<h2>Add a role binding</h2><form class=\"stack\" id=\"add-binding\" data-api=\"POST /api/v1/role-bindings\" \
             data-then=\"reload\"><label for=\"b-kind\">Subject kind</label><select id=\"b-kind\" name=\"subject.kind\">\
             <option>user</option><option>group</option></select><label for=\"b-name\">User (email or subject) or \
             group name</label><input id=\"b-name\" name=\"subject.name\" required autocomplete=\"off\">\
             <label for=\"b-role\">Role</label><select id=\"b-role\" name=\"role\">{roles}</select>\
             <label for=\"b-cluster\">Cluster or glob (empty: every cluster)</label><input id=\"b-cluster\" \
             name=\"cluster\" autocomplete=\"off\"><label for=\"b-ns\">Namespace (needs a cluster)</label>\
             <input id=\"b-ns\" name=\"namespace\" autocomplete=\"off\"><button type=\"submit\">Add</button>\
             <div class=\"out\" data-out aria-live=\"polite\"></div></form>",
            roles = super::role_options("viewer"),
        )
    } else {
        format!(
            "<p class=\"hint\" id=\"bindings-hidden\">Adding and deleting role bindings needs the owner role; you are \
             {}.</p>",
            esc(p.display_role().as_str())
        )
    };
    page(&s, &p, &session, Section::Bindings, "Role bindings", &format!("{list}{add}")).await
}

/// Hides a URL's user information and query (a webhook URL may carry a token there).
fn redact_url(u: &str) -> String {
    let u = u.split(['?', '#']).next().unwrap_or(u);
    match (u.find("://"), u.rfind('@')) {
        (Some(i), Some(at)) if at > i => format!("{}***{}", &u[..i + 3], &u[at..]),
        _ => u.to_string(),
    }
}

/// `GET /ui/settings`: the issuers and their health, the group → role map, SCIM, the audit forwarders and the
/// settings documents (secrets shown as `***`); owners edit the access policies.
pub async fn settings(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let (p, session) = match signed_in(&s, &headers, "/ui/settings").await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    if !reads_settings(&p) {
        return hidden(&s, &p, &session, Section::Settings, "Settings").await;
    }
    let issuers: Vec<String> = s
        .identity
        .verifier
        .health()
        .into_iter()
        .map(|h| {
            cells(&[
                h.issuer.clone(),
                if h.healthy { "healthy".into() } else { "unhealthy".into() },
                h.keys.to_string(),
                when(h.last_success_unix),
                h.last_error.clone().unwrap_or_default(),
            ])
        })
        .collect();
    let issuers = table("issuers", &["Issuer", "State", "Keys", "Last fetched", "Last error"], &issuers, "No issuers.");
    let map: Vec<String> = s
        .identity
        .bindings
        .group_mappings()
        .into_iter()
        .map(|(g, r, iss)| cells(&[g, r.to_string(), iss.unwrap_or_else(|| "every issuer".into())]))
        .collect();
    let map = table("group-roles", &["Group", "Role", "Issuer"], &map, "No group mappings (KUBEHERO_GROUP_ROLES).");
    let scim = match (&s.identity.scim, &s.public_url) {
        (Some(_), Some(u)) => format!(
            "On, at <code>{}/scim/v2</code>; the IdP's token is set (never shown).",
            esc(u.trim_end_matches('/'))
        ),
        (Some(_), None) => "On, at <code>/scim/v2</code>; the IdP's token is set (never shown).".into(),
        (None, _) => "Off (set KUBEHERO_SCIM_TOKEN to let the IdP provision people).".into(),
    };
    let sinks: Vec<String> = s
        .forward
        .snapshot()
        .into_iter()
        .map(|x| cells(&[redact_url(&x.name), x.lag_rows.to_string(), x.last_error.unwrap_or_default()]))
        .collect();
    let sinks = table(
        "forwarders",
        &["Sink", "Rows behind", "Last error"],
        &sinks,
        "No audit forwarders (KUBEHERO_AUDIT_FORWARD).",
    );
    let docs: Vec<String> = s
        .store
        .list_settings()
        .await?
        .into_iter()
        .map(|(k, v)| {
            let text = serde_json::to_string_pretty(&crate::routes::settings::redact(&v)).unwrap_or_default();
            format!("<h3>{}</h3><pre>{}</pre>", esc(&k), esc(&text))
        })
        .collect();
    let access = if kubehero_core::authorize(&p, Action::SettingsWrite, Target::NONE).is_allowed() {
        let current = s.store.get_setting("access").await?.unwrap_or_else(|| serde_json::json!({ "policies": [] }));
        format!(
            "<h2>Access policies</h2><form class=\"stack\" id=\"access-policies\" data-api=\"PUT /api/v1/settings/access\" \
             data-then=\"reload\"><p class=\"hint\">For clusters matching a glob: the longest elevation \
             (max_duration_secs), who among the scope's admins and owners approves (approvers: emails, \
             group:&lt;name&gt;), and how many must (approvals: 1 or 2).</p><label for=\"access-doc\">Policies (JSON)\
             </label><textarea id=\"access-doc\" name=\"policies\" data-type=\"json\" rows=\"8\">{}</textarea>\
             <button type=\"submit\">Save</button><div class=\"out\" data-out aria-live=\"polite\"></div></form>",
            esc(&serde_json::to_string_pretty(&current["policies"]).unwrap_or_else(|_| "[]".into()))
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h2>Issuers</h2>{issuers}<h2>Group → role map</h2>{map}<h2>SCIM</h2><p id=\"scim\">{scim}</p>\
         <h2>Audit forwarders</h2>{sinks}<h2>Settings documents</h2>{docs}{access}",
        docs = if docs.is_empty() { "<p class=\"muted\">None set.</p>".to_string() } else { docs.concat() },
    );
    page(&s, &p, &session, Section::Settings, "Settings", &body).await
}
