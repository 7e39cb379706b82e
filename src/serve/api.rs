//! The routes: the guide's `/api/data-migration/…` (export, import, validate, operations, templates), plus
//! event streams, result downloads, the audit table, `/healthz`, `/metrics` and `/api/openapi.json` (this
//! file's annotations, through utoipa). Handlers check the caller's scope, turn the request into an
//! operation through [`super::plan`] and [`super::runner`], and answer with the operation's JSON.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::http::{around, panic_response, Auth};
use super::operation::{new_id, OpKind, OpState, Operation};
use super::plan::{self, ExportRequest, ImportOptions, Upload};
use super::runner::{op_dir, remove_dir};
use super::store::{AuditEntry, HistoryQuery};
use super::templates::{self, TemplateInfo};
use super::tokens::{Caller, Scope};
use super::upload;
use super::App;

/// The routes' prefix, as the guide has it.
pub const PREFIX: &str = "/api/data-migration";

/// The most a JSON body may hold.
const MAX_JSON_BODY: usize = 1 << 20;

/// Every route of the service.
pub fn router(app: Arc<App>) -> Router {
    let uploads_limit = DefaultBodyLimit::disable();
    let api = Router::new()
        .route("/export", post(export))
        .route("/import", post(import).layer(uploads_limit))
        .route("/validate", post(validate).layer(uploads_limit))
        .route("/operations/active", get(active))
        .route("/operations/history", get(history))
        .route("/operations/{id}/progress", get(progress))
        .route("/operations/{id}/cancel", post(cancel))
        .route("/operations/{id}/events", get(events))
        .route("/operations/{id}/result", get(result))
        .route("/templates", get(list_templates).post(create_template))
        .route("/templates/{id}", get(get_template))
        .route("/datasets", get(datasets))
        .route("/syncs/{name}", post(start_sync))
        .route("/audit", get(audit));
    Router::new()
        .nest(PREFIX, api)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .route("/", get(super::web::index))
        .route("/web/app.js", get(super::web::script))
        .route("/web/app.css", get(super::web::style))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), around))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(app)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    tracing::info!(path = %uri.path(), status = 404, "request");
    ApiError::not_found(format!("no route {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    tracing::info!(path = %uri.path(), status = 405, "request");
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not a method of {}", uri.path()),
    )
}

/// `?wait=SECONDS` on the routes that start operations.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct WaitQuery {
    /// Wait up to this many seconds for the operation to end before answering (default 0: answer at
    /// once with 202). An operation that ended is answered with its status: 200, or its error's (409
    /// conflict, 422 invalid data, …).
    pub wait: Option<f64>,
}

