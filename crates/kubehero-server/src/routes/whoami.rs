//! `GET /api/v1/whoami`.

use crate::auth::{allow, Auth};
use crate::error::ApiResult;
use axum::response::IntoResponse;
use kubehero_core::{Action, Target};
use kubehero_identity::grants::scope_json;
use serde_json::json;

/// `GET /api/v1/whoami` — permission: `whoami` (every principal holds it through `viewer`).
/// Returns `{"sub","email","groups","roles","role","auth_method"}` plus the kind, issuer and scoped grants.
pub async fn whoami(Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::WhoAmI, Target::NONE)?;
    let scoped: Vec<_> = p
        .scoped_grants()
        .map(|g| {
            let mut v = scope_json(&g.scope);
            v["role"] = json!(g.role);
            v
        })
        .collect();
    Ok(axum::Json(json!({
        "sub": p.sub,
        "email": p.email,
        "groups": p.groups,
        "roles": p.roles(),
        "role": p.display_role(),
        "auth_method": p.auth_method,
        "kind": p.kind,
        "issuer": p.issuer,
        "scoped_roles": scoped,
    })))
}
