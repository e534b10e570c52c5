//! API benchmark (issue 5): an exec through HTTPS and through the control WebSocket on
//! loopback, compared in the same run with the same exec in process, and the fan-out of
//! one status change to 1,000 bound WebSocket clients. Results and their analysis:
//! docs/performance.md, "API (issue 5)".
//!
//! `cargo bench -p warden-tests --bench api` (add `-- --quick` for smaller counts). It
//! prints one labelled line per figure; the target is an exec p50 of 500 µs or less over
//! loopback.
//!
//! The server is the real one (`api::server::serve`: TLS 1.3, HTTP/1.1, the upgrade) in
//! this process, on 127.0.0.1, with a store in a temporary SQLite file. The module runs the
//! `echo` fixture; the function is `add(2, 3)`, which does no I/O, so the figures are the
//! host's own cost. Clients: hyper's HTTP/1.1 client on one keep-alive TLS connection, and
//! tokio-tungstenite on one TLS connection, each sending one request at a time. The three
//! paths run in interleaved rounds so that noise falls on all of them alike.
//!
//! Last, requests per second under load: `wrk` (Debian's package; scripts/setup installs
//! it) with 2 threads and 32 keep-alive HTTPS connections against the status read and the
//! exec of the same module, in a separate process on the same 2 cores.