/// An operation's JSON, with the status a request that started or waited for it gets.
fn op_response(op: Operation, waited: bool) -> Response {
    let status = match (op.status, waited) {
        (OpState::Succeeded, _) => StatusCode::OK,
        (s, true) if s.is_final() => op
            .error
            .as_ref()
            .map_or(StatusCode::INTERNAL_SERVER_ERROR, |e| {
                status_of_code(&e.code)
            }),
        _ => StatusCode::ACCEPTED,
    };
    let location = format!("{PREFIX}/operations/{}/progress", op.operation_id);
    let mut body = serde_json::to_value(&op).unwrap_or_default();
    if op.kind == OpKind::Export {
        // The guide's clients read `exportId`.
        body["exportId"] = serde_json::Value::String(op.operation_id.clone());
    }
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The HTTP status of an operation's error code.
pub fn status_of_code(code: &str) -> StatusCode {
    match code {
        "conflict" | "cancelled" => StatusCode::CONFLICT,
        "invalid_data" | "invalid_configuration" | "unknown_template" => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        "interrupted" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn wait_for(
    app: &App,
    id: &str,
    seconds: Option<f64>,
) -> Result<(Operation, bool), ApiError> {
    let limit = seconds
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| s.min((app.settings.config.request_timeout - 1.0).max(0.0)));
    let Some(limit) = limit else {
        let op = app.runner.get(id)?.ok_or_else(|| ApiError::not_found(id))?;
        return Ok((op, false));
    };
    if let Some(handle) = app.runner.handle(id) {
        let mut rx = handle.state.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs_f64(limit),
            rx.wait_for(|op| op.status.is_final()),
        )
        .await;
    }
    let op = app.runner.get(id)?.ok_or_else(|| ApiError::not_found(id))?;
    Ok((op, true))
}

fn audit_request(
    app: &App,
    caller: &Caller,
    action: &str,
    op: Option<&Operation>,
    result: &str,
    status: u16,
) {
    app.store.audit(&AuditEntry {
        token: Some(caller.name.clone()),
        user_id: caller.user.clone(),
        action: action.to_owned(),
        operation_id: op.map(|o| o.operation_id.clone()),
        data_type: op.map(|o| o.data_type.clone()),
        result: result.to_owned(),
        http_status: Some(status),
        ..AuditEntry::default()
    });
}

/// Creates an operation's folder (`work/upload`, `result`).
fn make_op_dir(app: &App, id: &str) -> Result<PathBuf, ApiError> {
    let dir = op_dir(&app.settings, id);
    for sub in ["work/upload", "result"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(ApiError::internal)?;
    }
    Ok(dir)
}

/// Starts an export.
#[utoipa::path(post, path = "/api/data-migration/export", tag = "operations",
    request_body = ExportRequest, params(WaitQuery),
    responses(
        (status = 202, description = "Accepted: the operation, queued or running", body = Operation),
        (status = 200, description = "With ?wait: the operation succeeded", body = Operation),
        (status = 400, description = "Malformed JSON or an unknown option", body = ErrorBody),
        (status = 401, description = "No token or a wrong one", body = ErrorBody),
        (status = 403, description = "The token lacks the export scope, or is bound to a user the dataset cannot hold it to", body = ErrorBody),
        (status = 422, description = "Unknown dataType, format or key id; a key in the body; a filter the dataset has no field for", body = ErrorBody),
        (status = 429, description = "Too many operations queued", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody)),
    security(("bearer" = [])))]
async fn export(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(wait): Query<WaitQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    auth.require(&app, Scope::Export, "export")?;
    let body = body
        .map_err(|e| ApiError::bad_request(format!("cannot read the body: {}", e.body_text())))?;
    let req: ExportRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("the body is not a valid export request: {e}"))
    })?;
    let id = new_id();
    let dir = make_op_dir(&app, &id)?;
    let planned = match plan::export(&app.settings, &auth.0, &req, &dir) {
        Ok(p) => p,
        Err(e) => {
            remove_dir(&dir);
            audit_request(&app, &auth.0, "export", None, e.code, e.status.as_u16());
            return Err(e);
        }
    };
    let op = Operation::new(
        id.clone(),
        OpKind::Export,
        &req.data_type,
        &auth.0.name,
        auth.0.user.as_deref(),
    );
    let handle = app.runner.submit(op, planned, dir)?;
    audit_request(
        &app,
        &auth.0,
        "export",
        Some(&handle.snapshot()),
        "accepted",
        202,
    );
    let (op, waited) = wait_for(&app, &id, wait.wait).await?;
    Ok(op_response(op, waited))
}

/// Starts a sync the configuration names (`syncs:`): an operation that passes every `every` seconds
/// until it is cancelled (`POST /operations/{id}/cancel`), with the lag after each pass in its `lag`.
#[utoipa::path(post, path = "/api/data-migration/syncs/{name}", tag = "operations",
    params(("name" = String, Path, description = "A sync of the configuration")),
    responses(
        (status = 202, description = "Accepted: the operation, queued or running", body = Operation),
        (status = 401, description = "No token or a wrong one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin scope", body = ErrorBody),
        (status = 404, description = "No such sync in the configuration", body = ErrorBody),
        (status = 429, description = "Too many operations queued", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody)),
    security(("bearer" = [])))]
