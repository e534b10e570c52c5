//! The transports end to end through the runtime: TLS to a device, HTTP, a component
//! built against the older WIT, and a hostile driver trying to leave its module's grant.
//! Every forbidden target is a listener that counts connections, so "denied" also means
//! "no packet left for it".

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_rustls::TlsAcceptor;
use warden::runtime::{ExecError, ExecOptions, ModuleConfig, RuntimeEvent, StartError};
use warden_tests::guests;

use crate::support;

/// A listener that accepts and counts connections and never answers: a forbidden target.
async fn forbidden_target() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, count)
}

/// A minimal HTTP/1.1 server: `respond(request line)` gives the whole response. Counts
/// connections.
async fn http_server(
    respond: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    serve_http(respond, None).await
}

/// [`http_server`], over TLS with `acceptor` when given.
async fn serve_http(
    respond: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    acceptor: Option<TlsAcceptor>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let respond = Arc::clone(&respond);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            answer_requests(stream, respond.as_ref()).await;
                        }
                    }
                    None => answer_requests(stream, respond.as_ref()).await,
                }
            });
        }
    });
    (addr, count)
}

async fn answer_requests<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    stream: S,
    respond: &(dyn Fn(&str) -> Vec<u8> + Send + Sync),
) {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(request_line)) = lines.next_line().await {
        // Skip the headers (requests here have no body).
        while let Ok(Some(header)) = lines.next_line().await {
            if header.is_empty() {
                break;
            }
        }
        let response = respond(&request_line);
        if write.write_all(&response).await.is_err() {
            return;
        }
    }
}

