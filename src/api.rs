//! The HTTP side for operators: metrics, readiness and liveness.
//!
//! This module owns the HTTP server (axum) and the readiness flags the
//! pipeline flips ([`Health`]). Later the inline scorer will be served here
//! too.
//!
//! | path       | answer |
//! |------------|--------|
//! | `/metrics` | 200, the Prometheus text format ([`Metrics::encode`]) |
//! | `/readyz`  | 200 `ready`, or 503 with one line per reason not ready; either followed by a `warning:` line per thing degraded that does not stop decisions |
//! | `/healthz` | 200 `ok` while the process runs |
//!
//! Why it is built this way: the pipeline is a synchronous program (one
//! consumer loop on its own threads), so [`spawn`] runs the server on a
//! thread of its own with a single-threaded tokio runtime; nothing else in the
//! process needs an async runtime, and the server cannot slow the hot path
//! beyond the scrape's own cost.
//!
//! Guarantees:
//! - **Bind errors are immediate.** [`spawn`] binds before returning, so
//!   "address in use" is an error at start-up naming the address, not a log
//!   line from a background thread.
//! - **Gauges follow [`Health`].** `fds_ready` and `fds_broker_up` are set
//!   from [`Health`] at each scrape ([`Health::publish`]); callers only flip
//!   the flags.
//! - **A slow scrape does not block probes.** The refresh hook and encoding
//!   run on tokio's blocking pool, so `/readyz` and `/healthz` answer while a
//!   large state is being measured.
//! - **Shutdown is bounded.** [`ApiServer::shutdown`] (or dropping the
//!   server) stops accepting, lets requests in flight finish for up to
//!   [`SHUTDOWN_GRACE`], then closes what is left and joins the thread.

use std::future::IntoFuture;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// How long requests in flight may take to finish once shutdown is asked.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Called before each scrape, e.g. to run [`Metrics::observe_state`].
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// Why the HTTP server could not start.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {addr}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot start the HTTP server on {addr}")]
    Start { addr: SocketAddr, source: io::Error },
}

/// What an instance needs before it may answer transfers, as flags the
/// pipeline flips from any thread.
///
/// Each flag is independent and publishes no other data, so relaxed atomics
/// suffice; a probe may see one flip a moment late, never a torn state.
#[derive(Debug)]
pub struct Health {
    broker_up: AtomicBool,
    assigned: AtomicBool,
    caught_up: AtomicBool,
    restoring: AtomicBool,
    stopping: AtomicBool,
    checkpoint_failing: AtomicBool,
}

impl Health {
    /// Not ready: no broker, no partitions, nothing loaded; not stopping.
    pub fn new() -> Health {
        Health {
            broker_up: AtomicBool::new(false),
            assigned: AtomicBool::new(false),
            caught_up: AtomicBool::new(false),
            restoring: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            checkpoint_failing: AtomicBool::new(false),
        }
    }

    /// Whether the brokers answer: set by the pipeline's health thread every
    /// second, and cleared at once when a client reports all brokers down.
    pub fn set_broker_up(&self, up: bool) {
        self.broker_up.store(up, Ordering::Relaxed);
    }

    /// Whether the brokers answered the last health check.
    pub fn is_broker_up(&self) -> bool {
        self.broker_up.load(Ordering::Relaxed)
    }

    /// Whether this instance holds partitions of the transfers topic.
    pub fn set_assigned(&self, yes: bool) {
        self.assigned.store(yes, Ordering::Relaxed);
    }

    /// Whether the recent decisions are loaded, so a re-delivered transfer
    /// gets the decision already given rather than a new one.
    pub fn set_caught_up(&self, yes: bool) {
        self.caught_up.store(yes, Ordering::Relaxed);
    }

    /// Whether the state is being restored (from the changelog) before any
    /// input is handled.
    pub fn set_restoring(&self, yes: bool) {
        self.restoring.store(yes, Ordering::Relaxed);
    }