async fn start_sync(
    State(app): State<Arc<App>>,
    auth: Auth,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    auth.require(&app, Scope::Admin, "sync")?;
    let Some(job) = app.settings.syncs.get(&name).cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no sync {name:?} in the configuration"),
        ));
    };
    let id = new_id();
    let dir = make_op_dir(&app, &id)?;
    let planned = plan::Planned {
        runs: Vec::new(),
        options: serde_json::json!({
            "sync": name,
            "capture": job.capture,
            "cursor": job.cursor,
            "deletes": job.deletes,
            "every": job.every,
        }),
        dry_run: false,
        sync: Some(job),
    };
    let op = Operation::new(
        id,
        OpKind::Sync,
        &name,
        &auth.0.name,
        auth.0.user.as_deref(),
    );
    let handle = app.runner.submit(op, planned, dir)?;
    let op = handle.snapshot();
    audit_request(&app, &auth.0, "sync", Some(&op), "accepted", 202);
    Ok((StatusCode::ACCEPTED, Json(op)).into_response())
}

/// The multipart form of `/import` and `/validate` (for the OpenAPI description).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ImportForm {
    /// The file (JSON, NDJSON, CSV, TSV, XML, YAML, Markdown; .gz/.br/.zst; .enc with `encryption.keyId`).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// A dataset, or `auto-detect` (the default).
    #[schema(rename = "dataType")]
    data_type: String,
    /// The options, as JSON text.
    #[schema(inline)]
    options: ImportOptions,
}

/// Starts an import of an uploaded file into a dataset's table.
#[utoipa::path(post, path = "/api/data-migration/import", tag = "operations",
    request_body(content = ImportForm, content_type = "multipart/form-data"), params(WaitQuery),
    responses(
        (status = 202, description = "Accepted: the operation", body = Operation),
        (status = 200, description = "With ?wait: it succeeded", body = Operation),
        (status = 409, description = "With ?wait: a duplicate key (without skipDuplicates/overwriteExisting), or cancelled", body = Operation),
        (status = 422, description = "Unknown dataType, contradicting options, mapping in the request, auto-detect failed; with ?wait: invalid records", body = ErrorBody),
        (status = 400, description = "Malformed form", body = ErrorBody),
        (status = 401, description = "No token or a wrong one", body = ErrorBody),
        (status = 403, description = "The token lacks the import scope", body = ErrorBody),
        (status = 413, description = "The upload is over max_upload_size", body = ErrorBody),
        (status = 429, description = "Too many uploads or operations at once", body = ErrorBody)),
    security(("bearer" = [])))]
async fn import(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(wait): Query<WaitQuery>,
    headers: HeaderMap,
    form: Multipart,
) -> Result<Response, ApiError> {
    upload_operation(app, auth, wait, headers, form, OpKind::Import).await
}

/// Reads, maps and validates an uploaded file against a dataset; nothing is written.
#[utoipa::path(post, path = "/api/data-migration/validate", tag = "operations",
    request_body(content = ImportForm, content_type = "multipart/form-data"), params(WaitQuery),
    responses(
        (status = 202, description = "Accepted: the operation (type validate)", body = Operation),
        (status = 200, description = "With ?wait: it ran; `valid` says whether every record is", body = Operation),
        (status = 413, description = "The upload is over max_upload_size", body = ErrorBody)),
    security(("bearer" = [])))]
async fn validate(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(wait): Query<WaitQuery>,
    headers: HeaderMap,
    form: Multipart,
) -> Result<Response, ApiError> {
    upload_operation(app, auth, wait, headers, form, OpKind::Validate).await
}

