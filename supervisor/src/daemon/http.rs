//! The HTTP/JSON door (axum): `/api/v1/...` for every operation of the service layer,
//! `/api/v1/events` as server-sent events, `/openapi.json`, `/metrics`. A thin adapter: it
//! parses the request into a `service::Call`, names the caller and hands the call to the
//! daemon's loop, which alone owns the agents (as the control socket's lines do).
//!
//! Two listeners: a Unix socket beside the control socket, admitted on the control socket's
//! terms (root or the control group, never from inside an agent), and TCP with a bearer
//! token (`--http ADDR --http-token-file FILE`).

use std::{
    collections::HashMap,
    net::SocketAddr,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequestParts, Path as UrlPath, Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response, sse},
    routing::{get, post},
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt as _;

use super::dashboard;
use super::door::{Asked, Door};
use crate::service::{self, ApiError, Call, Caller, ErrorKind};

/// How a connection was admitted.
#[derive(Clone, Debug)]
pub enum Peer {
    /// TCP: the bearer token is checked per request.
    Tcp,
    /// The Unix socket: the peer's credentials, or why it is refused.
    Unix(Result<Caller, String>),
}

/// `--http-token-file`: the token, from a file only its owner may read.
pub fn read_token(path: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|error| format!("--http-token-file {}: {error}", path.display()))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "--http-token-file {}: mode {mode:04o} lets others read the token; chmod 600 it",
            path.display()
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if metadata.uid() != euid {
        return Err(format!(
            "--http-token-file {}: owned by uid {}, not by governor (uid {euid})",
            path.display(),
            metadata.uid()
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("--http-token-file {}: {error}", path.display()))?;
    let token = text.trim().to_owned();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "--http-token-file {}: the token must be one word of at least 16 characters",
            path.display()
        ));
    }
    Ok(token)
}

/// Checks `--http ADDR`: loopback only unless `allow_remote`.
pub fn check_addr(addr: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(format!(
            "--http {addr}: not a loopback address; the token would cross the network in clear (pass --http-allow-remote behind a TLS proxy)"
        ))
    }
}

/// An error as the door answers it: `{"error": ..., "field": ...}` with its status.
pub struct Refusal(pub ApiError);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": self.0.error, "field": self.0.field });
        let mut response = (status, Json(body)).into_response();
        if self.0.kind == ErrorKind::Unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal(error)
    }
}

/// The caller of a request, once admitted: the socket's peer, or the token's bearer.
pub struct Authorized(pub Caller);

impl FromRequestParts<Door> for Authorized {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, door: &Door) -> Result<Authorized, Refusal> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<Peer>>().map(|info| info.0.clone());
        match peer {
            Some(Peer::Unix(Ok(caller))) => Ok(Authorized(caller)),
            Some(Peer::Unix(Err(why))) => Err(Refusal(ApiError::new(ErrorKind::Forbidden, why))),
            Some(Peer::Tcp) | None => {
                let presented = bearer(&parts.headers);
                if presented.is_none()
                    && let Some(token) = &door.token
                    && let Some(session) = session(&parts.headers, token)
                {
                    // A browser's session: what changes anything also carries the page's
                    // CSRF token, which another site cannot read.
                    let csrf = parts.headers.get(dashboard::CSRF_HEADER).and_then(|value| value.to_str().ok());
                    if !matches!(parts.method, Method::GET | Method::HEAD) && !dashboard::csrf_ok(&session, csrf) {
                        return Err(Refusal(ApiError::new(
                            ErrorKind::Forbidden,
                            "no or a wrong X-Governor-CSRF header: the dashboard's requests that change \
                             anything carry the page's token",
                        )));
                    }
                    return Ok(Authorized(Caller::Dashboard { session: session.nonce[..8].to_owned() }));
                }
                match (&door.token, presented) {
                    (Some(token), Some(presented)) if same(token.as_bytes(), presented.as_bytes()) => {
                        Ok(Authorized(Caller::Token))
                    }
                    (_, None) => Err(Refusal(ApiError::new(
                        ErrorKind::Unauthorized,
                        "no bearer token (Authorization: Bearer TOKEN)",
                    ))),
                    _ => Err(Refusal(ApiError::new(ErrorKind::Unauthorized, "wrong bearer token"))),
                }
            }
        }
    }
}

