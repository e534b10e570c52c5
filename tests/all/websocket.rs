//! The control WebSocket through the real server stack (TLS, HTTP/1.1 upgrade), driven by
//! tokio-tungstenite, a WebSocket client written by others: ping, bind and notify (only
//! on change), exec, debug, unbind, and PlaceOS's error codes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use warden::api::tls::{CertificateSource, CertificateStore};
use warden::api::{ApiState, app};
use warden::control::{Control, ControlConfig};
use warden::store::{Actor, Approval, NewModule, NewSystem};

use crate::store::TestDb;
use crate::support;

type Socket = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

struct Client {
    socket: Socket,
}

impl Client {
    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
    }

    async fn next_text(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("a message within 10 s")
                .expect("the socket is open")
                .unwrap();
            if let Message::Text(text) = message {
                return text.to_string();
            }
        }
    }

    async fn next(&mut self) -> Value {
        let text = self.next_text().await;
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    }

    /// Messages until one matches `wanted`, returning those seen before it too.
    async fn until(&mut self, wanted: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let message = self.next().await;
            if wanted(&message) {
                return (message, before);
            }
            before.push(message);
        }
    }

    /// Nothing arrives for `quiet`.
    async fn silent_for(&mut self, quiet: Duration) -> Option<Message> {
        tokio::time::timeout(quiet, self.socket.next())
            .await
            .ok()
            .flatten()
            .map(Result::unwrap)
    }
}

async fn connect(port: u16, ca: &std::path::Path) -> Client {
    connect_with(port, ca, "").await.unwrap()
}

/// Connect with `query` (credentials as PlaceOS clients send them); the upgrade's
/// refusal status when it is refused.
async fn connect_with(port: u16, ca: &std::path::Path, query: &str) -> Result<Client, u16> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    match tokio_tungstenite::client_async(
        format!("wss://localhost:{port}/api/engine/v2/systems/control{query}"),
        tls,
    )
    .await
    {
        Ok((socket, _)) => Ok(Client { socket }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("connecting: {other}"),
    }
}

fn is_reply(id: i64) -> impl Fn(&Value) -> bool {
    move |m| m["id"] == id
}

