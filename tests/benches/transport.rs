//! Transport benchmark (issue 3): what a driver's HTTP request costs through the host
//! compared with a plain HTTP client, and what one capability decision costs.
//! Results and their analysis: docs/performance.md, "Transports (issue 3)".
//!
//! `cargo bench -p warden-tests --bench transport` (add `-- --quick` for smaller counts).
//! It prints one labelled line per figure and has no targets.
//!
//! 1. HTTP: one in-process loopback HTTP/1.1 keep-alive server answers every request with
//!    the same small body. Three clients send the same GET to it, one request at a time,
//!    as a driver makes them:
//!    - `exec`: `exec("fetch", ["/x"])` on a module of the `net_probe` fixture: the
//!      module's queue, the wasm guest, the host's `http` interface, `HttpLink`, the
//!      server and back;
//!    - `HttpLink`: `HttpLink::send` called directly, the host's client without the guest
//!      and the queue;
//!    - `plain`: a hyper-util legacy `Client` with an `HttpConnector` (Nagle off, as the
//!      host's sockets), the baseline.
//!
//!    The three run in interleaved rounds so that noise from other processes on the
//!    machine falls on all of them alike.
//! 2. Capability: `capability::decide` in a tight loop for the requests every connection,
//!    HTTP request and cross-module call goes through.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[path = "support/stats.rs"]
mod stats;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use stats::{Stats, fmt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use warden::capability::{self, BaseUri, Decision, Endpoint, Grant, Request};
use warden::runtime::{
    ExecOptions, ModuleConfig, ModuleHandle, ModuleState, Runtime, RuntimeConfig,
};
use warden::transport::http::HttpRequest;
use warden::transport::{HttpLink, HttpOptions};

/// The body of every response.
const BODY: &[u8] = b"{\"power\":\"on\"}\n";

/// How much of everything to do.
struct Counts {
    /// Requests per client before measuring.
    http_warmup: usize,
    /// Measured requests per client.
    http_requests: usize,
    /// The measured requests of each client are split into this many interleaved rounds.
    http_rounds: usize,
    /// Decisions per kind, in `decide_batches` timed batches.
    decisions: usize,
    decide_batches: usize,
}

const FULL: Counts = Counts {
    http_warmup: 500,
    http_requests: 2_000,
    http_rounds: 10,
    decisions: 1_000_000,
    decide_batches: 10,
};

const QUICK: Counts = Counts {
    http_warmup: 200,
    http_requests: 500,
    http_rounds: 5,
    decisions: 200_000,
    decide_batches: 10,
};

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; everything but `--quick` is ignored.
    let quick = std::env::args().any(|arg| arg == "--quick");
    let counts = if quick { &QUICK } else { &FULL };
    let cache_dir = std::env::temp_dir().join(format!(
        "warden-bench-transport-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    println!(
        "warden transport benchmark: tokio multi-thread with 2 workers, {} CPUs online",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    // Measure from a task on the runtime's workers, as the host's API handlers would call.
    let dir = cache_dir.clone();
    let result = runtime
        .block_on(runtime.spawn(async move { http(counts, &dir).await }))
        .context("the benchmark task panicked")
        .and_then(|result| result);
    let _ = std::fs::remove_dir_all(&cache_dir);
    result?;
    drop(runtime);
    // A plain loop on this thread: no runtime is needed and none should interfere.
    capability_decisions(counts)
}

/// 1. HTTP through the host vs a plain client.
async fn http(counts: &Counts, cache_dir: &std::path::Path) -> anyhow::Result<()> {
    let connections = Arc::new(AtomicUsize::new(0));
    let server = serve(Arc::clone(&connections)).await?;
    let base = format!("http://{server}");
    println!(
        "HTTP: loopback HTTP/1.1 keep-alive server in this process, every response {} body bytes; GET /x, sequential, {} warm-up + {} measured per client in {} interleaved rounds",
        BODY.len(),
        counts.http_warmup,
        counts.http_requests,
        counts.http_rounds
    );

    // (a) The full path through a module.
    let mut config = RuntimeConfig::new(cache_dir);
    config.max_modules = 8;
    let runtime = Runtime::new(config).context("creating the runtime")?;
    let driver = runtime
        .load_driver_file(std::path::Path::new(warden_tests::guests::NET_PROBE))
        .with_context(|| format!("loading {}", warden_tests::guests::NET_PROBE))?;
    let mut module = ModuleConfig::new("probe", driver);
    module.base_uri = Some(base.parse().context("base URI")?);
    let handle = runtime.start_module(module)?;
    let reached = handle
        .watch_state()
        .wait_for(|s| !matches!(s, ModuleState::Starting))
        .await
        .map(|s| s.clone())
        .map_err(|_| anyhow::anyhow!("the module dropped its state"))?;
    if reached != ModuleState::Running {
        bail!("the net_probe module did not start: {reached:?}");
    }

    // (b) The host's client alone, with a grant like the module's.
    let base_uri: BaseUri = base.parse().context("base URI")?;
    let grant = Arc::new(Grant::new("direct", None, BTreeSet::new()).with_base_uri(base_uri));
    // Keep the receiver: the link reports `Connected` once, and a closed channel is fine
    // too, but a live one is what the runtime gives it.
    let (events_tx, _events_rx) = tokio::sync::mpsc::channel(16);
    let link = HttpLink::new(
        grant,
        &json!({}),
        HttpOptions::default(),
        Duration::from_secs(5),
        Some(Duration::from_secs(30)),
        events_tx,
    )
    .context("creating the HttpLink")?;

    // (c) The baseline.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let plain = Client::builder(TokioExecutor::new()).build(connector);
    let uri: hyper::Uri = format!("{base}/x").parse().context("plain URI")?;

    let clients = [
        Client3::Exec(handle),
        Client3::Link(link),
        Client3::Plain(plain, uri),
    ];
    for client in &clients {
        for _ in 0..counts.http_warmup {
            client.request().await?;
        }
    }
    let per_round = counts.http_requests / counts.http_rounds.max(1);
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for round in 0..counts.http_rounds {
        // Rotate who goes first, so no client always follows the same other one.
        for k in 0..clients.len() {
            let i = (round + k) % clients.len();
            let (Some(client), Some(samples)) = (clients.get(i), samples.get_mut(i)) else {
                bail!("client {i} missing");
            };
            for _ in 0..per_round {
                let started = Instant::now();
                client.request().await?;
                samples.push(started.elapsed());
            }
        }
    }
    let [exec, link, plain] = samples.map(Stats::of);
    println!("HTTP GET via exec `fetch` (queue + wasm guest + host http + HttpLink): {exec}");
    println!("HTTP GET via HttpLink::send (host client, no guest, no queue): {link}");
    println!("HTTP GET via plain hyper-util Client (HttpConnector, keep-alive): {plain}");
    println!(
        "  ratio exec / plain: p50 {:.2}x, p99 {:.2}x (p50 +{})",
        ratio(exec.p50, plain.p50),
        ratio(exec.p99, plain.p99),
        fmt(exec.p50.saturating_sub(plain.p50))
    );
    println!(
        "  ratio HttpLink / plain: p50 {:.2}x, p99 {:.2}x (p50 +{})",
        ratio(link.p50, plain.p50),
        ratio(link.p99, plain.p99),
        fmt(link.p50.saturating_sub(plain.p50))
    );
    println!(
        "  exec - HttpLink at p50 (queue + guest + interface): {}",
        fmt(exec.p50.saturating_sub(link.p50))
    );
    println!(
        "  server connections opened: {} for 3 clients (keep-alive holds when this is 3)",
        connections.load(Ordering::Relaxed)
    );
    runtime.shutdown().await;
    Ok(())
}

/// One of the three HTTP clients compared.
enum Client3 {
    Exec(ModuleHandle),
    Link(HttpLink),
    Plain(Client<HttpConnector, Full<Bytes>>, hyper::Uri),
}

impl Client3 {
    /// One GET /x, checked to have answered 200 with the whole body.
    async fn request(&self) -> anyhow::Result<()> {
        match self {
            Client3::Exec(handle) => {
                let result = handle
                    .exec("fetch", json!(["/x"]), ExecOptions::default())
                    .await?;
                if result != json!({ "status": 200, "bytes": BODY.len() }) {
                    bail!("fetch returned {result}");
                }
            }
            Client3::Link(link) => {
                let request = HttpRequest {
                    method: hyper::Method::GET,
                    path: "/x".to_string(),
                    headers: Vec::new(),
                    body: Vec::new(),
                };
                let response = link.send(request, link.default_deadline()).await?;
                if response.status != 200 || response.body.len() != BODY.len() {
                    bail!(
                        "HttpLink answered {} with {} bytes",
                        response.status,
                        response.body.len()
                    );
                }
            }
            Client3::Plain(client, uri) => {
                let request = hyper::Request::get(uri.clone()).body(Full::new(Bytes::new()))?;
                let response = client.request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                if status != hyper::StatusCode::OK || body.len() != BODY.len() {
                    bail!("the plain client got {status} with {} bytes", body.len());
                }
            }
        }
        Ok(())
    }
}

/// A minimal HTTP/1.1 keep-alive server on 127.0.0.1: every request (headers only, no
/// body) is answered with the same response. Counts connections.
async fn serve(connections: Arc<AtomicUsize>) -> anyhow::Result<SocketAddr> {
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        BODY.len()
    )
    .into_bytes()
    .into_iter()
    .chain(BODY.iter().copied())
    .collect::<Vec<u8>>();
    let response: Arc<[u8]> = response.into();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the server")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let response = Arc::clone(&response);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                let mut filled = 0;
                loop {
                    // Answer every complete request head in the buffer.
                    while let Some(end) = buffer
                        .get(..filled)
                        .and_then(|data| data.windows(4).position(|w| w == b"\r\n\r\n"))
                    {
                        if stream.write_all(&response).await.is_err() {
                            return;
                        }
                        buffer.copy_within(end + 4..filled, 0);
                        filled -= end + 4;
                    }
                    let Some(free) = buffer.get_mut(filled..).filter(|free| !free.is_empty())
                    else {
                        return; // a request head larger than the buffer
                    };
                    match stream.read(free).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => filled += n,
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// 2. The cost of one `capability::decide`.
fn capability_decisions(counts: &Counts) -> anyhow::Result<()> {
    let endpoint: Endpoint = "projector.local:4352".parse()?;
    let stream_grant = Grant::new(
        "cap-stream",
        Some(endpoint.clone()),
        [
            "amp".to_string(),
            "lights".to_string(),
            "screen".to_string(),
        ]
        .into(),
    );
    let resolved: SocketAddr = "192.168.1.17:4352".parse()?;
    let base: BaseUri = "http://display-17.example.org:8080/api".parse()?;
    let origin = base.origin.clone();
    let http_grant = Grant::new("cap-http", None, BTreeSet::new()).with_base_uri(base);
    println!(
        "capability::decide: {} decisions per kind in {} timed batches; ns per decision as the median batch (fastest batch); no tracing subscriber installed",
        counts.decisions, counts.decide_batches
    );
    let cases: [(&str, &Grant, Request<'_>, bool); 5] = [
        (
            "Connect (allowed)",
            &stream_grant,
            Request::Connect(&endpoint),
            true,
        ),
        (
            "ConnectResolved (allowed)",
            &stream_grant,
            Request::ConnectResolved(&endpoint, resolved),
            true,
        ),
        (
            "HttpRequest (allowed)",
            &http_grant,
            Request::HttpRequest(&origin),
            true,
        ),
        (
            "Module (allowed, in the system)",
            &stream_grant,
            Request::Module("lights"),
            true,
        ),
        (
            "Module (denied, not in the system; formats the reason and calls tracing::warn!)",
            &stream_grant,
            Request::Module("boiler"),
            false,
        ),
    ];
    for (label, grant, request, allowed) in cases {
        if (capability::decide(grant, request) == Decision::Allow) != allowed {
            bail!("{label}: unexpected decision");
        }
        let (median, fastest) = time_decisions(counts, grant, request);
        println!("decide {label}: {median:.1} ns ({fastest:.1} ns)");
    }

    // The same denial with a subscriber that formats every warning (written to a sink),
    // as the `warden` binary's default `warn` filter would.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::sink)
        .finish();
    let logged = Counts {
        decisions: counts.decisions / 10,
        ..*counts
    };
    let (median, fastest) = tracing::subscriber::with_default(subscriber, || {
        time_decisions(&logged, &stream_grant, Request::Module("boiler"))
    });
    println!(
        "decide Module (denied) with a fmt subscriber at `warn` writing to a sink: {median:.1} ns ({fastest:.1} ns), {} decisions",
        logged.decisions
    );

    // The connection-rate token bucket: only the first CONNECTION_BURST decisions of a
    // grant are allowed (then CONNECTIONS_PER_SECOND), so time the allowed path on fresh
    // grants and the denied path on an exhausted one.
    let burst = usize::try_from(capability::CONNECTION_BURST)?;
    let grants: Vec<Grant> = (0..counts.decisions / 10 / burst)
        .map(|i| {
            Grant::new(
                format!("bucket-{i}"),
                Some(endpoint.clone()),
                BTreeSet::new(),
            )
        })
        .collect();
    let started = Instant::now();
    let mut allowed = 0usize;
    for grant in &grants {
        for _ in 0..burst {
            if black_box(capability::decide(
                black_box(grant),
                black_box(Request::OpenConnection),
            )) == Decision::Allow
            {
                allowed += 1;
            }
        }
    }
    let per = started.elapsed().as_secs_f64() * 1e9 / (grants.len() * burst).max(1) as f64;
    println!(
        "decide OpenConnection (allowed: the first {burst} on each of {} fresh grants; {allowed} allowed): {per:.1} ns",
        grants.len()
    );
    let exhausted = grants.first().context("no grant")?;
    let (median, fastest) = time_decisions(counts, exhausted, Request::OpenConnection);
    println!(
        "decide OpenConnection (after the burst: denied but for the refill of {}/s): {median:.1} ns ({fastest:.1} ns)",
        capability::CONNECTIONS_PER_SECOND
    );
    Ok(())
}

/// Nanoseconds per `decide(grant, request)`: the median and the fastest of the batches.
fn time_decisions(counts: &Counts, grant: &Grant, request: Request<'_>) -> (f64, f64) {
    let batches = counts.decide_batches.max(1);
    let per_batch = (counts.decisions / batches).max(1);
    // A tenth of a batch, untimed, to warm caches and the branch predictor.
    for _ in 0..per_batch / 10 {
        black_box(capability::decide(black_box(grant), black_box(request)));
    }
    let mut results: Vec<f64> = (0..batches)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..per_batch {
                black_box(capability::decide(black_box(grant), black_box(request)));
            }
            started.elapsed().as_secs_f64() * 1e9 / per_batch as f64
        })
        .collect();
    results.sort_by(f64::total_cmp);
    let median = results.get(results.len() / 2).copied().unwrap_or_default();
    let fastest = results.first().copied().unwrap_or_default();
    (median, fastest)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE)
}