/// The dashboard session a request's cookie proves, under `token`.
fn session(headers: &HeaderMap, token: &str) -> Option<dashboard::Session> {
    let cookies = headers.get_all(header::COOKIE);
    cookies
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| dashboard::cookie(value, dashboard::COOKIE))
        .and_then(|cookie| dashboard::check(token, cookie))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

/// Compares without stopping at the first difference (the time taken does not tell how
/// much of a guess was right).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Asks the loop and renders its answer.
async fn ask(door: &Door, caller: Caller, call: Call) -> Result<Json<serde_json::Value>, Refusal> {
    let (reply, answer) = oneshot::channel();
    door.asked
        .send(Asked::Call { caller, call: Box::new(call), reply })
        .map_err(|_| ApiError::new(ErrorKind::Internal, "the daemon is stopping"))?;
    let mut value = answer.await.map_err(|_| ApiError::internal("the daemon did not answer"))??;
    if let serde_json::Value::Object(map) = &mut value {
        map.remove("ok");
    }
    Ok(Json(value))
}

/// A JSON body, with the field at fault named when it does not parse.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Refusal> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        // "missing field `x`" and "unknown field `x`" name the field in the message.
        let named = message.split('`').nth(1).filter(|_| message.contains("field `")).map(str::to_owned);
        let field = if path == "." || path.is_empty() { named.unwrap_or_else(|| "body".to_owned()) } else { path };
        Refusal(ApiError::bad(&field, format!("{field}: {message}")))
    })
}

/// Query parameters, by name: the typed filters parse each with its own field name.
type Params = HashMap<String, String>;

fn take_number<T: std::str::FromStr>(params: &mut Params, name: &str) -> Result<Option<T>, ApiError> {
    params
        .remove(name)
        .map(|text| text.parse::<T>().map_err(|_| ApiError::bad(name, format!("{name} '{text}' is not a number"))))
        .transpose()
}

fn no_more(params: &Params, known: &[&str]) -> Result<(), ApiError> {
    match params.keys().next() {
        Some(name) => Err(ApiError::bad(name, format!("unknown parameter '{name}' (known: {})", known.join(", ")))),
        None => Ok(()),
    }
}

const AUDIT_PARAMS: &[&str] = &["agent", "kind", "decision", "path", "since", "until", "limit", "after"];

fn audit_filter(mut params: Params) -> Result<service::AuditFilter, ApiError> {
    let filter = service::AuditFilter {
        agent: params.remove("agent"),
        kind: params.remove("kind"),
        decision: params.remove("decision"),
        path: params.remove("path"),
        since: params.remove("since"),
        until: params.remove("until"),
        limit: take_number(&mut params, "limit")?,
        after: take_number(&mut params, "after")?,
    };
    no_more(&params, AUDIT_PARAMS)?;
    filter.query()?;
    Ok(filter)
}

async fn health() -> Json<service::Health> {
    Json(service::health())
}

async fn status(State(door): State<Door>, Authorized(caller): Authorized) -> Result<Json<serde_json::Value>, Refusal> {
    ask(&door, caller, Call::Status).await
}

async fn agents(State(door): State<Door>, Authorized(caller): Authorized) -> Result<Json<serde_json::Value>, Refusal> {
    ask(&door, caller, Call::Agents).await
}