/// A store with an approved echo module in system "Room", the runtime running it, and
/// the real server on a loopback port.
struct Fixture {
    auth: warden::auth::Auth,
    _db: TestDb,
    _peer: support::LinePeer,
    store: warden::store::Store,
    control: Control,
    module: String,
    room: String,
    port: u16,
    ca: std::path::PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(true, warden::store::Clock::system()).await
    }

    /// `danger_no_auth` off makes every connection sign in; `clock` is the store's.
    async fn start_with(danger_no_auth: bool, clock: warden::store::Clock) -> Fixture {
        let db = TestDb::sqlite().await;
        let store = db.store().await.with_clock(clock);
        let control = Control::new(store.clone(), support::runtime(), ControlConfig::default());
        let auth = support::auth(&store);
        let peer = support::LinePeer::start(support::PeerBehaviour::default()).await;
        let actor = Actor("test".into());
        let bytes = std::fs::read(warden_tests::guests::ECHO).unwrap();
        let driver = control
            .register_driver(&actor, bytes, None, None)
            .await
            .unwrap()
            .id;
        control
            .set_approval(&actor, &driver, Approval::Approved, None)
            .await
            .unwrap();
        let module = store
            .create_module(
                &actor,
                &NewModule {
                    driver_id: driver.clone(),
                    endpoint: Some(peer.addr.to_string()),
                    running: true,
                    ..NewModule::default()
                },
            )
            .await
            .unwrap()
            .id;
        let room = store
            .create_system(
                &actor,
                &NewSystem {
                    name: "Room".into(),
                    modules: vec![module.clone()],
                    ..NewSystem::default()
                },
            )
            .await
            .unwrap()
            .id;
        control.start_running().await.unwrap();
        support::wait_status(
            &control.runtime().module(&module).unwrap(),
            "greeting",
            &json!("hello"),
        )
        .await;

        // The real server: TLS, HTTP/1.1, the upgrade.
        let tls_dir = db.scratch();
        let certificates = Arc::new(
            CertificateStore::load(
                CertificateSource::SelfSigned {
                    dir: tls_dir.clone(),
                    names: vec![],
                },
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64,
            )
            .unwrap(),
        );
        let config = Arc::new(warden::api::tls::server_config(certificates).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(warden::api::server::serve(
            listener,
            config,
            app(ApiState {
                auth: auth.clone(),
                control: control.clone(),
                danger_no_auth,
            }),
            stopped,
        ));

        Fixture {
            auth,
            ca: tls_dir.join("self-signed.crt"),
            _db: db,
            _peer: peer,
            store,
            control,
            module,
            room,
            port,
            stop,
            server,
        }
    }

    async fn client(&self) -> Client {
        connect(self.port, &self.ca).await
    }

    async fn finish(self) {
        self.stop.send(true).unwrap();
        self.server.await.unwrap();
        self.control.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_exec_debug_and_errors_over_the_control_socket() {
    let fixture = Fixture::start().await;
    let (room, module, store) = (
        fixture.room.clone(),
        fixture.module.clone(),
        fixture.store.clone(),
    );
    let mut client = fixture.client().await;

    client
        .socket
        .send(Message::Text("ping".into()))
        .await
        .unwrap();
    assert_eq!(client.next_text().await, "pong");

    // bind: success, and the current value at once.
    client
        .send(json!({"id": 1, "cmd": "bind", "sys": room, "mod": "Echo", "index": 1, "name": "greeting"}))
        .await;
    let (notify, before) = client.until(|m| m["type"] == "notify").await;
    assert_eq!(notify["value"], "hello");
    assert_eq!(
        notify["meta"],
        json!({"sys": room, "mod": "Echo", "index": 1, "name": "greeting"})
    );
    let success = if before.is_empty() {
        client.until(is_reply(1)).await.0
    } else {
        before[0].clone()
    };
    assert_eq!(success["type"], "success", "{success}");

    // exec: its result, and the notify its status change causes.
    client
        .send(json!({"id": 2, "cmd": "exec", "sys": room, "mod": "Echo", "index": 1, "name": "publish", "args": ["greeting", "changed"]}))
        .await;
    let mut seen = [client.next().await, client.next().await];
    seen.sort_by_key(|m| m["type"].as_str().unwrap_or("").to_string());
    assert_eq!(seen[0]["type"], "notify");
    assert_eq!(seen[0]["value"], "changed");
    assert_eq!(seen[1]["id"], 2);
    assert_eq!(seen[1]["type"], "success");
    // The same value again is no change: no notify.
    client
        .send(json!({"id": 3, "cmd": "exec", "sys": room, "mod": "Echo", "index": 1, "name": "publish", "args": ["greeting", "changed"]}))
        .await;
    let (reply, before) = client.until(is_reply(3)).await;
    assert_eq!(reply["type"], "success");
    assert!(before.is_empty(), "{before:?}");
    client
        .send(json!({"id": 4, "cmd": "exec", "sys": room, "mod": "Echo", "index": 1, "name": "add", "args": {"a": 40, "b": 2}}))
        .await;
    let (reply, _) = client.until(is_reply(4)).await;
    assert_eq!(reply["value"], 42);

    // A driver's refusal is a request failure (3), with its message.
    client
        .send(json!({"id": 5, "cmd": "exec", "sys": room, "mod": "Echo", "index": 1, "name": "fail", "args": ["no signal"]}))
        .await;
    let (reply, _) = client.until(is_reply(5)).await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], 3);
    assert!(
        reply["msg"].as_str().unwrap().contains("no signal"),
        "{reply}"
    );

    // debug: the module's log lines while it is open.
    client
        .send(json!({"id": 6, "cmd": "debug", "sys": room, "mod": "Echo", "index": 1, "name": "debug"}))
        .await;
    let (reply, _) = client.until(is_reply(6)).await;
    assert_eq!(reply["mod_id"], module);
    // Reaching a module outside its system is denied, and the denial is logged.
    client
        .send(json!({"id": 7, "cmd": "exec", "sys": room, "mod": "Echo", "index": 1, "name": "relay", "args": ["Display_1", "power", []]}))
        .await;
    let (line, _) = client.until(|m| m["type"] == "debug").await;
    assert_eq!(line["mod"], module);
    assert_eq!(line["klass"], "Echo");
    assert!(line["msg"].is_string(), "{line}");
    client
        .send(json!({"id": 8, "cmd": "ignore", "sys": room, "mod": "Echo", "index": 1, "name": "debug"}))
        .await;
    client.until(is_reply(8)).await;

    // unbind: no more notifies.
    client
        .send(json!({"id": 9, "cmd": "unbind", "sys": room, "mod": "Echo", "index": 1, "name": "greeting"}))
        .await;
    client.until(is_reply(9)).await;
    client
        .send(json!({"id": 10, "cmd": "exec", "sys": room, "mod": "Echo", "index": 1, "name": "publish", "args": ["greeting", "after unbind"]}))
        .await;
    let (_, before) = client.until(is_reply(10)).await;
    assert!(before.iter().all(|m| m["type"] != "notify"), "{before:?}");

    // PlaceOS's error codes.
    for (request, code) in [
        (
            json!({"id": 20, "cmd": "bind", "sys": "sys-nope", "mod": "Echo", "index": 1, "name": "x"}),
            5,
        ),
        (
            json!({"id": 21, "cmd": "bind", "sys": room, "mod": "Display", "index": 1, "name": "x"}),
            6,
        ),
        (
            json!({"id": 22, "cmd": "bind", "sys": room, "mod": "Echo", "index": 2, "name": "x"}),
            6,
        ),
        (
            json!({"id": 23, "cmd": "launch", "sys": room, "mod": "Echo", "index": 1, "name": "x"}),
            4,
        ),
        (
            json!({"id": 24, "cmd": "bind", "mod": "Echo", "index": 1, "name": "x"}),
            1,
        ),
        (
            json!({"id": 25, "cmd": "exec", "sys": room, "mod": "Echo", "index": 1}),
            1,
        ),
        (
            json!({"id": 26, "cmd": "exec", "sys": room, "mod": "Echo", "index": 1, "name": "nothing", "args": []}),
            3,
        ),
    ] {
        let id = request["id"].as_i64().unwrap();
        client.send(request).await;
        let (reply, _) = client.until(is_reply(id)).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
    }
    client
        .socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    let (reply, _) = client.until(|m| m["type"] == "error").await;
    assert_eq!(reply["code"], 0);
    assert!(
        client
            .silent_for(Duration::from_millis(200))
            .await
            .is_none()
    );

    // The exec requests are audited like the API's.
    fixture.control.flush_audit().await;
    let execs = store
        .audit_entries(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "module.exec")
        .count();
    assert_eq!(
        execs, 6,
        "publish ×3, add, fail and relay reached the driver"
    );

    drop(client);
    fixture.finish().await;
}