fn response(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Wait for a log line of `module` containing `text`.
async fn wait_log(events: &mut broadcast::Receiver<RuntimeEvent>, module: &str, text: &str) {
    let (module, text) = (module.to_string(), text.to_string());
    support::wait_event(events, |event| {
        matches!(event, RuntimeEvent::Log { module: m, message, .. }
            if *m == module && message.contains(&text))
    })
    .await;
}

fn driver_error_kind(error: &ExecError) -> &'static str {
    match error {
        ExecError::Driver(driver) => driver.kind,
        other => panic!("expected a driver error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_against_wit_0_1_0_still_runs() {
    let runtime = support::runtime();
    let driver = support::load(&runtime, guests::LEGACY_V010);
    assert!(
        driver
            .inspection
            .imports
            .iter()
            .any(|name| name == "warden:driver/status@0.1.0"),
        "{:?}",
        driver.inspection.imports
    );
    let module = support::start(&runtime, ModuleConfig::new("legacy", driver)).await;
    support::wait_status(&module, "version", &json!("0.1.0")).await;
    let reply = module
        .exec("hello", json!([]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(reply, json!("hello from 0.1.0"));
    runtime.shutdown().await;
}

/// A TLS acceptor with a fresh self-signed certificate, and the certificate's SHA-256
/// fingerprint.
fn self_signed_acceptor() -> (TlsAcceptor, String) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["device.invalid".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let fingerprint = hex::encode(Sha256::digest(cert.der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), fingerprint)
}

/// A TLS line-echo server with a fresh self-signed certificate; returns its address,
/// the certificate's SHA-256 fingerprint and the handshake count.
async fn tls_line_echo() -> (SocketAddr, String, Arc<AtomicUsize>) {
    let (acceptor, fingerprint) = self_signed_acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&handshakes);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), Arc::clone(&counter));
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let (read, mut write) = tokio::io::split(stream);
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("tls said {line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, fingerprint, handshakes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_driver_talks_only_to_a_verified_device() {
    let (addr, fingerprint, handshakes) = tls_line_echo().await;
    let runtime = support::runtime();
    let driver = support::load(&runtime, guests::TLS_ECHO);
    let mut events = runtime.events();

    // Pinned: the device's own certificate is accepted.
    let mut config = ModuleConfig::new("tls-pinned", driver.clone());
    config.endpoint = Some(addr.to_string().parse().unwrap());
    config.settings = json!({ "tls_fingerprint_sha256": fingerprint });
    let pinned = support::start(&runtime, config).await;
    support::wait_status(&pinned, "connected", &json!(true)).await;
    let reply = pinned
        .exec("ask", json!(["hi"]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(reply, json!("tls said hi"));

    // System roots: a self-signed device is not trusted, so nothing is sent.
    let mut config = ModuleConfig::new("tls-default", driver.clone());
    config.endpoint = Some(addr.to_string().parse().unwrap());
    let untrusted = support::start(&runtime, config).await;
    let error = untrusted
        .exec("ask", json!(["secret"]), ExecOptions::default())
        .await
        .unwrap_err();
    assert_eq!(driver_error_kind(&error), "not-connected", "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");

    // Danger mode connects and says so in the module's log at every connect.
    let mut config = ModuleConfig::new("tls-danger", driver.clone());
    config.endpoint = Some(addr.to_string().parse().unwrap());
    config.settings = json!({ "danger_accept_invalid_certs": true });
    let danger = support::start(&runtime, config).await;
    wait_log(&mut events, "tls-danger", "verification is off").await;
    assert_eq!(
        danger
            .exec("ask", json!(["risky"]), ExecOptions::default())
            .await
            .unwrap(),
        json!("tls said risky")
    );

    // Contradictory settings are refused at start and on update, keeping the old ones.
    let mut config = ModuleConfig::new("tls-bad", driver.clone());
    config.endpoint = Some(addr.to_string().parse().unwrap());
    config.settings =
        json!({ "danger_accept_invalid_certs": true, "tls_fingerprint_sha256": fingerprint });
    assert!(matches!(
        runtime.start_module(config),
        Err(StartError::InvalidSettings(_))
    ));
    let refused = pinned
        .update_settings(json!({ "tls_fingerprint_sha256": "00" }))
        .await
        .unwrap_err();
    assert_eq!(driver_error_kind(&refused), "invalid-arguments");
    assert_eq!(
        pinned
            .exec("ask", json!(["still"]), ExecOptions::default())
            .await
            .unwrap(),
        json!("tls said still")
    );
    // New trust settings rebuild the link: a wrong pin now refuses the same device…
    pinned
        .update_settings(json!({ "tls_fingerprint_sha256": "ab".repeat(32) }))
        .await
        .unwrap();
    let error = pinned
        .exec("ask", json!(["again"]), ExecOptions::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("pinned"), "{error}");
    // …and the right one restores it.
    pinned
        .update_settings(json!({ "tls_fingerprint_sha256": fingerprint }))
        .await
        .unwrap();
    assert_eq!(
        pinned
            .exec("ask", json!(["back"]), ExecOptions::default())
            .await
            .unwrap(),
        json!("tls said back")
    );
    assert!(handshakes.load(Ordering::SeqCst) >= 3);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_requests_verify_the_device_and_danger_mode_is_logged() {
    let (acceptor, fingerprint) = self_signed_acceptor();
    let (device, _) = serve_http(|_| response("200 OK", "", "secure"), Some(acceptor)).await;
    let runtime = support::runtime();
    let driver = support::load(&runtime, guests::NET_PROBE);
    let mut events = runtime.events();
    let base = format!("https://{device}/");
    let start = |id: &str, settings: Value| {
        let mut config = ModuleConfig::new(id, driver.clone());
        config.base_uri = Some(base.parse().unwrap());
        config.settings = settings;
        support::start(&runtime, config)
    };
    let pinned = start(
        "https-pinned",
        json!({ "tls_fingerprint_sha256": fingerprint }),
    )
    .await;
    let reply = pinned
        .exec("fetch", json!(["/x"]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(reply, json!({ "status": 200, "bytes": 6 }));
    let untrusted = start("https-default", json!({})).await;
    let error = untrusted
        .exec("fetch", json!(["/x"]), ExecOptions::default())
        .await
        .unwrap_err();
    assert_eq!(driver_error_kind(&error), "not-connected", "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");
    assert_ne!(untrusted.status("connected"), Some(json!(true)));
    let danger = start(
        "https-danger",
        json!({ "danger_accept_invalid_certs": true }),
    )
    .await;
    danger
        .exec("fetch", json!(["/x"]), ExecOptions::default())
        .await
        .unwrap();
    wait_log(&mut events, "https-danger", "verification is off").await;
    // TLS settings on a plain-http base URI are refused rather than ignored.
    let mut config = ModuleConfig::new("http-with-tls", driver.clone());
    config.base_uri = Some(format!("http://{device}").parse().unwrap());
    config.settings = json!({ "tls_fingerprint_sha256": fingerprint });
    assert!(matches!(
        runtime.start_module(config),
        Err(StartError::InvalidSettings(_))
    ));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_module_aimed_at_the_broadcast_address_is_refused() {
    let runtime = support::runtime();
    let driver = support::load(&runtime, guests::UDP_ECHO);
    let mut events = runtime.events();
    let mut config = ModuleConfig::new("shout", driver);
    config.endpoint = Some("255.255.255.255:47808".parse().unwrap());
    let module = support::start(&runtime, config).await;
    let error = module
        .exec("ask", json!(["who is there"]), ExecOptions::default())
        .await
        .unwrap_err();
    assert_eq!(driver_error_kind(&error), "denied", "{error}");
    assert!(error.to_string().contains("broadcast rule"), "{error}");
    wait_log(&mut events, "shout", "broadcast rule").await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_http_driver_cannot_leave_its_origin() {
    let (elsewhere, elsewhere_hits) = forbidden_target().await;
    let steal = format!("http://{elsewhere}/steal");
    let location = steal.clone();
    let (device, _) = http_server(move |line| {
        if line.starts_with("GET /api/redirect ") {
            response("302 Found", &format!("location: {location}\r\n"), "")
        } else if line.starts_with("GET /api/huge ") {
            // Announces nothing, then streams far more than the limit.
            let mut body = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..600 {
                body.extend_from_slice(b"2000\r\n");
                body.extend_from_slice(&[b'x'; 0x2000]);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            body
        } else {
            response("200 OK", "", "fine")
        }
    })
    .await;
    let runtime = support::runtime();
    let driver = support::load(&runtime, guests::NET_PROBE);
    let mut events = runtime.events();
    let mut config = ModuleConfig::new("probe", driver);
    config.base_uri = Some(format!("http://{device}/api").parse().unwrap());
    config.http.max_body = 1 << 20;
    let probe = support::start(&runtime, config).await;

    let ok = probe
        .exec("fetch", json!(["/status"]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(ok, json!({ "status": 200, "bytes": 4 }));
    support::wait_status(&probe, "connected", &json!(true)).await;

    // Another host or port, named in the path.
    for path in [steal.clone(), format!("//{elsewhere}/x")] {
        let error = probe
            .exec("fetch", json!([path]), ExecOptions::default())
            .await
            .unwrap_err();
        assert_eq!(driver_error_kind(&error), "denied", "{error}");
    }
    wait_log(&mut events, "probe", "origin rule").await;
    // A redirect to another origin.
    let error = probe
        .exec("fetch", json!(["/redirect"]), ExecOptions::default())
        .await
        .unwrap_err();
    assert_eq!(driver_error_kind(&error), "denied", "{error}");
    assert!(error.to_string().contains("redirect"), "{error}");
    // An unbounded body.
    let error = probe
        .exec("fetch", json!(["/huge"]), ExecOptions::default())
        .await
        .unwrap_err();
    assert_eq!(driver_error_kind(&error), "limit", "{error}");
    // The stream transport it does not have.
    let error = probe
        .exec("raw_send", json!([]), ExecOptions::default())
        .await
        .unwrap_err();
    assert_eq!(driver_error_kind(&error), "denied", "{error}");

    // Every attempt was counted; no packet left for the other origin; the module still
    // works.
    assert!(probe.denials() >= 4, "{} denials", probe.denials());
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0);
    let ok = probe
        .exec("fetch", json!(["/status"]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(ok["status"], json!(200));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_hits_the_rate_limit() {
    // Every response closes its connection, so each request needs a new one.
    let (device, connections) =
        http_server(|_| response("200 OK", "connection: close\r\n", "x")).await;
    let runtime = support::runtime();
    let driver = support::load(&runtime, guests::NET_PROBE);
    let mut events = runtime.events();
    let mut config = ModuleConfig::new("flood", driver);
    config.base_uri = Some(format!("http://{device}").parse().unwrap());
    config.limits.exec_timeout = Duration::from_secs(20);
    let probe = support::start(&runtime, config).await;
    let started = std::time::Instant::now();
    let result = probe
        .exec(
            "flood",
            json!([2000, "/"]),
            ExecOptions {
                timeout: Some(Duration::from_secs(20)),
                ..ExecOptions::default()
            },
        )
        .await
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let first_error = result["first_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(first_error.contains("Denied"), "{result}");
    assert!(first_error.contains("connection rate limit"), "{result}");
    wait_log(&mut events, "flood", "connection rate limit").await;
    // The burst plus the rate over the time it ran, and a little slack.
    let bound = 50.0 + 20.0 * elapsed + 5.0;
    let opened = connections.load(Ordering::SeqCst) as f64;
    assert!(opened <= bound, "{opened} connections in {elapsed:.1} s");
    assert!(result["answered"].as_u64().unwrap() >= 50, "{result}");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_driver_reads_only_its_own_settings_and_its_own_system() {
    let (device, _) = http_server(|_| response("200 OK", "", "{}")).await;
    let runtime = support::runtime();
    let probe_driver = support::load(&runtime, guests::NET_PROBE);
    let echo_driver = support::load(&runtime, guests::BENCH_LOGIC);
    runtime.set_system("room-1", vec!["probe".into(), "neighbour".into()]);
    runtime.set_system("room-2", vec!["stranger".into()]);
    let mut events = runtime.events();
    let mut config = ModuleConfig::new("probe", probe_driver);
    config.base_uri = Some(format!("http://{device}").parse().unwrap());
    config.system = Some("room-1".into());
    config.settings = json!({ "mine": "probe-secret" });
    let probe = support::start(&runtime, config).await;
    for (id, system, secret) in [
        ("neighbour", "room-1", "neighbour-secret"),
        ("stranger", "room-2", "stranger-secret"),
    ] {
        let mut config = ModuleConfig::new(id, echo_driver.clone());
        config.system = Some(system.into());
        config.settings = json!({ "password": secret });
        support::start(&runtime, config).await;
    }
    let seen = probe
        .exec("my_settings", json!([]), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(seen["mine"], json!("probe-secret"));
    let text = seen.to_string();
    assert!(!text.contains("neighbour-secret") && !text.contains("stranger-secret"));

    // Outside its system: denied and logged; inside: allowed.
    for (function, args) in [
        ("peek", json!(["stranger", "password"])),
        ("call_other", json!(["stranger", "ping"])),
    ] {
        let error = probe
            .exec(function, args, ExecOptions::default())
            .await
            .unwrap_err();
        assert_eq!(driver_error_kind(&error), "denied", "{function}: {error}");
    }
    wait_log(&mut events, "probe", "denied").await;
    let names = runtime.system_modules("room-1");
    let neighbour = names
        .iter()
        .find(|(_, id)| id == "neighbour")
        .map(|(name, _)| name.clone())
        .unwrap();
    let peeked = probe
        .exec(
            "peek",
            json!([neighbour, "password"]),
            ExecOptions::default(),
        )
        .await
        .unwrap();
    // Status is published state, not settings: the neighbour never published it.
    assert_eq!(peeked, Value::Null);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_name_resolving_to_loopback_is_refused() {
    // The machine's own host name resolves to a loopback address (in /etc/hosts); as a
    // device endpoint it must not reach the host's own services.
    let name = std::fs::read_to_string("/etc/hostname")
        .map(|text| text.trim().to_string())
        .unwrap_or_default();
    let loopback = std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 80))
        .map(|mut addrs| addrs.any(|addr| addr.ip().is_loopback()))
        .unwrap_or(false);
    assert!(
        loopback,
        "this test needs the host name `{name}` to resolve to a loopback address"
    );
    let (target, hits) = forbidden_target().await;
    let runtime = support::runtime();
    let driver = support::load(&runtime, guests::ECHO);
    let mut events = runtime.events();
    let mut config = ModuleConfig::new("rebind", driver);
    config.endpoint = Some(format!("{name}:{}", target.port()).parse().unwrap());
    let module = support::start(&runtime, config).await;
    let error = module
        .exec("ask", json!(["hello", 300]), ExecOptions::default())
        .await
        .unwrap_err();
    assert_eq!(driver_error_kind(&error), "denied", "{error}");
    assert!(error.to_string().contains("address rule"), "{error}");
    wait_log(&mut events, "rebind", "address rule").await;
    // Give a wrong implementation time to connect, then check nothing did.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    runtime.shutdown().await;
}
