//! What every request goes through: the bearer token looked up (once), a time limit, one log line (method,
//! route, status, time, token name — never the token, a key or a query's values), the latency metric, and
//! a JSON 500 for a panic. The [`Auth`] extractor then gives a handler its caller, or answers 401.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::store::AuditEntry;
use super::tokens::{Caller, Scope};
use super::App;

/// The token check's result, kept in the request's extensions for [`Auth`].
#[derive(Debug, Clone)]
enum Presented {
    None,
    Wrong,
    Known(Caller),
}

/// Looks the token up, bounds the time to a response, logs one line and records the latency.
pub async fn around(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let presented = presented(&app, &req);
    let caller_name = match &presented {
        Presented::Known(c) => c.name.clone(),
        Presented::Wrong => "(wrong token)".into(),
        Presented::None => "-".into(),
    };
    req.extensions_mut().insert(presented);
    let limit = Duration::from_secs_f64(app.settings.config.request_timeout);
    let response = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request took longer than {} s (request_timeout)",
                app.settings.config.request_timeout
            ),
        )
        .into_response(),
    };
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    app.metrics.request(&method, &route, status, seconds);
    tracing::info!(
        method = %method,
        path = %path,
        status,
        ms = (seconds * 1000.0).round() as u64,
        token = %caller_name,
        "request"
    );
    response
}

fn presented(app: &App, req: &Request) -> Presented {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Presented::None;
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match token.and_then(|t| app.tokens.check(t)) {
        Some(caller) => Presented::Known(caller),
        None => Presented::Wrong,
    }
}

/// A handler's caller: a request without a token, or with a wrong one, is answered 401 here.
#[derive(Debug, Clone)]
pub struct Auth(pub Caller);

impl FromRequestParts<Arc<App>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Auth, ApiError> {
        let (code, message) = match parts.extensions.get::<Presented>() {
            Some(Presented::Known(caller)) => return Ok(Auth(caller.clone())),
            Some(Presented::Wrong) => ("wrong", "the bearer token is not valid"),
            _ => (
                "missing",
                "this request needs a bearer token: Authorization: Bearer <token>",
            ),
        };
        app.store.audit(&AuditEntry {
            action: format!("auth.denied {} {}", parts.method, route_of(parts)),
            result: format!("unauthorized ({code} token)"),
            http_status: Some(401),
            ..AuditEntry::default()
        });
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            message,
        ))
    }
}

fn route_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<MatchedPath>()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned())
}

impl Auth {
    /// Answers 403 (and audits it) unless the token has `scope`.
    pub fn require(&self, app: &App, scope: Scope, action: &str) -> Result<(), ApiError> {
        if self.0.may(scope) {
            return Ok(());
        }
        app.store.audit(&AuditEntry {
            token: Some(self.0.name.clone()),
            user_id: self.0.user.clone(),
            action: action.to_owned(),
            result: format!("forbidden (needs scope {})", scope.name()),
            http_status: Some(403),
            ..AuditEntry::default()
        });
        Err(ApiError::forbidden(format!(
            "this token lacks the {} scope this request needs",
            scope.name()
        )))
    }
}

/// A panic inside a handler becomes a JSON 500; its text goes to the log only.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    ApiError::internal(format!("a request handler panicked: {what}")).into_response()
}