async fn upload_operation(
    app: Arc<App>,
    auth: Auth,
    wait: WaitQuery,
    headers: HeaderMap,
    mut form: Multipart,
    kind: OpKind,
) -> Result<Response, ApiError> {
    auth.require(&app, Scope::Import, kind.name())?;
    let limit = app.settings.config.max_upload_size.0;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // The form's own fields take a little room beside the file.
    if declared.is_some_and(|n| n > limit.saturating_add(1 << 20)) {
        audit_request(&app, &auth.0, kind.name(), None, "payload_too_large", 413);
        upload::discard_form(&mut form, upload::DRAIN_MAX).await;
        return Err(upload::too_large(limit));
    }
    let _slot = Arc::clone(&app.uploads).try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "too many uploads are being received; try again shortly",
        )
    })?;
    let id = new_id();
    let dir = make_op_dir(&app, &id)?;
    let received = upload::receive(form, &dir.join("work").join("upload"), limit).await;
    let planned = received.and_then(|form| {
        let format = form
            .options
            .format
            .clone()
            .or_else(|| super::engine::format_of_name(&form.name).map(str::to_owned));
        let upload = Upload {
            path: &form.path,
            format,
            shown: &form.name,
        };
        let planned = plan::import(
            &app.settings,
            &auth.0,
            &form.data_type,
            &form.options,
            &upload,
            &dir,
            kind == OpKind::Validate,
        )?;
        Ok((form, planned))
    });
    let (form, planned) = match planned {
        Ok(p) => p,
        Err(e) => {
            remove_dir(&dir);
            audit_request(&app, &auth.0, kind.name(), None, e.code, e.status.as_u16());
            return Err(e);
        }
    };
    let data_type = planned.runs[0].0.clone();
    let mut op = Operation::new(
        id.clone(),
        kind,
        &data_type,
        &auth.0.name,
        auth.0.user.as_deref(),
    );
    op.file_name = Some(form.name.clone());
    op.bytes.total = Some(form.bytes);
    let handle = app.runner.submit(op, planned, dir)?;
    audit_request(
        &app,
        &auth.0,
        kind.name(),
        Some(&handle.snapshot()),
        "accepted",
        202,
    );
    let (op, waited) = wait_for(&app, &id, wait.wait).await?;
    Ok(op_response(op, waited))
}

/// The operation `id` if the caller may see it (a user-bound token sees only its user's): 404 otherwise,
/// so that others' ids are not even confirmed.
fn visible(app: &App, caller: &Caller, id: &str) -> Result<Operation, ApiError> {
    app.runner
        .get(id)?
        .filter(|op| caller.sees_user(op.user_id.as_deref()))
        .ok_or_else(|| ApiError::not_found(format!("no operation {id}")))
}

/// An operation's progress (and everything else about it).
#[utoipa::path(get, path = "/api/data-migration/operations/{id}/progress", tag = "operations",
    params(("id" = String, Path, description = "The operation's id")),
    responses((status = 200, body = Operation), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn progress(
    State(app): State<Arc<App>>,
    auth: Auth,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Operation>, ApiError> {
    auth.require(&app, Scope::Read, "progress")?;
    visible(&app, &auth.0, &id).map(Json)
}

/// A list of operations.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationList {
    /// The operations, newest first (active: oldest first).
    pub operations: Vec<Operation>,
    /// How many match in all.
    pub total: u64,
    /// The page's size.
    pub limit: u32,
    /// The page's start.
    pub offset: u32,
}

/// Operations not over (queued, running, cancelling).
#[utoipa::path(get, path = "/api/data-migration/operations/active", tag = "operations",
    responses((status = 200, body = OperationList)), security(("bearer" = [])))]
async fn active(State(app): State<Arc<App>>, auth: Auth) -> Result<Json<OperationList>, ApiError> {
    auth.require(&app, Scope::Read, "active")?;
    let operations: Vec<Operation> = app
        .runner
        .active()
        .into_iter()
        .filter(|op| auth.0.sees_user(op.user_id.as_deref()))
        .collect();
    let total = operations.len() as u64;
    Ok(Json(OperationList {
        limit: total as u32,
        offset: 0,
        total,
        operations,
    }))
}

/// History filters and paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// At most this many (default 50, at most 1000).
    pub limit: Option<u32>,
    /// Skip this many (newest first).
    pub offset: Option<u32>,
    /// queued, running, cancelling, succeeded, failed or cancelled.
    pub state: Option<String>,
    /// export, import or validate.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// A dataset.
    #[serde(rename = "dataType")]
    #[param(rename = "dataType")]
    pub data_type: Option<String>,
    /// Created at or after (RFC 3339 or YYYY-MM-DD).
    pub since: Option<String>,
    /// Created before (RFC 3339 or YYYY-MM-DD).
    pub until: Option<String>,
}