#[path = "support/stats.rs"]
mod stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use stats::{Stats, fmt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use warden::api::tls::{CertificateSource, CertificateStore};
use warden::api::{ApiState, app};
use warden::control::{Control, ControlConfig};
use warden::crypto::{KeyId, KeyRing, MasterKey};
use warden::runtime::{Runtime, RuntimeConfig};
use warden::store::{Actor, Approval, KeySource, NewModule, NewSystem, Store};

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

struct Counts {
    rounds: usize,
    per_round: usize,
    clients: usize,
    changes: usize,
}

async fn tls_connect(port: u16, ca: &std::path::Path, alpn: bool) -> anyhow::Result<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(certificate?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    if alpn {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    Ok(TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?)
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let counts = if quick {
        Counts {
            rounds: 5,
            per_round: 100,
            clients: 100,
            changes: 5,
        }
    } else {
        Counts {
            rounds: 10,
            per_round: 500,
            clients: 1000,
            changes: 20,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(counts))
}

async fn run(counts: Counts) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("warden-bench-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&dir, &counts).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn bench(dir: &std::path::Path, counts: &Counts) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let ring = KeyRing::new(vec![MasterKey::generate(KeyId(1))], KeyId(1))?;
    let store = Store::open(
        &format!("sqlite://{}", dir.join("warden.db").display()),
        KeySource::fixed(ring),
    )
    .await?;
    let mut runtime_config = RuntimeConfig::new(warden_tests::cache_dir());
    runtime_config.max_modules = 16;
    let control = Control::new(
        store.clone(),
        Runtime::new(runtime_config)?,
        ControlConfig::default(),
    );
    // A device for the echo module to connect to (it is never asked anything).
    let device = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let device_addr = device.local_addr()?;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = device.accept().await {
            held.push(socket);
        }
    });
    let actor = Actor("bench".to_string());
    let driver = control
        .register_driver(
            &actor,
            std::fs::read(warden_tests::guests::ECHO)?,
            None,
            None,
        )
        .await?
        .id;
    control
        .set_approval(&actor, &driver, Approval::Approved, None)
        .await?;
    let module = store
        .create_module(
            &actor,
            &NewModule {
                driver_id: driver,
                endpoint: Some(device_addr.to_string()),
                running: true,
                ..NewModule::default()
            },
        )
        .await?
        .id;
    let room = store
        .create_system(
            &actor,
            &NewSystem {
                name: "Bench".to_string(),
                modules: vec![module.clone()],
                ..NewSystem::default()
            },
        )
        .await?
        .id;
    control.start_running().await?;
    let handle = control
        .runtime()
        .module(&module)
        .context("module running")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let certificates = Arc::new(CertificateStore::load(
        CertificateSource::SelfSigned {
            dir: dir.join("tls"),
            names: vec![],
        },
        now,
    )?);
    let ca = dir.join("tls/self-signed.crt");
    let config = Arc::new(warden::api::tls::server_config(certificates)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(warden::api::server::serve(
        listener,
        config,
        app(ApiState {
            auth: warden::auth::Auth::new(
                control.store().clone(),
                &warden::auth::AuthConfig::default(),
                "https://127.0.0.1",
            )?,
            control: control.clone(),
            danger_no_auth: true,
        }),
        stopped,
    ));

    // HTTPS client: one keep-alive connection.
    let (mut http, connection) = hyper::client::conn::http1::handshake(
        hyper_util::rt::TokioIo::new(tls_connect(port, &ca, true).await?),
    )
    .await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("HTTPS client connection: {error:?}");
        }
    });
    let exec_path = format!("/api/engine/v2/modules/{module}/exec/add");
    let mut https_exec = async || -> anyhow::Result<Duration> {
        let request = hyper::Request::post(&exec_path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"[2, 3]")))?;
        http.ready().await.context("HTTPS connection")?;
        let start = Instant::now();
        let response = http.send_request(request).await.context("HTTPS request")?;
        let body = response.into_body().collect().await?.to_bytes();
        let elapsed = start.elapsed();
        anyhow::ensure!(&body[..] == b"5", "unexpected reply {body:?}");
        Ok(elapsed)
    };
    // WebSocket client.
    let (mut socket, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{port}/api/engine/v2/systems/control"),
        tls_connect(port, &ca, false).await?,
    )
    .await?;
    let mut next_id = 0_u64;
    let mut ws_exec = async || -> anyhow::Result<Duration> {
        next_id += 1;
        let request = json!({"id": next_id, "cmd": "exec", "sys": room, "mod": "Echo",
                             "index": 1, "name": "add", "args": [2, 3]})
        .to_string();
        let start = Instant::now();
        socket.send(Message::Text(request.into())).await?;
        loop {
            let Some(message) = socket.next().await else {
                anyhow::bail!("the socket closed");
            };
            if let Message::Text(text) = message? {
                let reply: Value = serde_json::from_str(text.as_str())?;
                if reply.get("id") == Some(&json!(next_id)) {
                    anyhow::ensure!(
                        reply.get("value") == Some(&json!(5)),
                        "unexpected reply {reply}"
                    );
                    return Ok(start.elapsed());
                }
            }
        }
    };
    let in_process = async || -> anyhow::Result<Duration> {
        let start = Instant::now();
        let value = handle
            .exec("add", json!([2, 3]), Default::default())
            .await?;
        let elapsed = start.elapsed();
        anyhow::ensure!(value == json!(5));
        Ok(elapsed)
    };

    // Warm up, then interleaved rounds.
    for _ in 0..200 {
        in_process().await.context("in process")?;
        https_exec().await.context("HTTPS")?;
        ws_exec().await.context("WebSocket")?;
    }
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for round in 0..counts.rounds {
        for step in 0..3 {
            let path = (round + step) % 3;
            for _ in 0..counts.per_round {
                let elapsed = match path {
                    0 => in_process().await?,
                    1 => https_exec().await?,
                    _ => ws_exec().await?,
                };
                if let Some(bucket) = samples.get_mut(path) {
                    bucket.push(elapsed);
                }
            }
        }
    }
    let [local, https, ws] = samples.map(Stats::of);
    println!("exec add(2, 3) in process:      {local}");
    println!("exec add(2, 3) over HTTPS:      {https}");
    println!("exec add(2, 3) over WebSocket:  {ws}");
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "ratio to in process, p50: HTTPS {:.1}x (+{}), WebSocket {:.1}x (+{})",
        ratio(https.p50, local.p50),
        fmt(https.p50.saturating_sub(local.p50)),
        ratio(ws.p50, local.p50),
        fmt(ws.p50.saturating_sub(local.p50)),
    );
    drop(socket);

    fan_out(port, &ca, &room, &handle, counts).await?;
    load(port, &module, dir, counts).await?;

    stop.send(true)?;
    server.await?;
    control.shutdown().await;
    store.close().await;
    Ok(())
}