    /// Shutdown has begun; the instance is never ready again. Set first, so
    /// load balancers stop sending before the consumer lets go.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether the last state checkpoint failed (the broker refused a
    /// record: a full disk, a deleted topic). Decisions go on, so the
    /// instance stays ready, but a restart now re-reads more input and,
    /// once the changelog's older records are compacted away, restores less
    /// than this instance knows: `/readyz` says so until one is written.
    pub fn set_checkpoint_failing(&self, yes: bool) {
        self.checkpoint_failing.store(yes, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200: no problem listed.
    pub fn is_ready(&self) -> bool {
        self.problems().is_empty()
    }

    /// Why the instance is not ready, one short phrase each; empty when ready.
    pub fn problems(&self) -> Vec<&'static str> {
        let flags = [
            (!self.stopping.load(Ordering::Relaxed), "shutting down"),
            (self.broker_up.load(Ordering::Relaxed), "broker unreachable"),
            (self.assigned.load(Ordering::Relaxed), "not yet assigned partitions"),
            (self.caught_up.load(Ordering::Relaxed), "loading recent decisions"),
            (!self.restoring.load(Ordering::Relaxed), "restoring state"),
        ];
        flags.into_iter().filter(|(ok, _)| !ok).map(|(_, problem)| problem).collect()
    }

    /// What is degraded without stopping decisions, one short phrase each.
    pub fn warnings(&self) -> Vec<&'static str> {
        let flags = [(
            !self.checkpoint_failing.load(Ordering::Relaxed),
            "state checkpoints failing: a restart would re-read the input since the last complete one",
        )];
        flags.into_iter().filter(|(ok, _)| !ok).map(|(_, warning)| warning).collect()
    }

    /// Set `fds_ready` and `fds_broker_up` from the flags. The server does
    /// this before every scrape; call it yourself only when encoding elsewhere.
    pub fn publish(&self, metrics: &Metrics) {
        metrics.ready.set(i64::from(self.is_ready()));
        metrics.broker_up.set(i64::from(self.broker_up.load(Ordering::Relaxed)));
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

/// A running server. Dropping it stops the server too.
#[derive(Debug)]
pub struct ApiServer {
    local_addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop gracefully (see [`SHUTDOWN_GRACE`]) and wait for the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The server may already be gone; then there is nobody to tell.
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(addr = %self.local_addr, "HTTP server thread panicked");
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    refresh: Option<Refresh>,
}

/// Bind `addr` and serve on a thread of its own until the returned
/// [`ApiServer`] is shut down or dropped.
pub fn spawn(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    refresh: Option<Refresh>,
) -> Result<ApiServer, ApiError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ApiError::Bind { addr, source })?;
    let start = |source| ApiError::Start { addr, source };
    let local_addr = listener.local_addr().map_err(start)?;
    listener.set_nonblocking(true).map_err(start)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().map_err(start)?;
    let listener = {
        let _in_runtime = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(start)?
    };

    let app = router(AppState { metrics, health, refresh });
    let (stop, stopped) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("fds-api".into())
        .spawn(move || {
            let served = runtime.block_on(async move {
                let mut graceful = stopped.clone();
                let server = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        // A dropped sender means the same as a request to stop.
                        let _ = graceful.wait_for(|stop| *stop).await;
                    })
                    .into_future();
                let mut deadline = stopped;
                tokio::select! {
                    served = server => served,
                    _ = async move {
                        let _ = deadline.wait_for(|stop| *stop).await;
                        tokio::time::sleep(SHUTDOWN_GRACE).await;
                    } => Ok(()),
                }
            });
            if let Err(e) = served {
                tracing::error!(addr = %local_addr, error = %e, "HTTP server stopped");
            }
        })
        .map_err(start)?;
    tracing::info!(addr = %local_addr, "HTTP server listening");
    Ok(ApiServer { local_addr, stop: Some(stop), thread: Some(thread) })
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn metrics(State(app): State<AppState>) -> Response {
    let encoded = tokio::task::spawn_blocking(move || {
        if let Some(refresh) = &app.refresh {
            refresh();
        }
        app.health.publish(&app.metrics);
        app.metrics.encode()
    })
    .await;
    match encoded {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        // The refresh hook panicked; say so rather than drop the connection.
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics refresh failed: {e}\n")).into_response(),
    }
}