fn normalise_time(text: &str, what: &str) -> Result<String, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map(super::operation::time_text)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{what} {text:?} is not an RFC 3339 time or a YYYY-MM-DD date"
            ))
        })
}

/// Operations of the past, newest first, durable across restarts; filtered and paged.
#[utoipa::path(get, path = "/api/data-migration/operations/history", tag = "operations",
    params(HistoryParams),
    responses((status = 200, body = OperationList), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
async fn history(
    State(app): State<Arc<App>>,
    auth: Auth,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<OperationList>, ApiError> {
    auth.require(&app, Scope::Read, "history")?;
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let state = p
        .state
        .as_deref()
        .map(|s| OpState::parse(s).ok_or_else(|| ApiError::bad_request(format!("state {s:?} is not one of queued, running, cancelling, succeeded, failed, cancelled"))))
        .transpose()?;
    if let Some(k) = p
        .kind
        .as_deref()
        .filter(|k| !["export", "import", "validate"].contains(k))
    {
        return Err(ApiError::bad_request(format!(
            "type {k:?} is not one of export, import, validate"
        )));
    }
    let query = HistoryQuery {
        limit: p.limit.unwrap_or(50).min(1000),
        offset: p.offset.unwrap_or(0),
        state,
        kind: p.kind,
        data_type: p.data_type,
        since: p
            .since
            .as_deref()
            .map(|t| normalise_time(t, "since"))
            .transpose()?,
        until: p
            .until
            .as_deref()
            .map(|t| normalise_time(t, "until"))
            .transpose()?,
        user: auth.0.user.clone(),
    };
    let (operations, total) = app.store.history(&query).map_err(ApiError::internal)?;
    Ok(Json(OperationList {
        operations,
        total,
        limit: query.limit,
        offset: query.offset,
    }))
}

/// Cancels an operation: a queued one ends at once, a running one at its next batch, like a failed strict
/// run (an import's table as it was, an export's files gone).
#[utoipa::path(post, path = "/api/data-migration/operations/{id}/cancel", tag = "operations",
    params(("id" = String, Path, description = "The operation's id")),
    responses(
        (status = 202, description = "Cancelling (or cancelled, if it was queued)", body = Operation),
        (status = 403, description = "The token lacks the scope of the operation's type", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "It is already over", body = ErrorBody)),
    security(("bearer" = [])))]
async fn cancel(
    State(app): State<Arc<App>>,
    auth: Auth,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let op = visible(&app, &auth.0, &id)?;
    let scope = match op.kind {
        OpKind::Export => Scope::Export,
        OpKind::Import | OpKind::Validate => Scope::Import,
        OpKind::Sync => Scope::Admin,
    };
    auth.require(&app, scope, "cancel")?;
    match app.runner.cancel(&id, &auth.0) {
        Ok(op) => {
            audit_request(&app, &auth.0, "cancel", Some(&op), "accepted", 202);
            Ok((StatusCode::ACCEPTED, Json(op)).into_response())
        }
        Err(e) => {
            audit_request(
                &app,
                &auth.0,
                "cancel",
                Some(&op),
                e.code,
                e.status.as_u16(),
            );
            Err(e)
        }
    }
}