/// A client that binds and stops reading does not hold up the module or other clients,
/// and when it reads again it gets the latest value, not a backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_the_latest_value_and_stalls_nobody() {
    let fixture = Fixture::start().await;
    let room = fixture.room.clone();
    let mut slow = fixture.client().await;
    slow.send(
        json!({"id": 1, "cmd": "bind", "sys": room, "mod": "Echo", "index": 1, "name": "blob"}),
    )
    .await;
    // It reads the bind's reply and the first value, then nothing for a while.
    slow.until(|m| m["type"] == "notify").await;

    // 200 values of 32 KiB (6.4 MiB in all, far more than the socket buffers hold). Were
    // the module held up by the slow reader, an exec would time out and fail here.
    let handle = fixture.control.runtime().module(&fixture.module).unwrap();
    let mut quick = fixture.client().await;
    for i in 0..200 {
        let value = format!("{i:04}{}", "x".repeat(32 * 1024));
        handle
            .exec("publish", json!(["blob", value]), Default::default())
            .await
            .unwrap();
        if i % 50 == 0 {
            // Another client's requests are answered meanwhile.
            quick
                .socket
                .send(Message::Text("ping".into()))
                .await
                .unwrap();
            assert_eq!(quick.next_text().await, "pong");
        }
    }
    // Now it reads: the values it gets end with the last one, and are far fewer than 200.
    let mut values = Vec::new();
    loop {
        let message = slow.next().await;
        if message["type"] == "notify" {
            let value = message["value"].as_str().unwrap().to_string();
            let done = value.starts_with("0199");
            values.push(value[..4].to_string());
            if done {
                break;
            }
        }
    }
    assert!(
        values.len() < 200,
        "{} values: nothing was coalesced",
        values.len()
    );
    let mut sorted = values.clone();
    sorted.sort();
    assert_eq!(
        sorted, values,
        "values arrive in order, never an older one after a newer"
    );
    drop(slow);
    drop(quick);
    fixture.finish().await;
}

