//! The API service in process (`warden::api::app`), over a real store and runtime: the
//! principal requirement, the error shape, lists, zones and systems, drivers, and the
//! supply chain's repositories, builds and review page.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower_service::Service;
use warden::api::{ApiState, app};
use warden::control::{Control, ControlConfig};

use crate::store::TestDb;
use crate::support;

struct Api {
    router: axum::Router,
    _db: TestDb,
    control: Control,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Api {
    async fn new(danger_no_auth: bool) -> Api {
        Api::with_config(danger_no_auth, ControlConfig::default()).await
    }

    async fn with_config(danger_no_auth: bool, config: ControlConfig) -> Api {
        let db = TestDb::sqlite().await;
        let store = db.store().await;
        let control = Control::new(store, support::runtime(), config);
        Api {
            router: app(ApiState {
                auth: support::auth(control.store()),
                control: control.clone(),
                danger_no_auth,
            }),
            _db: db,
            control,
        }
    }

    async fn call(&mut self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let request = Request::builder().method(method).uri(path);
        let (status, headers, body) = support::call_json(&mut self.router, request, body).await;
        Reply {
            status,
            headers,
            body,
        }
    }
}

fn assert_secure(reply: &Reply) {
    for (name, value) in warden::api::headers::SECURITY_HEADERS {
        assert_eq!(
            reply.headers.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name}"
        );
    }
}