/// Progress as it happens (Server-Sent Events): an `operation` event with the operation's JSON at once and
/// on every change (at most five a second), and a final `end` event when it is over.
#[utoipa::path(get, path = "/api/data-migration/operations/{id}/events", tag = "operations",
    params(("id" = String, Path, description = "The operation's id")),
    responses((status = 200, description = "text/event-stream of `operation` events, then `end`", content_type = "text/event-stream"),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn events(
    State(app): State<Arc<App>>,
    auth: Auth,
    UrlPath(id): UrlPath<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    auth.require(&app, Scope::Read, "events")?;
    // Subscribe first, then read: an operation that ends in between is read from the history, final.
    let rx = app.runner.handle(&id).map(|h| h.state.subscribe());
    let op = match &rx {
        Some(rx) => Some(rx.borrow().clone()),
        None => app.runner.get(&id)?,
    }
    .filter(|op| auth.0.sees_user(op.user_id.as_deref()))
    .ok_or_else(|| ApiError::not_found(format!("no operation {id}")))?;
    let shutdown = app.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (Some(op), rx, shutdown, false),
        |(first, mut rx, mut shutdown, done)| async move {
            if done {
                return None;
            }
            let op = match (first, rx.as_mut()) {
                (Some(op), _) => op,
                (None, Some(rx)) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    tokio::select! {
                        changed = rx.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                            rx.borrow_and_update().clone()
                        }
                        _ = shutdown.wait_for(|s| *s) => return None,
                    }
                }
                (None, None) => return None,
            };
            let over = op.status.is_final();
            let event = sse_event(if over { "end" } else { "operation" }, &op);
            // After the first event, a finished operation's stream ends.
            let rx = if over { None } else { rx };
            Some((Ok(event), (None, rx, shutdown, over)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sse_event(name: &str, op: &Operation) -> Event {
    Event::default()
        .event(name)
        .id(op.current_record.to_string())
        .json_data(op)
        .unwrap_or_else(|_| Event::default().event(name))
}

/// Which result file.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ResultParams {
    /// A file of the result by name (as listed in the operation's `result.files`; `manifest` names a split
    /// export's manifest).
    pub file: Option<String>,
    /// A split export's part, from 1.
    pub part: Option<usize>,
}

/// Downloads an export's file: without parameters, its one file (a split export: its manifest); `?part=N`
/// a part; `?file=NAME` any listed file.
#[utoipa::path(get, path = "/api/data-migration/operations/{id}/result", tag = "operations",
    params(("id" = String, Path, description = "The operation's id"), ResultParams),
    responses(
        (status = 200, description = "The file; its SHA-256 in the X-Checksum-Sha256 header", content_type = "application/octet-stream"),
        (status = 400, description = "Several files: name one", body = ErrorBody),
        (status = 404, description = "No such operation or file", body = ErrorBody),
        (status = 409, description = "Not finished, not succeeded, or its files expired", body = ErrorBody)),
    security(("bearer" = [])))]
async fn result(
    State(app): State<Arc<App>>,
    auth: Auth,
    UrlPath(id): UrlPath<String>,
    params: Result<Query<ResultParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    auth.require(&app, Scope::Read, "download")?;
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let op = visible(&app, &auth.0, &id)?;
    let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, "no_result", m);
    let Some(result) = op.result.as_ref() else {
        return Err(conflict(format!(
            "operation {id} has no files to download (it is {})",
            op.status.name()
        )));
    };
    if result.expired {
        return Err(conflict(format!(
            "the files of operation {id} were removed at {} (result_retention)",
            result.expires_at
        )));
    }
    let files = &result.files;
    let chosen = match (&p.file, p.part) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give file or part, not both")),
        (Some(name), None) if name == "manifest" => files.iter().find(|f| f.role == "manifest"),
        (Some(name), None) => files.iter().find(|f| &f.name == name),
        (None, Some(n)) => files
            .iter()
            .filter(|f| f.role == "part")
            .nth(n.wrapping_sub(1)),
        (None, None) => {
            let main: Vec<_> = files.iter().filter(|f| f.role == "data").collect();
            match (main.as_slice(), files.iter().find(|f| f.role == "manifest")) {
                ([one], _) => Some(*one),
                ([], Some(manifest)) => Some(manifest),
                _ => return Err(ApiError::bad_request(
                    "this export has several files: name one with ?file=NAME (see result.files)",
                )
                .with_details(serde_json::to_value(files).unwrap_or_default())),
            }
        }
    };
    let file =
        chosen.ok_or_else(|| ApiError::not_found("no such file in this operation's result"))?;
    let path = op_dir(&app.settings, &id).join("result").join(&file.name);
    let handle = tokio::fs::File::open(&path)
        .await
        .map_err(|_| conflict(format!("the file {} is gone", file.name)))?;
    audit_request(&app, &auth.0, "download", Some(&op), "ok", 200);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        handle,
        256 * 1024,
    ));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&file.name)),
    );
    for (name, value) in [
        (header::CONTENT_LENGTH.as_str(), file.bytes.to_string()),
        (
            header::CONTENT_DISPOSITION.as_str(),
            format!("attachment; filename=\"{}\"", file.name),
        ),
        ("x-checksum-sha256", file.sha256.clone()),
    ] {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    Ok(response)
}

