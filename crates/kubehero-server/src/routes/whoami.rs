//! `GET /api/v1/whoami`.

use crate::auth::{allow, Auth};
use crate::error::ApiResult;
use axum::response::IntoResponse;
use kubehero_core::principal::{AuthMethod, PrincipalKind};
use kubehero_core::{Action, Role, Target};
use serde::Serialize;

/// The answer, serialised straight from the principal (no intermediate JSON tree: this is the hottest
/// authenticated read). Fields in alphabetical order, as the API has always sent them.
#[derive(Serialize)]
struct WhoAmI<'a> {
    auth_method: AuthMethod,
    email: Option<&'a str>,
    groups: &'a [String],
    issuer: Option<&'a str>,
    kind: PrincipalKind,
    role: Role,
    roles: Vec<Role>,
    scoped_roles: Vec<ScopedRole<'a>>,
    sub: &'a str,
}

/// A grant limited to a cluster or a namespace.
#[derive(Serialize)]
struct ScopedRole<'a> {
    cluster: Option<&'a str>,
    namespace: Option<&'a str>,
    role: Role,
}

/// `GET /api/v1/whoami` — permission: `whoami` (every principal holds it through `viewer`).
/// Returns `{"sub","email","groups","roles","role","auth_method"}` plus the kind, issuer and scoped grants.
pub async fn whoami(Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::WhoAmI, Target::NONE)?;
    let scoped_roles = p
        .scoped_grants()
        .map(|g| ScopedRole { cluster: g.scope.cluster(), namespace: g.scope.namespace(), role: g.role })
        .collect();
    Ok(axum::Json(WhoAmI {
        auth_method: p.auth_method,
        email: p.email.as_deref(),
        groups: &p.groups,
        issuer: p.issuer.as_deref(),
        kind: p.kind,
        role: p.display_role(),
        roles: p.roles(),
        scoped_roles,
        sub: &p.sub,
    })
    .into_response())
}