fn assert_error(reply: &Reply, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], code, "{}", reply.body);
    assert!(reply.body["error"]["message"].is_string());
    match field {
        Some(field) => assert_eq!(reply.body["error"]["field"], field, "{}", reply.body),
        None => assert!(reply.body["error"].get("field").is_none(), "{}", reply.body),
    }
    assert_secure(reply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_a_principal() {
    let mut api = Api::new(false).await;
    for (method, path) in [
        (Method::GET, "/api/engine/v2/zones"),
        (Method::POST, "/api/engine/v2/zones"),
        (Method::GET, "/api/engine/v2/systems"),
        (Method::DELETE, "/api/engine/v2/systems/sys-x"),
        (Method::PUT, "/api/engine/v2/systems/sys-x/module/mod-y"),
    ] {
        let reply = api.call(method, path, Some(json!({"name": "x"}))).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthenticated", None);
    }
    // Nothing was written.
    let zones = api
        .control
        .store()
        .list_zones(&Default::default(), None)
        .await
        .unwrap();
    assert_eq!(zones.total, 0);
    // Routes outside the API answer in the same shape.
    let reply = api.call(Method::GET, "/elsewhere", None).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_crud_lists_and_errors() {
    let mut api = Api::new(true).await;
    let campus = api
        .call(
            Method::POST,
            "/api/engine/v2/zones",
            Some(json!({"name": "Campus", "tags": ["org"]})),
        )
        .await;
    assert_eq!(campus.status, StatusCode::CREATED);
    assert_secure(&campus);
    let campus_id = campus.body["id"].as_str().unwrap().to_string();
    for name in ["Building A", "Building B", "Carpark"] {
        let reply = api
            .call(
                Method::POST,
                "/api/engine/v2/zones",
                Some(json!({"name": name, "parent_id": campus_id})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let all = api.call(Method::GET, "/api/engine/v2/zones", None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.headers["x-total-count"], "4");
    assert_eq!(all.body.as_array().unwrap().len(), 4);
    let page = api
        .call(
            Method::GET,
            "/api/engine/v2/zones?q=building&limit=1&offset=1",
            None,
        )
        .await;
    assert_eq!(page.headers["x-total-count"], "2");
    assert_eq!(page.body.as_array().unwrap().len(), 1);
    let children = api
        .call(
            Method::GET,
            &format!("/api/engine/v2/zones?parent_id={campus_id}"),
            None,
        )
        .await;
    assert_eq!(children.headers["x-total-count"], "3");

    let renamed = api
        .call(
            Method::PATCH,
            &format!("/api/engine/v2/zones/{campus_id}"),
            Some(json!({"description": "Main campus"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(renamed.body["description"], "Main campus");
    assert_eq!(renamed.body["name"], "Campus");

    // The caller's mistakes: 4xx, the field named.
    let empty = api
        .call(
            Method::POST,
            "/api/engine/v2/zones",
            Some(json!({"name": " "})),
        )
        .await;
    assert_error(&empty, StatusCode::BAD_REQUEST, "invalid", Some("name"));
    let missing = api
        .call(
            Method::POST,
            "/api/engine/v2/zones",
            Some(json!({"tags": []})),
        )
        .await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "invalid", Some("name"));
    let wrong_type = api
        .call(
            Method::POST,
            "/api/engine/v2/zones",
            Some(json!({"name": 7})),
        )
        .await;
    assert_error(
        &wrong_type,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("body"),
    );
    let cycle = api
        .call(
            Method::PATCH,
            &format!("/api/engine/v2/zones/{campus_id}"),
            Some(json!({"parent_id": campus_id})),
        )
        .await;
    assert_error(
        &cycle,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("parent_id"),
    );
    let bad_limit = api
        .call(Method::GET, "/api/engine/v2/zones?limit=many", None)
        .await;
    assert_error(
        &bad_limit,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("limit"),
    );
    let unknown = api
        .call(Method::GET, "/api/engine/v2/zones/zone-nope", None)
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found", None);
    let in_use = api
        .call(
            Method::DELETE,
            &format!("/api/engine/v2/zones/{campus_id}"),
            None,
        )
        .await;
    assert_error(&in_use, StatusCode::CONFLICT, "conflict", None);
    let no_json = api
        .router
        .call(
            Request::post("/api/engine/v2/zones")
                .body(Body::from(r#"{"name":"x"}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(no_json.status(), StatusCode::BAD_REQUEST);

    // Every change is in the audit log under the caller.
    let entries = api.control.store().audit_entries(0, 100).await.unwrap();
    assert_eq!(entries.len(), 5);
    assert!(entries.iter().all(|e| e.actor == "danger-no-auth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systems_keep_order_and_membership() {
    let mut api = Api::new(true).await;
    let zone = api
        .call(
            Method::POST,
            "/api/engine/v2/zones",
            Some(json!({"name": "Level 1"})),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let store = api.control.store().clone();
    let bytes = std::fs::read(warden_tests::guests::ECHO).unwrap();
    let driver = api
        .control
        .register_driver(&warden::store::Actor("test".into()), bytes, None, None)
        .await
        .unwrap()
        .id;
    let mut modules = Vec::new();
    for _ in 0..2 {
        modules.push(
            store
                .create_module(
                    &warden::store::Actor("test".into()),
                    &warden::store::NewModule {
                        driver_id: driver.clone(),
                        endpoint: Some("127.0.0.1:9".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
                .id,
        );
    }
    let room = api
        .call(
            Method::POST,
            "/api/engine/v2/systems",
            Some(json!({"name": "Room 101", "email": "room101@example.com", "zones": [zone], "modules": [modules[1]]})),
        )
        .await;
    assert_eq!(room.status, StatusCode::CREATED, "{}", room.body);
    let room_id = room.body["id"].as_str().unwrap().to_string();
    let added = api
        .call(
            Method::PUT,
            &format!("/api/engine/v2/systems/{room_id}/module/{}", modules[0]),
            None,
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(added.body["modules"], json!([modules[1], modules[0]]));
    // The runtime's names follow at once.
    assert_eq!(
        api.control.runtime().system_modules(&room_id),
        [
            ("Echo_1".to_string(), modules[1].clone()),
            ("Echo_2".to_string(), modules[0].clone())
        ]
    );
    let removed = api
        .call(
            Method::DELETE,
            &format!("/api/engine/v2/systems/{room_id}/module/{}", modules[1]),
            None,
        )
        .await;
    assert_eq!(removed.body["modules"], json!([modules[0]]));
    let missing = api
        .call(
            Method::PUT,
            &format!("/api/engine/v2/systems/{room_id}/module/mod-nope"),
            None,
        )
        .await;
    assert_error(
        &missing,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("modules"),
    );
    let in_zone = api
        .call(
            Method::GET,
            &format!("/api/engine/v2/systems?zone_id={zone}"),
            None,
        )
        .await;
    assert_eq!(in_zone.headers["x-total-count"], "1");
    let bad_email = api
        .call(
            Method::PATCH,
            &format!("/api/engine/v2/systems/{room_id}"),
            Some(json!({"email": "nope"})),
        )
        .await;
    assert_error(
        &bad_email,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("email"),
    );
    let deleted = api
        .call(
            Method::DELETE,
            &format!("/api/engine/v2/systems/{room_id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    assert!(api.control.runtime().system_modules(&room_id).is_empty());
    assert_eq!(store.module(&modules[0]).await.unwrap().system_id, None);
}

impl Api {
    async fn upload(&mut self, path: &str, content_type: &str, bytes: Vec<u8>) -> Reply {
        let request = Request::post(path)
            .header("content-type", content_type)
            .body(Body::from(bytes))
            .unwrap();
        let response = self.router.call(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_is_registered_approved_run_and_called_through_the_api() {
    let mut api = Api::new(true).await;
    let peer = support::LinePeer::start(support::PeerBehaviour::default()).await;

    // Register the component: metadata read from it, pending review.
    let refused = api
        .upload("/api/engine/v2/drivers", "text/plain", b"nope".to_vec())
        .await;
    assert_error(
        &refused,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("content-type"),
    );
    let garbage = api
        .upload(
            "/api/engine/v2/drivers",
            "application/wasm",
            b"\0asm garbage".to_vec(),
        )
        .await;
    assert_error(
        &garbage,
        StatusCode::BAD_REQUEST,
        "invalid",
        Some("component"),
    );
    let bytes = std::fs::read(warden_tests::guests::ECHO).unwrap();
    let driver = api
        .upload(
            "/api/engine/v2/drivers?source_repo=https://example.invalid/echo.git",
            "application/wasm",
            bytes,
        )
        .await;
    assert_eq!(driver.status, StatusCode::CREATED, "{}", driver.body);
    assert_eq!(driver.body["approval"], "pending");
    assert_eq!(driver.body["module_name"], "Echo");
    let driver_id = driver.body["id"].as_str().unwrap().to_string();

    let module = api
        .call(
            Method::POST,
            "/api/engine/v2/modules",
            Some(json!({"driver_id": driver_id, "endpoint": peer.addr.to_string()})),
        )
        .await;
    assert_eq!(module.status, StatusCode::CREATED, "{}", module.body);
    let module_id = module.body["id"].as_str().unwrap().to_string();
    let room = api
        .call(
            Method::POST,
            "/api/engine/v2/systems",
            Some(json!({"name": "Room", "modules": [module_id]})),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Not approved: it does not start.
    let start = format!("/api/engine/v2/modules/{module_id}/start");
    let refused = api.call(Method::POST, &start, None).await;
    assert_error(&refused, StatusCode::CONFLICT, "driver_not_approved", None);
    let approved = api
        .call(
            Method::POST,
            &format!("/api/engine/v2/drivers/{driver_id}/approval"),
            Some(json!({"approval": "approved", "note": "read the source"})),
        )
        .await;
    assert_eq!(approved.body["approval"], "approved", "{}", approved.body);
    assert_eq!(
        api.call(Method::POST, &start, None).await.status,
        StatusCode::OK
    );

    // Settings at two levels; the module's init sees both, a person sees theirs.
    for (level, value) in [
        ("none", json!({"greeting": "hello room"})),
        ("never_displayed", json!({"password": "s3cret"})),
    ] {
        let reply = api
            .call(
                Method::POST,
                "/api/engine/v2/settings",
                Some(json!({"parent_kind": "module", "parent_id": module_id, "level": level, "value": value})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let handle = api.control.runtime().module(&module_id).unwrap();
    support::wait_status(&handle, "greeting", &json!("hello room")).await;
    let seen = api
        .call(
            Method::GET,
            &format!("/api/engine/v2/modules/{module_id}/settings"),
            None,
        )
        .await;
    assert_eq!(seen.body, json!({"greeting": "hello room"}));
    let records = api
        .call(
            Method::GET,
            &format!("/api/engine/v2/settings?parent_kind=module&parent_id={module_id}"),
            None,
        )
        .await;
    let records = records.body.as_array().unwrap().clone();
    assert_eq!(records.len(), 2);
    let hidden = records
        .iter()
        .find(|r| r["level"] == "never_displayed")
        .unwrap();
    assert!(hidden.get("value").is_none(), "{hidden}");
    assert!(!serde_json::to_string(&records).unwrap().contains("s3cret"));
    let hidden_history = api
        .call(
            Method::GET,
            &format!(
                "/api/engine/v2/settings/{}/history",
                hidden["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_error(&hidden_history, StatusCode::FORBIDDEN, "forbidden", None);

    // Exec by module id and by its name in the system; state; functions.
    let by_id = api
        .call(
            Method::POST,
            &format!("/api/engine/v2/modules/{module_id}/exec/ask"),
            Some(json!(["hi"])),
        )
        .await;
    assert_eq!(by_id.body, json!("you said hi"), "{}", by_id.body);
    let by_name = api
        .call(
            Method::POST,
            &format!("/api/engine/v2/systems/{room}/Echo_1/add"),
            Some(json!({"a": 2, "b": 3})),
        )
        .await;
    assert_eq!(by_name.body, json!(5), "{}", by_name.body);
    let rejected = api
        .call(
            Method::POST,
            &format!("/api/engine/v2/systems/{room}/Echo/fail"),
            Some(json!(["no signal"])),
        )
        .await;
    assert_error(
        &rejected,
        StatusCode::UNPROCESSABLE_ENTITY,
        "driver_error",
        None,
    );
    let unknown = api
        .call(
            Method::POST,
            &format!("/api/engine/v2/systems/{room}/Echo_1/nothing"),
            Some(json!([])),
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "unknown_function", None);
    let no_module = api
        .call(
            Method::GET,
            &format!("/api/engine/v2/systems/{room}/Display_1"),
            None,
        )
        .await;
    assert_error(&no_module, StatusCode::NOT_FOUND, "not_found", None);
    let state = api
        .call(
            Method::GET,
            &format!("/api/engine/v2/systems/{room}/Echo_1"),
            None,
        )
        .await;
    assert_eq!(state.body["greeting"], "hello room");
    assert_eq!(state.body["connected"], true);
    let key = api
        .call(
            Method::GET,
            &format!("/api/engine/v2/modules/{module_id}/state/greeting"),
            None,
        )
        .await;
    assert_eq!(key.body, json!("hello room"));
    let functions = api
        .call(
            Method::GET,
            &format!("/api/engine/v2/systems/{room}/functions/Echo_1"),
            None,
        )
        .await;
    assert!(
        functions.body["add"]["params"]["properties"]["a"].is_object(),
        "{}",
        functions.body
    );

    // History, stop, and a stopped module's calls.
    let history = api
        .call(
            Method::GET,
            &format!("/api/engine/v2/modules/{module_id}/history"),
            None,
        )
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    assert!(!history.body["transitions"].as_array().unwrap().is_empty());
    let stop = format!("/api/engine/v2/modules/{module_id}/stop");
    assert_eq!(
        api.call(Method::POST, &stop, None).await.status,
        StatusCode::OK
    );
    let stopped = api
        .call(
            Method::POST,
            &format!("/api/engine/v2/modules/{module_id}/exec/ask"),
            Some(json!(["hi"])),
        )
        .await;
    assert_error(&stopped, StatusCode::CONFLICT, "module_stopped", None);

    // Every exec is audited under the caller.
    api.control.flush_audit().await;
    let execs = api
        .control
        .store()
        .audit_entries(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "module.exec")
        .count();
    assert_eq!(execs, 3, "ask, add and fail reached the driver");
    api.control.shutdown().await;
}

/// What `@placeos/ts-client` reads first, before it has a credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authority_is_public_and_says_engine_v2() {
    let mut api = Api::new(false).await;
    let request = Request::get("/auth/authority")
        .header("host", "127.0.0.1:8443")
        .body(Body::empty())
        .unwrap();
    let response = api.router.call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let authority: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        authority,
        json!({
            "id": "authority-warden",
            "name": "127.0.0.1:8443",
            "description": "Warden",
            "domain": "127.0.0.1:8443",
            "login_url": "/auth/login?continue={{url}}",
            "logout_url": "/auth/logout",
            "session": false,
            "production": true,
            "config": {},
            "version": "v2.0.0",
        })
    );
}

/// Lists page as PlaceOS's do: the total in `X-Total-Count`, the next page in `Link`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_link_the_next_page() {
    let mut api = Api::new(true).await;
    for name in ["Room 1", "Room 2", "Room 3", "Hall"] {
        let reply = api
            .call(
                Method::POST,
                "/api/engine/v2/systems",
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let first = api
        .call(Method::GET, "/api/engine/v2/systems?q=room&limit=2", None)
        .await;
    assert_eq!(first.headers["x-total-count"], "3");
    assert_eq!(first.body.as_array().unwrap().len(), 2);
    let link = first.headers["link"].to_str().unwrap();
    assert_eq!(
        link,
        "</api/engine/v2/systems?offset=2&limit=2&q=room>; rel=\"next\""
    );
    // Following it gives the last page, which links nowhere.
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let last = api.call(Method::GET, next, None).await;
    assert_eq!(last.headers["x-total-count"], "3");
    assert_eq!(last.body.as_array().unwrap().len(), 1);
    assert!(last.headers.get("link").is_none());
    // Not lists: no link.
    let one = api
        .call(Method::GET, "/api/engine/v2/systems?limit=1", None)
        .await;
    let id = one.body[0]["id"].as_str().unwrap();
    let shown = api
        .call(Method::GET, &format!("/api/engine/v2/systems/{id}"), None)
        .await;
    assert!(shown.headers.get("link").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_leaves_what_it_omits_and_clears_what_it_nulls() {
    let mut api = Api::new(true).await;
    let campus = api
        .call(
            Method::POST,
            "/api/engine/v2/zones",
            Some(json!({"name": "Campus"})),
        )
        .await;
    let campus_id = campus.body["id"].as_str().unwrap().to_string();
    let building = api
        .call(
            Method::POST,
            "/api/engine/v2/zones",
            Some(json!({"name": "Building", "parent_id": campus_id})),
        )
        .await;
    let path = format!(
        "/api/engine/v2/zones/{}",
        building.body["id"].as_str().unwrap()
    );
    // Left out: unchanged.
    let renamed = api
        .call(Method::PATCH, &path, Some(json!({"name": "Building A"})))
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["parent_id"], campus_id.as_str());
    // null: cleared.
    let root = api
        .call(Method::PATCH, &path, Some(json!({"parent_id": null})))
        .await;
    assert_eq!(root.status, StatusCode::OK, "{}", root.body);
    assert_eq!(root.body["parent_id"], Value::Null);
    assert_eq!(root.body["name"], "Building A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_axum_writes_itself_are_json_too() {
    let mut api = Api::new(true).await;
    // A method the route lacks: 405 with Allow, in the error shape.
    let reply = api.call(Method::DELETE, "/api/engine/v2/zones", None).await;
    assert_error(
        &reply,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
    );
    assert!(reply.headers.contains_key("allow"));
    // A path segment that does not decode.
    let reply = api
        .call(Method::GET, "/api/engine/v2/zones/%FF", None)
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid", None);
    // The WebSocket without its upgrade headers.
    let reply = api
        .call(Method::GET, "/api/engine/v2/systems/control", None)
        .await;
    assert!(reply.status.is_client_error(), "{}", reply.status);
    assert!(reply.body["error"]["code"].is_string(), "{}", reply.body);
    // The OpenAPI document is there for anyone.
    let mut anonymous = Api::new(false).await;
    let reply = anonymous
        .call(Method::GET, "/api/engine/v2/openapi.json", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_keep_credentials_sealed_and_builds_report_through_the_api() {
    let build_dir = std::env::temp_dir().join(format!(
        "warden-api-builds-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let mut api = Api::with_config(
        true,
        ControlConfig {
            build_dir: Some(build_dir.clone()),
            ..ControlConfig::default()
        },
    )
    .await;
    let repositories = "/api/engine/v2/repositories";

    // Credentials belong in `credentials`, sealed, never in the URL; git's dangerous
    // address forms are refused.
    for url in [
        "https://bot:s3cret-token@git.example/drivers.git",
        "--upload-pack=touch /tmp/x",
        "ext::sh -c touch% /tmp/x",
    ] {
        let reply = api
            .call(
                Method::POST,
                repositories,
                Some(json!({"name": "x", "url": url})),
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid", Some("url"));
    }
    let secret = "s3cret-token-0123";
    let created = api
        .call(
            Method::POST,
            repositories,
            Some(json!({
                "name": "Drivers",
                "url": "https://git.example.invalid/org/drivers.git",
                "branch": "main",
                "credentials": {"username": "bot", "password": secret},
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["has_credentials"], true);
    let repository = created.body["id"].as_str().unwrap().to_string();
    let shown = api
        .call(Method::GET, &format!("{repositories}/{repository}"), None)
        .await;
    let listed = api.call(Method::GET, repositories, None).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    for reply in [&created, &shown, &listed] {
        assert!(!reply.body.to_string().contains(secret), "{}", reply.body);
    }

    // Builds name an exact commit and a package inside the repository.
    let builds = "/api/engine/v2/builds";
    let commit = "0123456789abcdef0123456789abcdef01234567";
    for (body, field) in [
        (
            json!({"repository_id": repository, "commit": "main", "path": "drivers/pjlink"}),
            "commit",
        ),
        (
            json!({"repository_id": repository, "commit": commit, "path": "../x"}),
            "path",
        ),
        (
            json!({"repository_id": "repo-nope", "commit": commit, "path": "drivers/pjlink"}),
            "repository_id",
        ),
    ] {
        let reply = api.call(Method::POST, builds, Some(body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid", Some(field));
    }
    // This one is queued, runs, and fails at the fetch (the host does not exist); its
    // output and error say so without the credentials.
    let queued = api
        .call(
            Method::POST,
            builds,
            Some(json!({"repository_id": repository, "commit": commit, "path": "drivers/pjlink"})),
        )
        .await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.body);
    let build = queued.body["id"].as_str().unwrap().to_string();
    let mut job = Value::Null;
    for _ in 0..240 {
        job = api
            .call(Method::GET, &format!("{builds}/{build}"), None)
            .await
            .body;
        if job["state"] == "failed" || job["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("git"), "{job}");
    assert!(
        job["output"]
            .as_str()
            .unwrap()
            .contains("git.example.invalid"),
        "{job}"
    );
    assert!(!job.to_string().contains(secret), "{job}");
    let listed = api.call(Method::GET, builds, None).await;
    assert_eq!(listed.body[0]["id"], build.as_str());

    // A build whose git server never answers is cancelled while it runs: stopped with
    // everything it started, recorded `cancelled`; an ended build cannot be cancelled.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/drivers.git", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            connections.push(stream);
        }
    });
    let stalled = api
        .call(
            Method::POST,
            repositories,
            Some(json!({"name": "Silent", "url": silent_url})),
        )
        .await;
    let stalled = stalled.body["id"].as_str().unwrap().to_string();
    let queued = api
        .call(
            Method::POST,
            builds,
            Some(json!({"repository_id": stalled, "commit": commit, "path": "drivers/pjlink"})),
        )
        .await;
    let build = queued.body["id"].as_str().unwrap().to_string();
    let mut job = Value::Null;
    for _ in 0..240 {
        job = api
            .call(Method::GET, &format!("{builds}/{build}"), None)
            .await
            .body;
        if job["state"] == "running" && job["stage"] == "checkout" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(job["stage"], "checkout", "{job}");
    let cancelled = api
        .call(Method::POST, &format!("{builds}/{build}/cancel"), None)
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    for _ in 0..240 {
        job = api
            .call(Method::GET, &format!("{builds}/{build}"), None)
            .await
            .body;
        if job["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(job["error"], "cancelled by danger-no-auth");
    let again = api
        .call(Method::POST, &format!("{builds}/{build}/cancel"), None)
        .await;
    assert_error(&again, StatusCode::CONFLICT, "conflict", None);
    held.abort();

    // A driver uploaded by hand has a review page and its exact bytes, but no repository
    // to compare with.
    let bytes = std::fs::read(warden_tests::guests::PJLINK).unwrap();
    // What an uploader says about the source is checked like a repository's.
    for (query, field) in [
        (
            "source_repo=https://bot:token@git.example/x.git",
            "source_repo",
        ),
        ("source_commit=main", "source_commit"),
    ] {
        let refused = api
            .upload(
                &format!("/api/engine/v2/drivers?{query}"),
                "application/wasm",
                bytes.clone(),
            )
            .await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "invalid", Some(field));
    }
    let driver = api
        .upload("/api/engine/v2/drivers", "application/wasm", bytes.clone())
        .await;
    let driver = driver.body["id"].as_str().unwrap().to_string();
    let review = api
        .call(
            Method::GET,
            &format!("/api/engine/v2/drivers/{driver}/review"),
            None,
        )
        .await;
    assert_eq!(review.status, StatusCode::OK, "{}", review.body);
    assert_eq!(review.body["approval"]["state"], "pending");
    assert_eq!(review.body["secret_settings"], json!(["password"]));
    assert_eq!(review.body["transport"], "tcp");
    let request = Request::get(format!("/api/engine/v2/drivers/{driver}/component"))
        .body(Body::empty())
        .unwrap();
    let response = api.router.call(request).await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/wasm");
    let downloaded = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(downloaded.as_ref(), bytes.as_slice());
    let updates = api
        .call(
            Method::GET,
            &format!("/api/engine/v2/drivers/{driver}/updates"),
            None,
        )
        .await;
    assert_error(&updates, StatusCode::CONFLICT, "build_unavailable", None);

    let _ = std::fs::remove_dir_all(build_dir);
}