fn content_type(name: &str) -> &'static str {
    let last = name.rsplit('.').next().unwrap_or_default();
    match last {
        "json" => "application/json",
        "ndjson" | "jsonl" => "application/x-ndjson",
        "csv" => "text/csv; charset=utf-8",
        "tsv" => "text/tab-separated-values; charset=utf-8",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "md" => "text/markdown; charset=utf-8",
        "gz" => "application/gzip",
        "zst" => "application/zstd",
        _ => "application/octet-stream",
    }
}

/// The templates: stored and built-in.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    /// Each with what its check found.
    pub templates: Vec<TemplateInfo>,
}

/// Lists the templates (stored ones, then built-in ones), each checked.
#[utoipa::path(get, path = "/api/data-migration/templates", tag = "templates",
    responses((status = 200, body = TemplateList)), security(("bearer" = [])))]
async fn list_templates(
    State(app): State<Arc<App>>,
    auth: Auth,
) -> Result<Json<TemplateList>, ApiError> {
    auth.require(&app, Scope::Read, "templates.list")?;
    let dir = app.settings.templates_dir.clone();
    let templates = tokio::task::spawn_blocking(move || templates::list(&dir))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(TemplateList { templates }))
}

/// One template, with its YAML.
#[utoipa::path(get, path = "/api/data-migration/templates/{id}", tag = "templates",
    params(("id" = String, Path, description = "The template's id")),
    responses((status = 200, body = TemplateInfo), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_template(
    State(app): State<Arc<App>>,
    auth: Auth,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<TemplateInfo>, ApiError> {
    auth.require(&app, Scope::Read, "templates.get")?;
    templates::get(&app.settings.templates_dir, &id).map(Json)
}

/// Stores a template after checking it as `ferry templates check` does. The body is ferry's template as
/// YAML (`application/yaml`) or JSON, or the guide's `createDataTemplate` shape (JSON).
#[utoipa::path(post, path = "/api/data-migration/templates", tag = "templates",
    request_body(content = String, description = "Template YAML (application/yaml) or JSON", content_type = "application/json"),
    responses(
        (status = 201, description = "Stored", body = TemplateInfo),
        (status = 403, description = "The token lacks the admin scope", body = ErrorBody),
        (status = 409, description = "A template of that name exists", body = ErrorBody),
        (status = 422, description = "The check failed: `details.problems` lists each with its line, column and field", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_template(
    State(app): State<Arc<App>>,
    auth: Auth,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    auth.require(&app, Scope::Admin, "template.create")?;
    let body = body
        .map_err(|e| ApiError::bad_request(format!("cannot read the body: {}", e.body_text())))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let dir = app.settings.templates_dir.clone();
    let made = tokio::task::spawn_blocking(move || templates::create(&dir, &body, &content_type))
        .await
        .map_err(ApiError::internal)?;
    let (result, status) = match &made {
        Ok(t) => (format!("created {}", t.id), 201),
        Err(e) => (e.code.to_owned(), e.status.as_u16()),
    };
    audit_request(&app, &auth.0, "template.create", None, &result, status);
    let made = made?;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

/// A dataset, as requests see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetInfo {
    /// The `dataType` that names it.
    pub data_type: String,
    /// postgres or sqlite.
    pub database: String,
    /// Its table.
    pub table: String,
    /// The template imports go through.
    pub template: Option<String>,
    /// The template exports go through.
    pub export_template: Option<String>,
    /// The export filters it supports.
    pub filters: Vec<String>,
    /// True when user-bound tokens can use it.
    pub user_bound: bool,
}

/// The datasets requests can name (`dataType`), with the filters each supports.
#[utoipa::path(get, path = "/api/data-migration/datasets", tag = "operations",
    responses((status = 200, body = [DatasetInfo])), security(("bearer" = [])))]
async fn datasets(
    State(app): State<Arc<App>>,
    auth: Auth,
) -> Result<Json<Vec<DatasetInfo>>, ApiError> {
    auth.require(&app, Scope::Read, "datasets")?;
    let out = app
        .settings
        .datasets
        .values()
        .map(|d| {
            let f = &d.config.filters;
            let filters = [
                ("dateRange", &f.date_range),
                ("types", &f.types),
                ("tags", &f.tags),
                ("sessionIds", &f.session_ids),
                ("importance", &f.importance),
            ]
            .into_iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.to_owned())
            .collect();
            DatasetInfo {
                data_type: d.name.clone(),
                database: d.database.kind().to_owned(),
                table: d.config.table.clone(),
                template: d.config.template.clone(),
                export_template: d.config.export_template.clone(),
                filters,
                user_bound: d.config.user_column.is_some(),
            }
        })
        .collect();
    Ok(Json(out))
}

/// Paging of the audit table.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Skip this many (newest first).
    pub offset: Option<u32>,
}

