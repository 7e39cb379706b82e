//! `ferry serve`: the second front end. HTTP requests become jobs over the datasets the configuration
//! names, run as operations (queue, states, progress, cancel, durable history in SQLite) behind bearer
//! tokens with scopes, with an append-only audit table, limits on uploads and requests, Server-Sent Events
//! for progress, Prometheus metrics, an OpenAPI description, and the operations page at `/` ([`web`], a
//! client of the same API). The engine is reached only through [`engine`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use crate::env::Environment;
use crate::error::{Error, Result};

pub mod api;
pub mod config;
pub mod engine;
pub mod error;
pub mod http;
pub mod metrics;
pub mod operation;
pub mod plan;
pub mod runner;
pub mod store;
pub mod templates;
pub mod tokens;
pub mod upload;
pub mod web;

use config::{LogFormat, ServeConfig, Settings};
use metrics::Metrics;
use runner::Runner;
use store::Store;
use tokens::Tokens;

/// The configuration file read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG: &str = "ferry-serve.yaml";

/// Everything a request handler reaches.
#[derive(Debug)]
pub struct App {
    /// The checked configuration.
    pub settings: Arc<Settings>,
    /// Who may call.
    pub tokens: Tokens,
    /// History and audit.
    pub store: Arc<Store>,
    /// The operations.
    pub runner: Arc<Runner>,
    /// The figures of `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Uploads received at once.
    pub uploads: Arc<Semaphore>,
    /// Becomes true when the server shuts down (event streams end).
    pub shutdown: watch::Receiver<bool>,
}

/// How `ferry serve` was started.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
}

/// Reads the configuration: `--config`, else `ferry-serve.yaml` when it exists, else the defaults.
pub fn load_config(path: Option<&Path>) -> Result<ServeConfig> {
    match path {
        Some(path) => ServeConfig::load(path),
        None if Path::new(DEFAULT_CONFIG).is_file() => ServeConfig::load(Path::new(DEFAULT_CONFIG)),
        None => Ok(ServeConfig::default()),
    }
}

/// Runs the server until SIGTERM or SIGINT, then shuts down gracefully.
pub fn run(options: ServeOptions) -> Result<()> {
    let config = load_config(options.config.as_deref())?;
    init_logging(config.log_format);
    let settings = config.resolve(&Environment::from_process())?;
    check(&settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry-serve")
        .build()
        .map_err(|e| Error::config(format!("cannot start the server's runtime: {e}")))?;
    let served = runtime.block_on(serve(settings, options.listen));
    // Runs that did not stop in time are not waited for: the next start marks them interrupted.
    runtime.shutdown_timeout(Duration::from_secs(5));
    served
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// Start-up checks that need the engine: every key readable, every dataset's template found and sound.
fn check(settings: &Settings) -> Result<()> {
    for (id, key) in &settings.config.keys {
        engine::check_key(id, key, &settings.env).map_err(Error::config)?;
    }
    for dataset in settings.datasets.values() {
        let names = [&dataset.config.template, &dataset.config.export_template];
        for name in names.into_iter().flatten() {
            let (text, _) =
                engine::template_source(name, &settings.templates_dir).map_err(|f| {
                    Error::config(format!("dataset {:?}: {}", dataset.name, f.info.message))
                })?;
            let shown = settings.templates_dir.join(format!("{name}.yaml"));
            engine::check_template(&text, &shown).map_err(|problems| {
                let shown: Vec<String> = problems.iter().map(|p| p.shown()).collect();
                Error::config(format!(
                    "dataset {:?}: template {}: {}",
                    dataset.name,
                    name,
                    shown.join("; ")
                ))
            })?;
        }
    }
    Ok(())
}

async fn serve(settings: Settings, listen: Option<String>) -> Result<()> {
    let settings = Arc::new(settings);
    for dir in [
        settings.work_dir.join("ops"),
        settings.templates_dir.clone(),
    ] {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::config(format!("cannot create {}: {e}", dir.display())))?;
    }
    let store = Arc::new(Store::open(&settings.state)?);
    let tokens = Tokens::open(&settings.tokens)?;
    if tokens.is_empty() {
        tracing::warn!(
            file = %settings.tokens.display(),
            "no tokens yet: every request but /healthz gets 401; add one with `ferry serve token add NAME --scope read`"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let runner = Runner::new(settings.clone(), store.clone(), metrics.clone());
    let interrupted = runner.recover()?;
    if interrupted > 0 {
        tracing::warn!(
            operations = interrupted,
            "operations the last server left running were marked failed (interrupted)"
        );
    }
    runner.expire_results();
    let (stop, shutdown) = watch::channel(false);
    let app = Arc::new(App {
        uploads: Arc::new(Semaphore::new(settings.config.max_concurrent_uploads)),
        settings: settings.clone(),
        tokens,
        store,
        runner: runner.clone(),
        metrics,
        shutdown,
    });
    let address = listen.unwrap_or_else(|| settings.config.listen.clone());
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| Error::config(format!("cannot listen on {address}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::config(format!("cannot read the listening address: {e}")))?;
    // Tests and scripts read this line to learn the port of --listen 127.0.0.1:0.
    eprintln!("ferry serve: listening on http://{local}");
    tracing::info!(address = %local, datasets = settings.datasets.len(), "listening");
    tokio::spawn(expire_results_periodically(
        runner.clone(),
        settings.config.result_retention,
    ));
    let router = api::router(app.clone());
    let graceful = {
        let stop = stop.clone();
        async move {
            wait_for_signal().await;
            tracing::info!(
                "shutting down: no new connections; running operations get their grace period"
            );
            let _ = stop.send(true);
            tokio::spawn(async {
                wait_for_signal().await;
                tracing::error!("second signal: exiting at once; the next start marks running operations interrupted");
                std::process::exit(1);
            });
        }
    };
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(graceful);
    let mut stopped = stop.subscribe();
    let drained = async move {
        let _ = stopped.wait_for(|s| *s).await;
        runner
            .drain(Duration::from_secs_f64(settings.config.shutdown_grace))
            .await;
    };
    let (served, ()) = tokio::join!(server, drained);
    served.map_err(|e| Error::config(format!("the server failed: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

async fn expire_results_periodically(runner: Arc<Runner>, retention: f64) {
    let every = Duration::from_secs_f64((retention / 4.0).clamp(1.0, 60.0));
    loop {
        tokio::time::sleep(every).await;
        runner.expire_results();
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