/// `clients` WebSocket clients bind one status key; each change is timed from the publish
/// to its arrival at every client.
async fn fan_out(
    port: u16,
    ca: &std::path::Path,
    room: &str,
    handle: &warden::runtime::ModuleHandle,
    counts: &Counts,
) -> anyhow::Result<()> {
    let (arrivals, mut arrived) =
        tokio::sync::mpsc::unbounded_channel::<(usize, String, Instant)>();
    let (ready, mut all_ready) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    let connect_start = Instant::now();
    for client in 0..counts.clients {
        let tls = tls_connect(port, ca, false).await?;
        let (mut socket, _) = tokio_tungstenite::client_async(
            format!("wss://localhost:{port}/api/engine/v2/systems/control"),
            tls,
        )
        .await?;
        let bind = json!({"id": 1, "cmd": "bind", "sys": room, "mod": "Echo", "index": 1,
                          "name": "fanout"});
        socket.send(Message::Text(bind.to_string().into())).await?;
        let arrivals = arrivals.clone();
        let ready = ready.clone();
        tasks.push(tokio::spawn(async move {
            let mut told = false;
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if value.get("type") == Some(&json!("notify")) {
                    let at = Instant::now();
                    if !told {
                        told = true;
                        let _ = ready.send(());
                    }
                    if let Some(tag) = value.get("value").and_then(Value::as_str) {
                        let _ = arrivals.send((client, tag.to_string(), at));
                    }
                }
            }
        }));
    }
    for _ in 0..counts.clients {
        all_ready.recv().await.context("a client never bound")?;
    }
    println!(
        "fan-out: {} clients connected over TLS and bound in {}",
        counts.clients,
        fmt(connect_start.elapsed())
    );
    let mut latencies = Vec::new();
    let mut totals = Vec::new();
    for change in 0..counts.changes {
        let tag = format!("change {change}");
        let start = Instant::now();
        handle
            .exec("publish", json!(["fanout", tag]), Default::default())
            .await?;
        let mut seen = 0;
        while seen < counts.clients {
            let (_, got, at) = arrived.recv().await.context("arrivals ended")?;
            if got == tag {
                seen += 1;
                latencies.push(at.duration_since(start));
            }
        }
        totals.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "fan-out of one change to {} clients, per client: {}",
        counts.clients,
        Stats::of(latencies)
    );
    println!(
        "fan-out of one change to {} clients, until the last: {}",
        counts.clients,
        Stats::of(totals)
    );
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// Requests per second with `wrk` against the running server: the module's status, and
/// its `add` function.
async fn load(
    port: u16,
    module: &str,
    dir: &std::path::Path,
    counts: &Counts,
) -> anyhow::Result<()> {
    if std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("load: wrk is not installed (scripts/setup installs it); skipped");
        return Ok(());
    }
    let seconds = if counts.rounds < 10 { "3s" } else { "10s" };
    let post = dir.join("exec.lua");
    std::fs::write(
        &post,
        "wrk.method = \"POST\"\nwrk.body = \"[2, 3]\"\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )?;
    for (label, path, script) in [
        (
            "GET  state",
            format!("/api/engine/v2/modules/{module}/state"),
            None,
        ),
        (
            "POST exec add(2, 3)",
            format!("/api/engine/v2/modules/{module}/exec/add"),
            Some(&post),
        ),
    ] {
        let mut command = std::process::Command::new("wrk");
        command.args([
            "--threads",
            "2",
            "--connections",
            "32",
            "--duration",
            seconds,
            "--latency",
        ]);
        if let Some(script) = script {
            command.arg("--script").arg(script);
        }
        command.arg(format!("https://127.0.0.1:{port}{path}"));
        // wrk runs while this process serves: wait for it off the runtime's workers.
        let output = tokio::task::spawn_blocking(move || command.output()).await??;
        let text = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(output.status.success(), "wrk failed: {text}");
        anyhow::ensure!(
            !text.contains("Non-2xx"),
            "wrk saw errors from {path}: {text}"
        );
        let field = |prefix: &str| {
            text.lines()
                .find_map(|line| line.trim().strip_prefix(prefix).map(str::trim))
                .unwrap_or("?")
                .to_string()
        };
        println!(
            "load {label}: {} requests/s, latency p50 {} p99 {} (wrk, 2 threads, 32 connections, {seconds})",
            field("Requests/sec:"),
            field("50%"),
            field("99%"),
        );
    }
    Ok(())
}
