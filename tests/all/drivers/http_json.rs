//! Tests of the http_json driver, through the `warden` CLI (and the runtime library for
//! timed polling and a lowered body limit), against httpbin: the PyPI package pinned in
//! scripts/setup, started by tests/sims/httpbin_server.py on 127.0.0.1. httpbin is someone
//! else's implementation of HTTP's corners (authentication schemes, redirects, delays,
//! streamed bodies), so the driver and the host's HTTP client are checked against it.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden::runtime::{ExecError, ExecOptions, ModuleConfig};
use warden_tests::guests::HTTP_JSON;
use warden_tests::{CliRun, Simulator, free_port, python, repo_root, run_driver, warden};

use crate::support;

/// httpbin on a fresh port of 127.0.0.1.
fn httpbin() -> Simulator {
    let port = free_port();
    let mut command = Command::new(python());
    command
        .arg(repo_root().join("tests/sims/httpbin_server.py"))
        .arg("--port")
        .arg(port.to_string());
    Simulator::start_tcp(command, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn base(service: &Simulator) -> String {
    format!("http://{}", service.addr)
}

/// Run `function` with `args` on a module whose base URI is `base`.
fn exec_at(base: &str, settings: &Value, function: &str, args: Value) -> CliRun {
    run_driver(HTTP_JSON, base, settings, function, &args)
}

fn exec(service: &Simulator, settings: &Value, function: &str, args: Value) -> CliRun {
    exec_at(&base(service), settings, function, args)
}

/// A run that failed with exit code 1 and an error of `kind` mentioning `words`.
fn assert_error(run: &CliRun, kind: &str, words: &str) {
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stdout.trim().is_empty(), "{run:#?}");
    let line = run
        .stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {run:#?}"));
    assert!(line.contains(&format!(" failed: {kind}: ")), "{line}");
    assert!(line.contains(words), "{line}");
}

/// A TCP listener that counts the connections it accepts and never answers.
struct Witness {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Witness {
    fn start(ip: [u8; 4]) -> Witness {
        let listener = TcpListener::bind(SocketAddr::from((ip, 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        // The thread ends with the test binary; it holds nothing but the listener.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buffer = [0u8; 256];
                let _ = stream.read(&mut buffer);
            }
        });
        Witness { addr, accepted }
    }

    fn connections(&self) -> usize {
        std::thread::sleep(Duration::from_millis(200));
        self.accepted.load(Ordering::SeqCst)
    }
}

fn readme_settings() -> Value {
    let readme = std::fs::read_to_string(repo_root().join("drivers/http_json/README.md")).unwrap();
    let start = readme.find("```json\n").unwrap() + "```json\n".len();
    let end = start + readme[start..].find("```").unwrap();
    serde_json::from_str(&readme[start..end]).unwrap()
}

#[test]
fn get_returns_parsed_json_and_the_status() {
    let service = httpbin();
    let run = exec(&service, &json!({}), "get", json!(["/json"]));
    let reply = run.json();
    assert_eq!(reply["status"], 200);
    assert_eq!(reply["content_type"], "application/json");
    assert_eq!(reply["body"]["slideshow"]["title"], "Sample Slide Show");
    // Text that is not JSON comes back as text; a query reaches the service.
    let reply = exec(&service, &json!({}), "get", json!(["/robots.txt"])).json();
    assert_eq!(reply["body"], "User-agent: *\nDisallow: /deny\n");
    let reply = exec(
        &service,
        &json!({}),
        "get",
        json!(["/get?room=east&floor=2"]),
    )
    .json();
    assert_eq!(reply["body"]["args"], json!({"room": "east", "floor": "2"}));
    // Binary bodies come as base64.
    let reply = exec(&service, &json!({}), "get", json!(["/image/png"])).json();
    assert_eq!(reply["body"], Value::Null);
    assert!(
        reply["body_base64"]
            .as_str()
            .unwrap()
            .starts_with("iVBORw0KGgo"),
        "{reply}"
    );
}

#[test]
fn post_put_and_delete_send_json_and_the_service_echoes_it() {
    let service = httpbin();
    let settings = json!({"headers": {"X-Site": "hq"}});
    let body = json!({"level": 35, "on": true, "name": "façade"});
    let reply = exec(
        &service,
        &settings,
        "post",
        json!(["/anything/dimmer", body]),
    )
    .json();
    assert_eq!(reply["status"], 200);
    let echoed = &reply["body"];
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["json"], body);
    assert_eq!(echoed["headers"]["Content-Type"], "application/json");
    assert_eq!(echoed["headers"]["X-Site"], "hq");
    assert!(
        echoed["url"]
            .as_str()
            .unwrap()
            .ends_with("/anything/dimmer")
    );

    let reply = exec(&service, &settings, "put", json!(["/put", {"a": [1, 2]}])).json();
    assert_eq!(reply["body"]["json"], json!({"a": [1, 2]}));
    let reply = exec(&service, &settings, "delete", json!(["/delete"])).json();
    assert_eq!(reply["body"]["url"], format!("{}/delete", base(&service)));

    // A string body with a content type goes as it is.
    let reply = exec(
        &service,
        &settings,
        "post",
        json!({"path": "/post", "body": "level=35&on=1", "content_type": "application/x-www-form-urlencoded"}),
    )
    .json();
    assert_eq!(reply["body"]["form"], json!({"level": "35", "on": "1"}));
}

#[test]
fn configured_commands_fill_their_placeholders() {
    let service = httpbin();
    let settings = readme_settings();
    let reply = exec(
        &service,
        &settings,
        "command",
        json!(["scene", {"room": "east wing", "scene": 3, "fade_ms": 500}]),
    )
    .json();
    let echoed = &reply["body"];
    assert_eq!(echoed["method"], "POST");
    assert_eq!(
        echoed["url"],
        format!("{}/anything/rooms/east%20wing/scene", base(&service))
    );
    assert_eq!(
        echoed["json"],
        json!({"scene": 3, "fade_ms": 500, "by": "warden east wing"})
    );
    assert_eq!(echoed["headers"]["Accept"], "application/json");

    let reply = exec(&service, &settings, "command", json!(["lights_off"])).json();
    assert_eq!(reply["body"]["method"], "PUT");
    assert_eq!(reply["body"]["json"], json!({"on": false}));

    // Refused before anything is sent.
    let run = exec(
        &service,
        &settings,
        "command",
        json!(["scene", {"room": "a"}]),
    );
    assert_error(&run, "invalid-arguments", "missing argument `fade_ms`");
    let run = exec(&service, &settings, "command", json!(["ping", {"x": 1}]));
    assert_error(&run, "invalid-arguments", "argument `x` is not used");
    let run = exec(&service, &settings, "command", json!(["nope"]));
    assert_error(&run, "invalid-arguments", "no command `nope`");
}

#[test]
fn poll_publishes_the_state_document_as_status() {
    let service = httpbin();
    let run = exec(&service, &json!({"state_path": "/json"}), "poll", json!([]));
    assert_eq!(run.json()["slideshow"]["author"], "Yours Truly");
    assert!(
        run.stderr.contains("status slideshow = {"),
        "each top-level key is a status key: {run:#?}"
    );

    let run = exec(
        &service,
        &json!({"state_path": "/get?site=hq", "state_key": "service"}),
        "poll",
        json!([]),
    );
    run.json();
    let line = run
        .stderr
        .lines()
        .find(|line| line.starts_with("status service = "))
        .unwrap_or_else(|| panic!("{run:#?}"));
    let published: Value = serde_json::from_str(&line["status service = ".len()..]).unwrap();
    assert_eq!(published["args"], json!({"site": "hq"}));

    // An empty document is not an object.
    let run = exec(
        &service,
        &json!({"state_path": "/status/200"}),
        "poll",
        json!([]),
    );
    assert_error(&run, "device", "not a JSON object");
    let run = exec(&service, &json!({}), "poll", json!([]));
    assert_error(&run, "invalid-arguments", "no state_path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_is_polled_on_a_timer() {
    let service = httpbin();
    let runtime = support::runtime();
    let driver = support::load(&runtime, HTTP_JSON);
    let mut config = ModuleConfig::new("service", driver);
    config.base_uri = Some(base(&service).parse().unwrap());
    // httpbin's /uuid answers a new UUID every time.
    config.settings = json!({"state_path": "/uuid", "poll_ms": 250});
    let module = support::start(&runtime, config).await;
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 3 {
        assert!(Instant::now() < deadline, "polled values: {seen:?}");
        if let Some(Value::String(uuid)) = module.status("uuid") {
            seen.insert(uuid);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_follows_the_service() {
    let mut service = httpbin();
    let runtime = support::runtime();
    let driver = support::load(&runtime, HTTP_JSON);
    let mut config = ModuleConfig::new("service", driver);
    config.base_uri = Some(base(&service).parse().unwrap());
    let module = support::start(&runtime, config).await;
    assert_ne!(
        module.status("connected"),
        Some(json!(true)),
        "nothing answered yet"
    );
    module
        .exec("get", json!(["/get"]), ExecOptions::default())
        .await
        .unwrap();
    support::wait_status(&module, "connected", &json!(true)).await;
    service.stop();
    let error = module
        .exec("get", json!(["/get"]), ExecOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ExecError::Driver(e) if e.kind == "not-connected"),
        "{error:?}"
    );
    support::wait_status(&module, "connected", &json!(false)).await;
    runtime.shutdown().await;
}

#[test]
fn basic_authentication_comes_from_the_host() {
    let service = httpbin();
    let auth = |password: &str| json!({"http_auth": {"type": "basic", "username": "user", "password": password}});
    let reply = exec(
        &service,
        &auth("passwd"),
        "get",
        json!(["/basic-auth/user/passwd"]),
    )
    .json();
    assert_eq!(
        reply["body"],
        json!({"authenticated": true, "user": "user"})
    );

    let run = exec(
        &service,
        &auth("wrong"),
        "get",
        json!(["/basic-auth/user/passwd"]),
    );
    assert_error(
        &run,
        "device",
        "GET /basic-auth/user/passwd: HTTP 401 Unauthorized",
    );
    let run = exec(
        &service,
        &json!({}),
        "get",
        json!(["/basic-auth/user/passwd"]),
    );
    assert_error(&run, "device", "HTTP 401");
}

#[test]
fn digest_authentication_is_answered_by_the_host() {
    let service = httpbin();
    let auth = |password: &str| json!({"http_auth": {"type": "digest", "username": "user", "password": password}});
    for path in [
        "/digest-auth/auth/user/passwd/SHA-256",
        "/digest-auth/auth/user/passwd/MD5",
        "/digest-auth/auth/user/passwd",
    ] {
        let run = exec(&service, &auth("passwd"), "get", json!([path]));
        assert_eq!(
            run.json()["body"],
            json!({"authenticated": true, "user": "user"}),
            "{path}"
        );
        let run = exec(&service, &auth("wrong"), "get", json!([path]));
        assert_error(&run, "device", "HTTP 401 Unauthorized");
    }
}

#[test]
fn bearer_tokens_come_from_the_host() {
    let service = httpbin();
    let settings = json!({"http_auth": {"type": "bearer", "token": "t0ken-42"}});
    let reply = exec(&service, &settings, "get", json!(["/bearer"])).json();
    assert_eq!(
        reply["body"],
        json!({"authenticated": true, "token": "t0ken-42"})
    );
    let run = exec(&service, &json!({}), "get", json!(["/bearer"]));
    assert_error(&run, "device", "HTTP 401");
    // With http_auth set, the driver cannot set Authorization itself.
    let settings = json!({
        "http_auth": {"type": "bearer", "token": "t"},
        "headers": {"Authorization": "Bearer mine"},
    });
    let run = exec(&service, &settings, "get", json!(["/bearer"]));
    assert_error(&run, "invalid-arguments", "authorization");
}

#[test]
fn redirects_within_the_origin_are_followed() {
    let service = httpbin();
    let reply = exec(
        &service,
        &json!({}),
        "get",
        json!(["/redirect-to?url=/get"]),
    )
    .json();
    assert_eq!(reply["status"], 200);
    assert_eq!(reply["body"]["url"], format!("{}/get", base(&service)));
    let reply = exec(&service, &json!({}), "get", json!(["/relative-redirect/3"])).json();
    assert_eq!(reply["body"]["url"], format!("{}/get", base(&service)));
    let absolute = format!("/redirect-to?url={}/anything/there", base(&service));
    let reply = exec(&service, &json!({}), "get", json!([absolute])).json();
    assert_eq!(
        reply["body"]["url"],
        format!("{}/anything/there", base(&service))
    );
}

#[test]
fn redirects_to_another_origin_are_denied_and_never_followed() {
    let service = httpbin();
    let other_host = Witness::start([127, 0, 0, 2]);
    let other_port = Witness::start([127, 0, 0, 1]);
    for target in [
        format!("http%3A%2F%2F{}%2Fget", other_host.addr),
        format!("http://{}/get", other_port.addr),
        "http://example.com/".to_string(),
        format!("https://{}/get", service.addr),
    ] {
        let run = exec(
            &service,
            &json!({}),
            "get",
            json!([format!("/redirect-to?url={target}")]),
        );
        assert_error(&run, "denied", "GET /redirect-to");
    }
    assert_eq!(other_host.connections(), 0, "a request reached 127.0.0.2");
    assert_eq!(
        other_port.connections(),
        0,
        "a request reached another port"
    );
}

#[test]
fn oversized_bodies_are_refused_with_limit() {
    let service = httpbin();
    // 5 MB, over the host's default limit of 4 MiB (httpbin caps /bytes at 100 KiB, but
    // /drip goes to 10 MB and declares its length).
    let run = exec(
        &service,
        &json!({}),
        "get",
        json!(["/drip?numbytes=5000000&duration=0&delay=0"]),
    );
    assert_error(&run, "limit", "larger than 4194304 bytes");
}

#[test]
fn a_streamed_body_over_a_lowered_limit_is_refused() {
    // /stream-bytes is chunked, without a length: the host counts while reading.
    let service = httpbin();
    let run = |path: &str| {
        let args = json!([path]).to_string();
        warden(&[
            "driver",
            "run",
            HTTP_JSON,
            "--endpoint",
            &base(&service),
            "--max-body-bytes",
            "10000",
            "--exec",
            "get",
            "--args",
            &args,
        ])
    };
    assert_eq!(
        run("/stream-bytes/5000?chunk_size=1024").json()["status"],
        200
    );
    let refused = run("/stream-bytes/50000?chunk_size=1024");
    assert_error(&refused, "limit", "larger than 10000 bytes");
    // A declared length over the limit is refused before the body is read.
    assert_error(&run("/bytes/20000"), "limit", "larger than 10000 bytes");
}

#[test]
fn slow_answers_time_out_at_the_drivers_deadline() {
    let service = httpbin();
    // httpbin answers /delay/9 after 9 s; the CLI's own limit is 10 s.
    let started = Instant::now();
    let run = exec(
        &service,
        &json!({"timeout_ms": 1000}),
        "get",
        json!(["/delay/9"]),
    );
    assert_error(&run, "timeout", "GET /delay/9");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the request was not cut at 1 s: {:?}",
        started.elapsed()
    );
    // A command's own timeout replaces the module's.
    let settings = json!({
        "timeout_ms": 5000,
        "commands": {"slow": {"path": "/delay/3", "timeout_ms": 500}},
    });
    let run = exec(&service, &settings, "command", json!(["slow"]));
    assert_error(&run, "timeout", "GET /delay/3");
}

#[test]
fn other_statuses_are_device_errors() {
    let service = httpbin();
    let run = exec(&service, &json!({}), "get", json!(["/status/418"]));
    assert_error(&run, "device", "GET /status/418: HTTP 418 I'm a teapot");
    let run = exec(&service, &json!({}), "delete", json!(["/status/503"]));
    assert_error(
        &run,
        "device",
        "DELETE /status/503: HTTP 503 Service Unavailable",
    );
}

#[test]
fn a_service_that_is_down_is_not_connected() {
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let run = exec_at(&nobody, &json!({}), "get", json!(["/get"]));
    assert_error(&run, "not-connected", "GET /get");
    assert!(!run.stderr.contains("status connected = true"), "{run:#?}");
}

#[test]
fn paths_and_settings_are_checked() {
    let service = httpbin();
    let run = exec(&service, &json!({}), "get", json!(["get"]));
    assert_error(&run, "invalid-arguments", "must start with `/`");
    let run = exec(&service, &json!({}), "get", json!(["/a/../get"]));
    assert_error(&run, "invalid-arguments", "..");
    let run = exec(&service, &json!({"poll_ms": 10}), "get", json!(["/get"]));
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains("poll_ms must be 0 or at least 250"),
        "{run:#?}"
    );
}

#[test]
fn inspect_shows_an_http_driver() {
    let inspected = warden(&["driver", "inspect", HTTP_JSON, "--json"]).json();
    assert_eq!(inspected["transport"], "http");
    assert_eq!(inspected["generic_name"], "WebService");
    assert_eq!(inspected["refused_imports"], json!([]));
    let levels: Vec<(&str, &str)> = inspected["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["level"].as_str().unwrap()))
        .collect();
    for expected in [
        ("get", "support"),
        ("post", "support"),
        ("put", "support"),
        ("delete", "support"),
        ("command", "user"),
        ("poll", "user"),
    ] {
        assert!(levels.contains(&expected), "{levels:?}");
    }
    assert_eq!(inspected["default_settings"]["poll_ms"], 30000);
}
