//! The Credentials page: my API keys (owners: everyone's) with create-shown-once and revoke, and my dashboard
//! sessions and CLI tokens with revoke.

use super::{page, signed_in, table, when, Section};
use crate::error::ApiResult;
use crate::login::esc;
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use kubehero_core::{Action, Role, Target};

/// `GET /ui/credentials`.
pub async fn page_of_credentials(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let (p, session) = match signed_in(&s, &headers, "/ui/credentials").await {
        Ok(x) => x,
        Err(r) => return Ok(r),
    };
    let me = p.subject_key();
    let everyone = p.holds_globally(Role::Owner);
    let keys = s.store.list_api_keys(if everyone { None } else { Some(&me) }).await?;
    let now = s.clock.now();
    let rows: Vec<String> = keys
        .iter()
        .map(|k| {
            let state = if k.revoked_at.is_some() {
                "revoked"
            } else if k.expires_at.is_some_and(|e| e <= now) {
                "expired"
            } else {
                "active"
            };
            let revoke = if state == "active"
                && kubehero_core::authorize(&p, Action::ApiKeyRevoke, Target::NONE.owned(k.owner == me)).is_allowed()
            {
                format!(
                    "<form data-api=\"DELETE /api/v1/api-keys/{id}\" data-then=\"reload\"><button type=\"submit\" \
                     class=\"secondary\" aria-label=\"Revoke key {name}\">Revoke</button><span class=\"out\" data-out>\
                     </span></form>",
                    id = esc(&k.id),
                    name = esc(&k.name)
                )
            } else {
                String::new()
            };
            format!(
                "<tr data-key=\"{id}\"><td>{name}</td><td><code>{id}</code></td><td>{role}</td><td>{owner}</td>\
                 <td>{state}</td><td>{expires}</td><td>{revoke}</td></tr>",
                id = esc(&k.id),
                name = esc(&k.name),
                role = esc(k.role.as_str()),
                owner = esc(&k.owner),
                expires = when(k.expires_at),
            )
        })
        .collect();
    let scope = if everyone { "Every API key (you are an owner)." } else { "Your API keys." };
    let keys = table("api-keys", &["Name", "Id", "Role", "Owner", "State", "Expires", ""], &rows, "No API keys.");
    let create = if kubehero_core::authorize(&p, Action::ApiKeyCreate, Target::NONE).is_allowed() {
        let roles: String = Role::ALL
            .iter()
            .filter(|r| p.holds_globally(**r))
            .map(|r| format!("<option>{}</option>", r.as_str()))
            .collect();
        format!(
            "<h3>Create an API key</h3><form class=\"stack\" id=\"create-key\" data-api=\"POST /api/v1/api-keys\" \
             data-show=\"key\" data-note=\"The key is shown only now: store it in your secret manager.\">\
             <label for=\"key-name\">Name</label><input id=\"key-name\" name=\"name\" required maxlength=\"128\" \
             autocomplete=\"off\"><label for=\"key-role\">Role (at most yours)</label>\
             <select id=\"key-role\" name=\"role\">{roles}</select><label for=\"key-days\">Expires in (days)</label>\
             <input id=\"key-days\" name=\"expires_in_days\" type=\"number\" min=\"1\" max=\"365\" value=\"90\" \
             data-type=\"number\"><button type=\"submit\">Create key</button>\
             <div class=\"out\" id=\"create-key-out\" data-out aria-live=\"polite\"></div></form>"
        )
    } else {
        format!(
            "<p class=\"hint\" id=\"create-key-hidden\">Creating API keys needs the member role; you are {}.</p>",
            esc(p.display_role().as_str())
        )
    };
    let mut mine = s.store.list_sessions(Some(&p.sub)).await?;
    mine.retain(|x| x.issuer == p.issuer);
    let sessions: Vec<String> = mine
        .iter()
        .map(|x| {
            let live = x.revoked_at.is_none() && x.expires_at > now;
            let this = x.id == session.id;
            let revoke = if live && !this {
                format!(
                    "<form data-api=\"DELETE /api/v1/auth/sessions/{id}\" data-then=\"reload\"><button type=\"submit\" \
                     class=\"secondary\" aria-label=\"Revoke {id}\">Revoke</button><span class=\"out\" data-out>\
                     </span></form>",
                    id = esc(&x.id)
                )
            } else if this {
                "this session (sign out to end it)".to_string()
            } else {
                String::new()
            };
            format!(
                "<tr><td>{kind}</td><td>{created}</td><td>{seen}</td><td>{expires}</td><td>{state}</td>\
                 <td>{agent}</td><td>{revoke}</td></tr>",
                kind = esc(x.kind.as_str()),
                created = when(Some(x.created_at)),
                seen = when(Some(x.last_seen_at)),
                expires = when(Some(x.expires_at)),
                state = if x.revoked_at.is_some() {
                    "revoked"
                } else if live {
                    "live"
                } else {
                    "ended"
                },
                agent = esc(x.user_agent.as_deref().unwrap_or("—")),
            )
        })
        .collect();
    let sessions = table(
        "sessions",
        &["Kind", "Signed in", "Last seen", "Ends", "State", "Client", ""],
        &sessions,
        "No sessions.",
    );
    let body = format!(
        "<h2>API keys</h2><p class=\"hint\">{scope}</p>{keys}{create}\
         <h2>Sessions and CLI tokens</h2><p class=\"hint\">Your dashboard sessions and the CLI tokens of \
         <code>kubehero login</code>.</p>{sessions}"
    );
    page(&s, &p, &session, Section::Credentials, "Credentials", &body).await
}
