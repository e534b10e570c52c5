//! The API service in process (`warden::api::app`), over a real store and runtime: the
//! principal requirement, the error shape, lists, zones and systems.

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
        let db = TestDb::sqlite().await;
        let store = db.store().await;
        let control = Control::new(store, support::runtime(), ControlConfig::default());
        Api {
            router: app(ApiState {
                control: control.clone(),
                danger_no_auth,
            }),
            _db: db,
            control,
        }
    }

    async fn call(&mut self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let response = self.router.call(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
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
