//! The dashboard: pages rendered on the server, one stylesheet and one small script embedded in the binary
//! (no JavaScript build step, no CDN). Every page is for a signed-in person (a dashboard session; without one
//! it sends the browser to sign in and come back) and shows only what that person's role allows, saying so
//! where something is hidden. Writes go from the page's forms to the JSON API with the session's CSRF token
//! (`app.js`), so the API's authorization, validation and audit rows are the only ones there are. Every HTML
//! answer carries a strict Content-Security-Policy (no inline script or style) and refuses framing.

pub mod access;
pub mod audit;
pub mod clusters;
pub mod credentials;
pub mod directory;
pub mod policies;

use crate::error::ApiResult;
use crate::login::{esc, read_cookie, urlencode, SESSION_COOKIE};
use crate::state::AppState;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kubehero_core::Principal;
use kubehero_store::SessionRecord;
use std::sync::Arc;

const CSS: &str = include_str!("app.css");
const JS: &str = include_str!("app.js");

/// The policy of every HTML answer: nothing but this origin's stylesheet, script and API; no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Adds the browser-hardening headers to an HTML answer (every page of every surface).
pub fn harden(res: &mut Response) {
    let html =
        res.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html"));
    if !html {
        return;
    }
    let h = res.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if !h.contains_key("referrer-policy") {
        h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    }
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

/// `GET /ui/app.css`.
pub async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

/// `GET /ui/app.js`.
pub async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

/// The signed-in person of a page, or the answer that signs them in and comes back to `here`.
pub async fn signed_in(
    s: &AppState,
    headers: &HeaderMap,
    here: &str,
) -> Result<(Principal, Arc<SessionRecord>), Response> {
    let session = match read_cookie(headers, SESSION_COOKIE) {
        Some(secret) => s.identity.session(secret).await.ok(),
        None => None,
    };
    session.ok_or_else(|| {
        let mut r = StatusCode::SEE_OTHER.into_response();
        let to = format!("/login?return_to={}", urlencode(here));
        r.headers_mut().insert(LOCATION, HeaderValue::from_str(&to).unwrap_or(HeaderValue::from_static("/login")));
        r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    })
}

/// The dashboard's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Home,
    Clusters,
    Access,
    Policies,
    Audit,
    Credentials,
    People,
    Bindings,
    Settings,
}

const NAV: [(Section, &str, &str); 9] = [
    (Section::Home, "/", "Home"),
    (Section::Clusters, "/ui/clusters", "Clusters"),
    (Section::Access, "/ui/access", "Access"),
    (Section::Policies, "/ui/policies", "Policies"),
    (Section::Audit, "/ui/audit", "Audit"),
    (Section::Credentials, "/ui/credentials", "Credentials"),
    (Section::Bindings, "/ui/bindings", "Role bindings"),
    (Section::People, "/ui/people", "People"),
    (Section::Settings, "/ui/settings", "Settings"),
];

/// A whole dashboard page: the navigation, who is signed in (with sign-out), the break-glass banner, `body`.
pub async fn page(
    s: &AppState,
    p: &Principal,
    session: &SessionRecord,
    section: Section,
    title: &str,
    body: &str,
) -> ApiResult<Response> {
    let csrf = session.csrf.as_deref().unwrap_or_default();
    let banner = crate::routes::breakglass::banner(s, p, csrf).await;
    let may = |a| kubehero_core::authorize(p, a, kubehero_core::Target::NONE).is_allowed();
    let (audits, settings) = (may(kubehero_core::Action::AuditRead), may(kubehero_core::Action::SettingsRead));
    let nav: String = NAV
        .iter()
        // The audit log, people and settings are for auditors and owners: others do not get the links (the pages
        // say why).
        .filter(|(sec, _, _)| match sec {
            Section::Audit => audits,
            Section::People | Section::Settings => settings,
            _ => true,
        })
        .map(|(sec, href, label)| {
            let current = if *sec == section { " aria-current=\"page\"" } else { "" };
            format!("<li><a href=\"{href}\"{current}>{label}</a></li>")
        })
        .collect();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · KubeHero</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"csrf-token\" content=\"{csrf}\"><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/ui/app.css\">\
         <script src=\"/ui/app.js\" defer></script></head><body><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><nav aria-label=\"Main\"><a class=\"brand\" href=\"/\">KubeHero</a><ul>{nav}</ul>\
         <span class=\"me\">{me} · {role}</span><form method=\"post\" action=\"/api/auth/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" class=\"secondary\" \
         id=\"logout\">Sign out</button></form></nav></header>{banner}<main id=\"main\"><h1>{title}</h1>{body}</main>\
         </body></html>",
        title = esc(title),
        csrf = esc(csrf),
        me = esc(p.email.as_deref().unwrap_or(&p.sub)),
        role = esc(p.display_role().as_str()),
        banner = if banner.is_empty() { String::new() } else { format!("<div class=\"alert\">{banner}</div>") },
    );
    Ok(html_response(StatusCode::OK, html))
}

/// An HTML answer that is never cached.
pub fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Where a grant or binding applies, in words.
pub fn scope_text(scope: &kubehero_core::Scope) -> String {
    match scope {
        kubehero_core::Scope::Global => "every cluster".into(),
        kubehero_core::Scope::Cluster { cluster } => format!("cluster {cluster}"),
        kubehero_core::Scope::Namespace { cluster, namespace } => format!("namespace {namespace} of {cluster}"),
    }
}

/// A table row of escaped text cells.
pub fn cells(row: &[String]) -> String {
    format!("<tr>{}</tr>", row.iter().map(|c| format!("<td>{}</td>", esc(c))).collect::<String>())
}

/// Unix seconds as RFC 3339, or `—`.
pub fn when(t: Option<i64>) -> String {
    t.map_or_else(|| "—".to_string(), crate::routes::rfc3339)
}

/// An `<option>` list of the five roles, `selected` preselected.
pub fn role_options(selected: &str) -> String {
    kubehero_core::Role::ALL
        .iter()
        .map(|r| {
            let sel = if r.as_str() == selected { " selected" } else { "" };
            format!("<option value=\"{0}\"{sel}>{0}</option>", r.as_str())
        })
        .collect()
}

/// A table with a header row and `rows` (already HTML), or `empty` when there are none.
pub fn table(id: &str, headers: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"muted\" id=\"{id}-empty\">{}</p>", esc(empty));
    }
    let head: String = headers.iter().map(|h| format!("<th scope=\"col\">{}</th>", esc(h))).collect();
    format!(
        "<div class=\"table\"><table id=\"{id}\"><thead><tr>{head}</tr></thead><tbody>{}</tbody></table></div>",
        rows.concat()
    )
}
