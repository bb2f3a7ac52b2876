//! The one point every request passes through: it assigns the request id (`X-Request-Id`, echoed on every
//! response and put into error bodies), counts the request, and makes every error answer — ours, axum's
//! rejections, fallbacks — carry the `{"code","message","request_id"}` shape, and writes the request's
//! audit row (see [`crate::audit`]) before the response leaves.

use crate::error::{render, ApiError, Code};
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Marks an error response whose body follows another protocol's error format (RFC 8628/6749
/// `{"error": …}` for the device flow) and must not be rewritten into ours.
#[derive(Debug, Clone, Copy)]
pub struct ForeignErrorBody;

/// The request id of the current request, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Accepts a caller's id when it is short and plain (a load balancer's), otherwise makes a new one.
fn request_id(state: &AppState, req: &Request) -> String {
    if let Some(v) = req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
        if !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
            return v.to_string();
        }
    }
    state.identity.ids.next_id()
}

/// Request id, metrics and error shape.
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = request_id(&state, &req);
    req.extensions_mut().insert(RequestId(id.clone()));
    if let Some(peer) = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip()) {
        let client = state.trusted_proxies.client(peer, req.headers());
        req.extensions_mut().insert(crate::net::ClientAddr(client));
    }
    let method = req.method().as_str().to_string();
    let facts = crate::audit::RequestFacts::of(&req);
    let scim = req.uri().path().starts_with("/scim/");
    let read = matches!(req.method(), &Method::GET | &Method::HEAD);
    // Only a body that is still to come can stall (a GET has none: no wrapper, no allocation).
    let req = if http_body::Body::is_end_stream(req.body()) {
        req
    } else {
        let idle = state.limits.header_timeout;
        req.map(|body| axum::body::Body::new(crate::listener::StallGuard::new(body, idle)))
    };
    let refused = oversized(&req).or_else(|| {
        odd_uri(req.uri()).then_some((
            axum::http::StatusCode::BAD_REQUEST,
            "the URL holds a control character or a bidirectional formatting character (decoded); ids and query \
             values may not contain them",
        ))
    });
    let mut res = match refused {
        // Under /scim in SCIM's error schema, like every SCIM answer.
        Some((status, message)) if scim => {
            let e = kubehero_scim::ScimError { status: status.as_u16(), scim_type: None, detail: message.into() };
            crate::scim::Failure(e).into_response()
        }
        Some((status, message)) => {
            let mut res = ApiError::new(Code::from_status(status), message).into_response();
            *res.status_mut() = status;
            res
        }
        None => next.run(req).await,
    };
    let event = crate::audit::event_for(&res, facts, &id, state.identity.ids.next_id(), state.clock.now_ms());
    if let Some(event) = event.filter(|e| state.sampler.admit(e)) {
        // Durable before the answer, except plain reads under KUBEHERO_AUDIT_READS=async|off.
        let recorded = match crate::audit::durability(&res, &event, read, state.audit_reads) {
            Some(wait) => state.identity.record(event, wait).await,
            None => Ok(()),
        };
        if let Err(e) = recorded {
            state.metrics.audit_refused();
            tracing::error!(error = %e, request_id = %id, "refusing a request whose audit row could not be written");
            let message = "the audit log cannot be written; the request was not answered";
            res = if scim {
                // SCIM clients get SCIM's error schema, like every other SCIM answer.
                crate::scim::Failure(kubehero_scim::ScimError { status: 503, scim_type: None, detail: message.into() })
                    .into_response()
            } else {
                ApiError::new(Code::Unavailable, message).into_response()
            };
        }
    }
    let route = res
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let status = res.status();
    if (status.is_client_error() || status.is_server_error()) && res.extensions().get::<ForeignErrorBody>().is_none() {
        let (code, message) = match res.extensions().get::<ApiError>() {
            Some(e) => (e.code, e.message.clone()),
            None => {
                let code = Code::from_status(status);
                (code, status.canonical_reason().unwrap_or("error").to_lowercase())
            }
        };
        let ext = std::mem::take(res.extensions_mut());
        let mut rendered = render(code, &message, &id);
        *rendered.status_mut() = status;
        *rendered.extensions_mut() = ext;
        for (k, v) in res.headers() {
            if k != axum::http::header::CONTENT_LENGTH && !rendered.headers().contains_key(k) {
                rendered.headers_mut().insert(k.clone(), v.clone());
            }
        }
        res = rendered;
    }
    crate::ui::harden(&mut res);
    state.metrics.http_request(&method, &route, res.status().as_u16());
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    res
}

/// The listener's head limits for requests it did not check itself (later requests on a kept-alive HTTP/1
/// connection, HTTP/2 streams): the same answers, 414 and 431.
fn oversized(req: &Request) -> Option<(axum::http::StatusCode, &'static str)> {
    use crate::listener::{MAX_HEAD, MAX_HEADERS, MAX_URI};
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > MAX_URI {
        return Some((axum::http::StatusCode::URI_TOO_LONG, "the request URL is longer than 16 KiB"));
    }
    let headers = req.headers();
    let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEAD {
        let message = if headers.len() > MAX_HEADERS {
            "more than 100 request headers"
        } else {
            "the request headers are larger than 64 KiB"
        };
        return Some((axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, message));
    }
    None
}

/// Whether the path or a query value, percent-decoded, holds a [`kubehero_core::names::odd_char`]: such a
/// value can name nothing, and a NUL would reach the database.
fn odd_uri(uri: &axum::http::Uri) -> bool {
    let odd = |bytes: &[u8]| kubehero_core::names::odd_char(&String::from_utf8_lossy(bytes)).is_some();
    if uri.path().contains('%') && odd(&percent_decode(uri.path().as_bytes())) {
        return true;
    }
    uri.query()
        .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, v)| odd(k.as_bytes()) || odd(v.as_bytes())))
}

/// `%XX` escapes decoded (anything malformed left as it is).
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hex =
            s.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (s[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Runs after routing: copies the matched route template into the response so [`observe`] can label metrics
/// with `/api/v1/clusters/{name}` rather than with every cluster's name.
pub async fn tag_route(req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let mut res = next.run(req).await;
    if let Some(m) = matched {
        res.extensions_mut().insert(m);
    }
    res
}