async fn register(
    State(door): State<Door>,
    Authorized(caller): Authorized,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, Refusal> {
    ask(&door, caller, Call::Register(body(&bytes)?)).await
}

async fn agent(
    State(door): State<Door>,
    Authorized(caller): Authorized,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, Refusal> {
    ask(&door, caller, Call::Agent { id }).await
}

/// `{"reason": ...}`, optional.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Why {
    #[serde(default)]
    reason: Option<String>,
}

async fn act(
    door: Door,
    caller: Caller,
    agent: String,
    action: service::Action,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, Refusal> {
    let why: Why = if bytes.iter().all(u8::is_ascii_whitespace) { Why::default() } else { body(&bytes)? };
    ask(&door, caller, Call::Act { agent, action, reason: why.reason }).await
}

async fn suspend(
    State(door): State<Door>,
    Authorized(caller): Authorized,
    UrlPath(id): UrlPath<String>,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, Refusal> {
    act(door, caller, id, service::Action::Suspend, bytes).await
}

async fn resume(
    State(door): State<Door>,
    Authorized(caller): Authorized,
    UrlPath(id): UrlPath<String>,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, Refusal> {
    act(door, caller, id, service::Action::Resume, bytes).await
}

async fn kill(
    State(door): State<Door>,
    Authorized(caller): Authorized,
    UrlPath(id): UrlPath<String>,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, Refusal> {
    act(door, caller, id, service::Action::Kill, bytes).await
}

async fn trace(
    State(door): State<Door>,
    Authorized(caller): Authorized,
    UrlPath(id): UrlPath<String>,
    Query(mut params): Query<Params>,
) -> Result<Json<serde_json::Value>, Refusal> {
    let after = take_number(&mut params, "after")?;
    let limit = take_number(&mut params, "limit")?;
    no_more(&params, &["after", "limit"])?;
    ask(&door, caller, Call::Trace { agent: id, after, limit }).await
}

async fn audit(
    State(door): State<Door>,
    Authorized(caller): Authorized,
    Query(params): Query<Params>,
) -> Result<Json<serde_json::Value>, Refusal> {
    ask(&door, caller, Call::Audit(audit_filter(params)?)).await
}

async fn incidents(
    State(door): State<Door>,
    Authorized(caller): Authorized,
    Query(mut params): Query<Params>,
) -> Result<Json<serde_json::Value>, Refusal> {
    let filter = service::IncidentFilter {
        agent: params.remove("agent"),
        since: params.remove("since"),
        limit: take_number(&mut params, "limit")?,
    };
    no_more(&params, &["agent", "since", "limit"])?;
    ask(&door, caller, Call::Incidents(filter)).await
}

async fn report(
    State(door): State<Door>,
    Authorized(caller): Authorized,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, Refusal> {
    ask(&door, caller, Call::Report(body(&bytes)?)).await
}

async fn validate(
    State(door): State<Door>,
    Authorized(caller): Authorized,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, Refusal> {
    ask(&door, caller, Call::Validate(body(&bytes)?)).await
}

async fn policies(
    State(door): State<Door>,
    Authorized(caller): Authorized,
) -> Result<Json<serde_json::Value>, Refusal> {
    ask(&door, caller, Call::Policies).await
}

async fn policy(
    State(door): State<Door>,
    Authorized(caller): Authorized,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, Refusal> {
    ask(&door, caller, Call::Policy { id }).await
}

async fn create_policy(
    State(door): State<Door>,
    Authorized(caller): Authorized,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, Refusal> {
    ask(&door, caller, Call::CreatePolicy(body(&bytes)?)).await
}

/// Server-sent events: one `event: audit` per audit event, `id:` its event id, so that a
/// client reconnecting with `Last-Event-ID` (or `?after=`) resumes after it.
async fn events(
    State(door): State<Door>,
    Authorized(_caller): Authorized,
    headers: HeaderMap,
    Query(mut params): Query<Params>,
) -> Result<Response, Refusal> {
    let last = headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::bad("Last-Event-ID", "Last-Event-ID is not an event id"))
        })
        .transpose()?;
    let after = take_number(&mut params, "after")?;
    let filter = service::EventFilter {
        agent: params.remove("agent"),
        kind: params.remove("kind"),
        decision: params.remove("decision"),
        path: params.remove("path"),
        after: last.or(after),
    };
    no_more(&params, &["agent", "kind", "decision", "path", "after"])?;
    filter.audit(0, 1).query()?;
    let (sender, receiver) = mpsc::channel(256);
    tokio::spawn(service::stream(door.store.clone(), filter, door.commits.clone(), sender));
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(|item| {
        Ok::<_, std::convert::Infallible>(match item {
            Ok(event) => sse::Event::default()
                .event("audit")
                .id(event.id.to_string())
                .data(serde_json::to_string(&event).unwrap_or_default()),
            Err(error) => sse::Event::default()
                .event("error")
                .data(serde_json::json!({ "error": error.error, "field": error.field }).to_string()),
        })
    });
    Ok(sse::Sse::new(stream).keep_alive(sse::KeepAlive::default()).into_response())
}

async fn metrics(State(door): State<Door>) -> Response {
    let (reply, text) = oneshot::channel();
    if door.asked.send(Asked::Metrics(reply)).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match text.await {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn metrics_authorized(State(door): State<Door>, Authorized(_caller): Authorized) -> Response {
    metrics(State(door)).await
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `/`: the dashboard for a browser with a session; `/?token=` opens one (then redirects
/// to `/`, so the token leaves the address bar); without either, how to open one.
async fn index(State(door): State<Door>, headers: HeaderMap, Query(params): Query<Params>) -> Response {
    let secure = |mut response: Response| {
        let headers = response.headers_mut();
        for (name, value) in [
            (header::CONTENT_SECURITY_POLICY, dashboard::CONTENT_SECURITY_POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    };
    let html = |status: StatusCode, body: String| {
        secure((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
    };
    let Some(token) = door.token.as_deref() else {
        // The Unix socket: no browser reaches it.
        return html(StatusCode::NOT_FOUND, dashboard::LOGIN.to_owned());
    };
    if let Some(presented) = params.get("token") {
        if !same(token.as_bytes(), presented.as_bytes()) {
            return html(StatusCode::UNAUTHORIZED, dashboard::LOGIN.to_owned());
        }
        let Some((cookie, _)) = dashboard::open(token) else {
            return html(StatusCode::INTERNAL_SERVER_ERROR, "no randomness for a session".to_owned());
        };
        let mut response = secure((StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response());
        if let Ok(value) = HeaderValue::from_str(&dashboard::set_cookie(&cookie)) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    match session(&headers, token) {
        Some(session) => html(StatusCode::OK, dashboard::page(&session)),
        None => html(StatusCode::UNAUTHORIZED, dashboard::LOGIN.to_owned()),
    }
}

async fn dashboard_script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], dashboard::SCRIPT).into_response()
}

async fn dashboard_style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], dashboard::STYLE).into_response()
}

async fn not_found() -> Refusal {
    Refusal(ApiError::new(ErrorKind::NotFound, "no such path (see /openapi.json)"))
}

/// The OpenAPI 3.1 document of this door (checked against the server by the tests).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Admits a request to `/mcp` as every other path is admitted, and hands its caller to the
/// MCP tools through the request's extensions.
async fn admit_mcp(
    State(door): State<Door>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    match Authorized::from_request_parts(&mut parts, &door).await {
        Ok(Authorized(caller)) => {
            parts.extensions.insert(caller);
            next.run(axum::extract::Request::from_parts(parts, body)).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// The door's routes.
pub fn router(door: Door) -> Router {
    let mcp = Router::new()
        .route_service("/mcp", crate::daemon::mcp::http_service(door.clone()))
        .layer(axum::middleware::from_fn_with_state(door.clone(), admit_mcp));
    Router::new()
        .merge(mcp)
        .route("/", get(index))
        .route("/dashboard/dashboard.js", get(dashboard_script))
        .route("/dashboard/dashboard.css", get(dashboard_style))
        // Browsers ask for it whatever the page says: nothing, rather than a 404 in the log.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/v1/health", get(health))
        .route("/api/v1/status", get(status))
        .route("/api/v1/agents", get(agents).post(register))
        .route("/api/v1/agents/{id}", get(agent))
        .route("/api/v1/agents/{id}/trace", get(trace))
        .route("/api/v1/agents/{id}/suspend", post(suspend))
        .route("/api/v1/agents/{id}/resume", post(resume))
        .route("/api/v1/agents/{id}/kill", post(kill))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/incidents", get(incidents).post(report))
        .route("/api/v1/validate", post(validate))
        .route("/api/v1/policies", get(policies).post(create_policy))
        .route("/api/v1/policies/{id}", get(policy))
        .route("/api/v1/events", get(events))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics_authorized))
        .fallback(not_found)
        .with_state(door)
}

/// `--metrics ADDR`'s router: `/metrics` alone, unauthenticated, as Prometheus scrapes it.
pub fn metrics_router(door: Door) -> Router {
    Router::new().route("/metrics", get(metrics)).fallback(not_found).with_state(door)
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(_: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Peer {
        Peer::Tcp
    }
}

/// The group whose members the Unix socket admits (set once, before serving).
static CONTROL_GROUP: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();

pub fn set_control_group(group: Option<u32>) {
    let _ = CONTROL_GROUP.set(group);
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Peer {
        let admitted = match stream.io().peer_cred() {
            Ok(credentials) => {
                let peer = crate::daemon::control::Peer {
                    pid: credentials.pid().unwrap_or(0),
                    uid: credentials.uid(),
                    gid: credentials.gid(),
                };
                crate::daemon::control::admit(&peer, CONTROL_GROUP.get().copied().flatten()).map(|()| peer.caller())
            }
            Err(error) => Err(format!("no peer credentials: {error}")),
        };
        Peer::Unix(admitted)
    }
}

/// Serves `router` on TCP until the runtime stops.
pub async fn serve_tcp(listener: tokio::net::TcpListener, router: Router) {
    let service = router.into_make_service_with_connect_info::<Peer>();
    if let Err(error) = axum::serve(listener, service).await {
        tracing::error!(error = %error, "HTTP door stopped");
    }
}

/// Serves `router` on the Unix socket until the runtime stops.
pub async fn serve_unix(listener: tokio::net::UnixListener, router: Router) {
    let service = router.into_make_service_with_connect_info::<Peer>();
    if let Err(error) = axum::serve(listener, service).await {
        tracing::error!(error = %error, "HTTP door (Unix socket) stopped");
    }
}

/// The HTTP door's Unix socket for a control socket: `NAME.sock` → `NAME.http.sock`.
pub fn unix_path(control: &Path) -> PathBuf {
    control.with_extension("http.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_parses_and_names_every_route() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).unwrap_or_else(|error| panic!("{error}"));
        let paths = document["paths"].as_object().map(|paths| paths.keys().cloned().collect::<Vec<_>>());
        let paths = paths.unwrap_or_default();
        for path in [
            "/api/v1/health",
            "/api/v1/status",
            "/api/v1/agents",
            "/api/v1/agents/{id}",
            "/api/v1/agents/{id}/suspend",
            "/api/v1/audit",
            "/api/v1/incidents",
            "/api/v1/validate",
            "/api/v1/policies",
            "/api/v1/events",
        ] {
            assert!(paths.iter().any(|known| known == path), "{path} missing from openapi.json");
        }
    }

    #[test]
    fn query_parameters_are_checked_by_name() {
        let params = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let bad = audit_filter(params(&[("limit", "many")])).map_err(|error| error.field);
        assert_eq!(bad.map(|_| ()), Err(Some("limit".into())));
        let bad = audit_filter(params(&[("colour", "red")])).map_err(|error| error.field);
        assert_eq!(bad.map(|_| ()), Err(Some("colour".into())));
        let bad = audit_filter(params(&[("decision", "maybe")])).map_err(|error| error.field);
        assert_eq!(bad.map(|_| ()), Err(Some("decision".into())));
        assert!(audit_filter(params(&[("decision", "deny"), ("after", "3")])).is_ok());
    }

    #[test]
    fn bodies_name_the_field_at_fault() {
        let missing = body::<service::Validate>(&Bytes::from_static(br#"{"action_type":"open"}"#));
        assert_eq!(missing.err().map(|refusal| refusal.0.field), Some(Some("target".into())));
        let wrong = body::<service::Validate>(&Bytes::from_static(br#"{"action_type":"fly","target":"/"}"#));
        assert_eq!(wrong.err().map(|refusal| refusal.0.field), Some(Some("action_type".into())));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abcdef", b"abcdef"));
        assert!(!same(b"abcdef", b"abcdeg"));
        assert!(!same(b"abc", b"abcdef"));
    }
}