async fn readyz(State(app): State<AppState>) -> Response {
    let problems = app.health.problems();
    let status = if problems.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = String::new();
    for line in if problems.is_empty() { vec!["ready"] } else { problems } {
        body.push_str(line);
        body.push('\n');
    }
    for warning in app.health.warnings() {
        body.push_str("warning: ");
        body.push_str(warning);
        body.push('\n');
    }
    (status, body).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::engine::Outcome;
    use crate::rules::Verification;

    /// A one-request HTTP/1.1 client: (status, content type, body).
    fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("a complete response");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
            .map_or(String::new(), |(_, v)| v.trim().to_owned());
        (status, content_type, body.to_owned())
    }

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn serves_metrics_readiness_and_liveness() {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new());
        let refreshed = Arc::new(AtomicUsize::new(0));
        let hook = {
            let refreshed = refreshed.clone();
            Arc::new(move || {
                refreshed.fetch_add(1, Ordering::Relaxed);
            }) as Refresh
        };
        let server = spawn(local(), metrics.clone(), health.clone(), Some(hook)).unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        metrics.count_decision(Outcome::Hold, Some(Verification::Callback));
        let (status, content_type, body) = get(addr, "/metrics");
        assert_eq!(status, 200);
        assert_eq!(content_type, "text/plain; version=0.0.4");
        assert!(body.contains("fds_decisions_total{decision=\"hold\",verification=\"callback\"} 1\n"), "{body}");
        assert!(body.contains("fds_ready 0\n"), "{body}");
        assert_eq!(refreshed.load(Ordering::Relaxed), 1);

        let (status, _, body) = get(addr, "/readyz");
        assert_eq!(status, 503);
        assert_eq!(body, "broker unreachable\nnot yet assigned partitions\nloading recent decisions\n");

        health.set_broker_up(true);
        health.set_assigned(true);
        let (status, _, body) = get(addr, "/readyz");
        assert_eq!((status, body.as_str()), (503, "loading recent decisions\n"));

        health.set_caught_up(true);
        health.set_restoring(true);
        let (status, _, body) = get(addr, "/readyz");
        assert_eq!((status, body.as_str()), (503, "restoring state\n"));
        health.set_restoring(false);
        assert!(health.is_ready());
        assert_eq!(get(addr, "/readyz"), (200, "text/plain; charset=utf-8".into(), "ready\n".into()));
        health.set_checkpoint_failing(true);
        let (status, _, body) = get(addr, "/readyz");
        assert_eq!(status, 200, "a failing checkpoint does not stop decisions");
        assert!(body.starts_with("ready\nwarning: state checkpoints failing"), "{body}");
        health.set_checkpoint_failing(false);
        let (_, _, body) = get(addr, "/metrics");
        assert!(body.contains("fds_ready 1\n") && body.contains("fds_broker_up 1\n"), "{body}");
        assert_eq!(refreshed.load(Ordering::Relaxed), 2);

        health.set_stopping();
        let (status, _, body) = get(addr, "/readyz");
        assert_eq!((status, body.as_str()), (503, "shutting down\n"));

        let (status, _, body) = get(addr, "/healthz");
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        assert_eq!(get(addr, "/nope").0, 404);

        server.shutdown();
        assert!(TcpStream::connect(addr).is_err(), "still listening after shutdown");
    }

    #[test]
    fn a_taken_address_is_an_error_naming_it() {
        let taken = std::net::TcpListener::bind(local()).unwrap();
        let addr = taken.local_addr().unwrap();
        let err = spawn(addr, Arc::new(Metrics::new()), Arc::new(Health::new()), None).unwrap_err();
        assert!(matches!(&err, ApiError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse), "{err:?}");
        assert_eq!(err.to_string(), format!("cannot listen on {addr}"));
    }

    #[test]
    fn dropping_the_server_stops_it() {
        let server = spawn(local(), Arc::new(Metrics::new()), Arc::new(Health::new()), None).unwrap();
        let addr = server.local_addr();
        assert_eq!(get(addr, "/healthz").0, 200);
        drop(server);
        assert!(TcpStream::connect(addr).is_err(), "still listening after drop");
    }

    #[test]
    fn a_panicking_refresh_is_a_500_not_a_dead_server() {
        let hook: Refresh = Arc::new(|| panic!("refresh failed on purpose"));
        let server = spawn(local(), Arc::new(Metrics::new()), Arc::new(Health::new()), Some(hook)).unwrap();
        assert_eq!(get(server.local_addr(), "/metrics").0, 500);
        assert_eq!(get(server.local_addr(), "/healthz").0, 200);
    }
}