/// An API key for a new user with `roles`, `scopes`, expiring at `expires_at`.
async fn key_for(
    fixture: &Fixture,
    roles: &[&str],
    scopes: &[&str],
    expires_at: Option<i64>,
) -> (String, String) {
    let user = fixture
        .store
        .create_user(
            &Actor("test".into()),
            &warden::store::NewUser {
                email: format!("u{}@example.org", fastrand::u32(..)),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                auth_source: "local".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (record, key) = fixture
        .auth
        .create_api_key(
            &Actor("test".into()),
            &warden::store::NewApiKey {
                user_id: user.id,
                name: "socket".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                expires_at,
            },
        )
        .await
        .unwrap();
    (record.id, key.expose().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_signs_in_at_upgrade_and_checks_again_on_every_request() {
    let start = 1_900_000_000_000;
    let clock = warden::store::Clock::manual(start);
    let fixture = Fixture::start_with(false, clock.clone()).await;
    let room = fixture.room.clone();
    // No credential, or a wrong one: the upgrade is refused.
    assert_eq!(
        connect_with(fixture.port, &fixture.ca, "").await.err(),
        Some(401)
    );
    assert_eq!(
        connect_with(fixture.port, &fixture.ca, "?bearer_token=wdn_at_nope")
            .await
            .err(),
        Some(401)
    );

    // A user's key in the query string, as PlaceOS's fixed devices send it.
    let (_, key) = key_for(&fixture, &["user"], &[], Some(start + 60_000)).await;
    let mut client = connect_with(
        fixture.port,
        &fixture.ca,
        &format!("?fixed_device=true&api-key={key}"),
    )
    .await
    .unwrap();
    client
        .send(json!({"id": 1, "cmd": "exec", "sys": room, "mod": "Echo", "index": 1, "name": "echo", "args": ["hi"]}))
        .await;
    let reply = client.until(is_reply(1)).await.0;
    assert_eq!(reply["type"], "success", "{reply}");
    assert_eq!(reply["value"], "hi");
    // A user may not read a module's log.
    client
        .send(json!({"id": 2, "cmd": "debug", "sys": room, "mod": "Echo", "index": 1}))
        .await;
    let reply = client.until(is_reply(2)).await.0;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_u64()),
        (Some("error"), Some(2))
    );
    // Past the key's expiry the next request is refused and the socket closes.
    clock.set(start + 60_000);
    client
        .send(json!({"id": 3, "cmd": "bind", "sys": room, "mod": "Echo", "index": 1, "name": "greeting"}))
        .await;
    let reply = client.until(is_reply(3)).await.0;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_u64()),
        (Some("error"), Some(2))
    );
    assert!(matches!(
        client.silent_for(Duration::from_secs(5)).await,
        None | Some(Message::Close(_))
    ));

    // A revoked key stops at once; a read-only key binds but executes nothing.
    let (id, key) = key_for(&fixture, &["support"], &["read"], None).await;
    let mut reader = connect_with(fixture.port, &fixture.ca, &format!("?api-key={key}"))
        .await
        .unwrap();
    reader
        .send(json!({"id": 4, "cmd": "bind", "sys": room, "mod": "Echo", "index": 1, "name": "greeting"}))
        .await;
    assert_eq!(reader.until(is_reply(4)).await.0["type"], "success");
    reader
        .send(json!({"id": 5, "cmd": "exec", "sys": room, "mod": "Echo", "index": 1, "name": "echo", "args": ["x"]}))
        .await;
    let reply = reader.until(is_reply(5)).await.0;
    assert_eq!(reply["code"], 2, "{reply}");
    fixture
        .auth
        .revoke_api_key(&Actor("test".into()), &id)
        .await
        .unwrap();
    reader
        .send(json!({"id": 6, "cmd": "unbind", "sys": room, "mod": "Echo", "index": 1, "name": "greeting"}))
        .await;
    let reply = reader.until(is_reply(6)).await.0;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_u64()),
        (Some("error"), Some(2))
    );
    fixture.finish().await;
}