/// The audit table, newest first (admin).
#[utoipa::path(get, path = "/api/data-migration/audit", tag = "operations", params(AuditParams),
    responses((status = 200, body = [super::store::AuditEntry]), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
async fn audit(
    State(app): State<Arc<App>>,
    auth: Auth,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<super::store::AuditEntry>>, ApiError> {
    auth.require(&app, Scope::Admin, "audit")?;
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let lines = app
        .store
        .audit_lines(p.limit.unwrap_or(100).min(1000), p.offset.unwrap_or(0))
        .map_err(ApiError::internal)?;
    Ok(Json(lines))
}

/// Health.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `shutting_down`.
    pub status: String,
    /// ferry's version.
    pub version: String,
    /// Operations not over.
    pub active_operations: usize,
}

/// Whether the server is up (no token needed).
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn healthz(State(app): State<Arc<App>>) -> Response {
    let closing = *app.shutdown.borrow();
    let health = Health {
        status: if closing { "shutting_down" } else { "ok" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        active_operations: app.runner.active().len(),
    };
    let status = if closing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(health)).into_response()
}

/// Prometheus metrics (OpenMetrics text): `ferry_operations{state}`, `ferry_operations_finished_total`,
/// `ferry_records_total`, `ferry_bytes_total`, `ferry_http_request_duration_seconds`.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")),
    security(("bearer" = [])))]
async fn metrics(State(app): State<Arc<App>>, auth: Auth) -> Result<Response, ApiError> {
    auth.require(&app, Scope::Read, "metrics")?;
    let text = app.metrics.render();
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// This API, described (OpenAPI 3.1, generated from the code).
#[utoipa::path(get, path = "/api/openapi.json", tag = "service", responses((status = 200, description = "The OpenAPI document")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of the service.
#[derive(OpenApi)]
#[openapi(
    info(title = "ferry serve", description = "The Persistent Context Store data-migration API, on ferry's engine. Every error body is {\"error\": {\"code\", \"message\"}}; operations always carry balanced counts (read = written + rejected + filtered + skipped)."),
    paths(export, import, validate, start_sync, progress, active, history, cancel, events, result,
          list_templates, get_template, create_template, datasets, audit, healthz, metrics, openapi),
    components(schemas(ErrorBody, Operation, OperationList, ExportRequest, ImportOptions, TemplateInfo,
                       super::operation::SyncLag,
                       TemplateList, DatasetInfo, Health, super::store::AuditEntry)),
    modifiers(&BearerAuth),
    tags((name = "operations", description = "Export, import, validate, and the operations they start"),
         (name = "templates", description = "Templates: list, show, add (checked)"),
         (name = "service", description = "Health, metrics, this description")))]
pub struct ApiDoc;
