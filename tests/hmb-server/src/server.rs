//! Starting and stopping a server: it binds, then serves on a tokio runtime
//! of its own, in its own thread, until shut down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::bus::SessionSummary;
use crate::faults::Faults;
use crate::http::{self, Ctx};
use crate::hub::Hub;
use crate::message::{Incoming, Validated};
use crate::settings::Settings;

/// How long in-flight responses get to finish at shutdown.
const GRACE: Duration = Duration::from_secs(2);

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The runtime or its thread could not be created.
    #[error("cannot start the server runtime: {0}")]
    Runtime(std::io::Error),
}

/// Why `publish` refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The message fails the /send checks (`invalid 'type'`, ...).
    #[error("{0}")]
    Invalid(&'static str),
}

/// Entry point: `Server::start(settings)`.
#[derive(Debug)]
pub struct Server;

/// A server running in the background; stopped by [`RunningServer::shutdown`]
/// or when dropped.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    hub: Arc<Hub>,
    faults: Arc<Faults>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `settings.bind:settings.port` and starts serving.
    pub fn start(settings: Settings) -> Result<RunningServer, StartError> {
        let addr = SocketAddr::new(settings.bind, settings.port);
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = std_listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|source| StartError::Bind { addr, source })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hmb-server")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let listener = {
            let _enter = runtime.enter();
            TcpListener::from_std(std_listener)
                .map_err(|source| StartError::Bind { addr, source })?
        };
        let hub = Arc::new(Hub::new(settings));
        let faults = Arc::new(Faults::default());
        let (stop, stop_rx) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            hub: Arc::clone(&hub),
            faults: Arc::clone(&faults),
        });
        let thread = std::thread::Builder::new()
            .name("hmb-server".into())
            .spawn(move || {
                runtime.block_on(serve(listener, ctx, stop_rx));
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .map_err(StartError::Runtime)?;
        Ok(RunningServer {
            addr,
            hub,
            faults,
            stop,
            thread: Some(thread),
        })
    }
}

impl RunningServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (no bus, no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR/BUS`, the base URL clients are configured with.
    pub fn bus_url(&self, bus: &str) -> String {
        format!("http://{}/{bus}", self.addr)
    }

    /// The fault rules of this server.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Simulates a restart: sessions are lost and open connections cut;
    /// queues (and their seqs) survive only with `keep_queues`.
    pub fn restart(&self, keep_queues: bool) {
        self.hub.restart(keep_queues);
    }

    /// Stores a message on a bus (created if needed) as if sent by a client
    /// with cid `message.message.sender` (empty: no sender). Returns the seq,
    /// `None` for a HEARTBEAT or a dropped out-of-order message.
    pub fn publish(&self, bus: &str, message: Incoming) -> Result<Option<i64>, PublishError> {
        match message.validate().map_err(PublishError::Invalid)? {
            Validated::Heartbeat => Ok(None),
            Validated::Store(inc) => Ok(self.hub.bus(bus).push(*inc, None)),
        }
    }

    /// The sessions of a bus, oldest first (empty if the bus does not exist).
    pub fn sessions(&self, bus: &str) -> Vec<SessionSummary> {
        self.hub
            .existing_bus(bus)
            .map(|b| b.sessions())
            .unwrap_or_default()
    }

    /// Runs the idle-session purge now (instead of waiting for its interval).
    pub fn purge_sessions(&self) {
        self.hub.purge();
    }

    /// Resolves when a stop was asked for through `POST /_admin/shutdown`.
    pub async fn stop_requested(&self) {
        let mut rx = self.hub.stop_requested();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Stops the server: sends get 503, long polls end, connections get a
    /// short grace period, then everything is dropped. Blocks until done.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.hub.begin_shutdown();
        self.faults.release_stalls();
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Counts live connections so shutdown can wait for them.
#[derive(Default)]
struct Connections {
    live: AtomicUsize,
    idle: Notify,
}

struct ConnGuard(Arc<Connections>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

async fn serve(listener: TcpListener, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let conns = Arc::new(Connections::default());
    let purge = tokio::spawn(purge_loop(Arc::clone(&ctx.hub)));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut stop) => break,
        };
        let Ok((stream, peer)) = accepted else {
            // Transient accept errors (e.g. too many open files): go on.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // Responses are written in pieces (chunked long polls): without this, Nagle's
        // algorithm holds the last piece until the client's delayed ACK, ~40 ms later.
        let _ = stream.set_nodelay(true);
        conns.live.fetch_add(1, Ordering::SeqCst);
        let guard = ConnGuard(Arc::clone(&conns));
        let ctx = Arc::clone(&ctx);
        let stop = stop.clone();
        tokio::spawn(serve_connection(stream, peer, ctx, stop, guard));
    }
    drop(listener);
    purge.abort();
    let idle = conns.idle.notified();
    if conns.live.load(Ordering::SeqCst) > 0 {
        let _ = tokio::time::timeout(GRACE, idle).await;
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    _guard: ConnGuard,
) {
    let mut epoch = ctx.hub.epoch();
    epoch.borrow_and_update();
    let service_ctx = Arc::clone(&ctx);
    let service = service_fn(move |req| http::handle(req, Arc::clone(&service_ctx), peer));
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        // A restart cuts every connection at once.
        _ = epoch.changed() => {}
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn.as_mut()).await;
        }
    }
}

/// Resolves once the stop flag is set.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

async fn purge_loop(hub: Arc<Hub>) {
    let every = hub.settings().purge_interval.max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        hub.purge();
    }
}
