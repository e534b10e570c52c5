//! Search through the API (`GET /api/engine/v2/search`), in process, on both back ends:
//! ranking, prefixes, typos, phrases, filters, what each role may find, secrets never
//! indexed, and the index rebuilt from the store after its directory is deleted.

use std::path::{Path, PathBuf};

use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use warden::api::{ApiState, app};
use warden::control::{Control, ControlConfig};
use warden::search::Search;
use warden::settings::{Level, ParentKind};
use warden::store::{Actor, NewApiKey, NewUser, Store};

use crate::store::TestDb;
use crate::support;

struct Host {
    router: axum::Router,
    control: Control,
    admin_key: String,
    user_key: String,
}

async fn key(store: &Store, control: &Control, role: &str) -> String {
    let auth = support::auth(store);
    let user = store
        .create_user(
            &Actor("test".into()),
            &NewUser {
                email: format!("{role}@example.org"),
                roles: vec![role.into()],
                auth_source: "local".into(),
                ..NewUser::default()
            },
        )
        .await
        .unwrap();
    let _ = control;
    let (_, key) = auth
        .create_api_key(
            &Actor("test".into()),
            &NewApiKey {
                user_id: user.id,
                name: role.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    key.expose().to_string()
}

impl Host {
    /// A host over `store` with its index in `dir`; waits for any rebuild.
    async fn open(store: &Store, dir: &Path, keys: Option<(String, String)>) -> Host {
        let control = Control::with_search(
            store.clone(),
            support::runtime(),
            ControlConfig::default(),
            Some(Search::open(dir).unwrap()),
        );
        control.ensure_search().await;
        let (admin_key, user_key) = match keys {
            Some(keys) => keys,
            None => (
                key(store, &control, "admin").await,
                key(store, &control, "user").await,
            ),
        };
        Host {
            router: app(ApiState {
                auth: support::auth(store),
                control: control.clone(),
                danger_no_auth: false,
            }),
            control,
            admin_key,
            user_key,
        }
    }

    async fn call(
        &mut self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let request = Request::builder()
            .method(method)
            .uri(format!("/api/engine/v2{path}"))
            .header("x-api-key", key);
        support::call_json(&mut self.router, request, body).await
    }

    async fn create(&mut self, path: &str, body: Value) -> String {
        let key = self.admin_key.clone();
        let (status, _, body) = self.call(&key, Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// The ids found for `query` by the admin (or the plain user).
    async fn find(&mut self, query: &str, as_user: bool) -> Vec<String> {
        let key = if as_user {
            self.user_key.clone()
        } else {
            self.admin_key.clone()
        };
        let (status, headers, body) = self
            .call(&key, Method::GET, &format!("/search?{query}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let hits = body.as_array().unwrap();
        let total: usize = headers["x-total-count"].to_str().unwrap().parse().unwrap();
        assert!(total >= hits.len());
        hits.iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect()
    }
}

fn one(id: &str) -> Vec<String> {
    vec![id.to_string()]
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("warden-search-test-{}", fastrand::u64(..)))
}

struct Building {
    hq: String,
    annex: String,
    boardroom: String,
    huddle: String,
    module: String,
    driver: String,
}

async fn building(host: &mut Host) -> Building {
    let hq = host
        .create(
            "/zones",
            json!({"name": "Headquarters", "description": "Main office", "tags": ["building"]}),
        )
        .await;
    let annex = host
        .create(
            "/zones",
            json!({"name": "Annex", "tags": ["building", "leased"]}),
        )
        .await;
    let bytes = std::fs::read(warden_tests::guests::ECHO).unwrap();
    let driver = host
        .control
        .register_driver(&Actor("test".into()), bytes, None, None)
        .await
        .unwrap()
        .id;
    let module = host
        .create("/modules", json!({"driver_id": driver, "custom_name": "Projector", "notes": "door code hunter2secret"}))
        .await;
    let boardroom = host
        .create("/systems", json!({"name": "Boardroom", "description": "The big meeting room on level two", "zones": [hq], "modules": [module]}))
        .await;
    let huddle = host
        .create("/systems", json!({"name": "Huddle", "description": "Small room beside the boardroom", "zones": [annex]}))
        .await;
    Building {
        hq,
        annex,
        boardroom,
        huddle,
        module,
        driver,
    }
}

async fn search_ranks_matches_typos_and_filters(db: TestDb) {
    let store = db.store().await;
    let dir = temp_dir();
    let mut host = Host::open(&store, &dir, None).await;
    let b = building(&mut host).await;

    // A name match outranks a description match.
    assert_eq!(
        host.find("q=boardroom", false).await,
        [b.boardroom.clone(), b.huddle.clone()]
    );
    // Prefixes, one and two typos, phrases.
    assert_eq!(host.find("q=headq", false).await, one(&b.hq));
    assert_eq!(host.find("q=hedquarters", false).await, one(&b.hq));
    assert_eq!(host.find("q=haedquartrs", false).await, one(&b.hq));
    assert_eq!(
        host.find("q=%22meeting+room%22", false).await,
        one(&b.boardroom)
    );
    assert!(host.find("q=%22room+meeting%22", false).await.is_empty());
    // A module is found by its custom name and its driver's name.
    assert_eq!(host.find("q=projector", false).await, one(&b.module));
    assert!(
        host.find("q=echo&types=driver", false)
            .await
            .contains(&b.driver)
    );
    // Filters by type, zone and tag.
    assert_eq!(host.find("q=room&types=system", false).await.len(), 2);
    assert!(host.find("q=boardroom&types=zone", false).await.is_empty());
    let mut in_hq = host.find(&format!("zone={}", b.hq), false).await;
    in_hq.sort();
    let mut expected = vec![b.hq.clone(), b.boardroom.clone(), b.module.clone()];
    expected.sort();
    assert_eq!(in_hq, expected);
    assert_eq!(host.find("tag=leased", false).await, one(&b.annex));
    // Highlights are escaped HTML with the matched words in <b>.
    let key = host.admin_key.clone();
    let (_, _, body) = host.call(&key, Method::GET, "/search?q=meet", None).await;
    assert_eq!(body[0]["type"], "system");
    assert_eq!(
        body[0]["highlights"]["description"],
        "The big <b>meeting</b> room on level two"
    );
    // Paging: the total counts every match.
    let (_, headers, body) = host
        .call(&key, Method::GET, "/search?q=room&limit=1", None)
        .await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(headers["x-total-count"], "2");
    // Changes and deletions reach the index in the same request.
    let (status, _, _) = host
        .call(
            &key,
            Method::PATCH,
            &format!("/systems/{}", b.huddle),
            Some(json!({"name": "Focus pod"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(host.find("q=focus", false).await, one(&b.huddle));
    let (status, _, _) = host
        .call(&key, Method::DELETE, &format!("/zones/{}", b.annex), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(host.find("q=annex", false).await.is_empty());
    // The list endpoints' `q` is the same search, by type.
    let (status, headers, body) = host
        .call(&key, Method::GET, "/systems?q=bordroom", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-total-count"], "2");
    assert_eq!(body[0]["id"], b.boardroom.as_str());
    let (_, _, body) = host
        .call(&key, Method::GET, "/modules?q=projektor", None)
        .await;
    assert_eq!(body[0]["id"], b.module.as_str());
    let (_, _, body) = host.call(&key, Method::GET, "/zones?q=headq", None).await;
    assert_eq!(body[0]["id"], b.hq.as_str());
    // A bad type is the caller's error.
    let (status, _, _) = host
        .call(&key, Method::GET, "/search?types=users", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn search_shows_each_role_only_what_it_may_see(db: TestDb) {
    let store = db.store().await;
    let dir = temp_dir();
    let mut host = Host::open(&store, &dir, None).await;
    let b = building(&mut host).await;
    assert_eq!(host.find("q=projector", false).await, one(&b.module));
    assert!(host.find("q=projector", true).await.is_empty());
    assert!(host.find("types=driver,module", true).await.is_empty());
    let mut seen = host.find("limit=100", true).await;
    seen.sort();
    let mut expected = vec![b.hq, b.annex, b.boardroom, b.huddle];
    expected.sort();
    assert_eq!(seen, expected);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn search_never_finds_secrets(db: TestDb) {
    let store = db.store().await;
    let dir = temp_dir();
    let mut host = Host::open(&store, &dir, None).await;
    let b = building(&mut host).await;
    for (kind, parent) in [
        (ParentKind::Module, &b.module),
        (ParentKind::System, &b.boardroom),
        (ParentKind::Zone, &b.hq),
    ] {
        host.control
            .set_settings(
                &Actor("test".into()),
                kind,
                parent,
                Level::NeverDisplayed,
                &json!({"password": "hunter2secret"}),
            )
            .await
            .unwrap();
        host.control
            .set_settings(
                &Actor("test".into()),
                kind,
                parent,
                Level::None,
                &json!({"note": "hunter2secret"}),
            )
            .await
            .unwrap();
    }
    // The module's notes hold it too; a system's mailbox is not indexed either.
    let key = host.admin_key.clone();
    let (status, _, _) = host
        .call(
            &key,
            Method::PATCH,
            &format!("/systems/{}", b.boardroom),
            Some(json!({"email": "hunter2secret@example.org"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for query in [
        "q=hunter2secret",
        "q=hunter2",
        "q=%22door+code%22",
        "q=password",
    ] {
        assert!(host.find(query, false).await.is_empty(), "{query}");
    }
    // Nor after a rebuild from the store.
    host.control.rebuild_search().await.unwrap();
    assert!(host.find("q=hunter2secret", false).await.is_empty());
    assert_eq!(
        host.find("q=boardroom&types=system", false).await,
        [b.boardroom, b.huddle]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn search_rebuilds_a_deleted_index(db: TestDb) {
    let store = db.store().await;
    let dir = temp_dir();
    let mut host = Host::open(&store, &dir, None).await;
    let b = building(&mut host).await;
    let keys = (host.admin_key.clone(), host.user_key.clone());
    host.control.close_search().await;
    drop(host);
    std::fs::remove_dir_all(&dir).unwrap();
    let mut host = Host::open(&store, &dir, Some(keys.clone())).await;
    assert_eq!(
        host.find("q=boardroom&types=system", false).await,
        [b.boardroom.clone(), b.huddle.clone()]
    );
    assert_eq!(host.find("q=projector", false).await, one(&b.module));
    host.control.close_search().await;
    drop(host);
    // A damaged index is rebuilt too.
    std::fs::write(dir.join("meta.json"), "{ damaged").unwrap();
    let mut host = Host::open(&store, &dir, Some(keys)).await;
    assert_eq!(host.find("q=headquarters", false).await, [b.hq]);
    let _ = std::fs::remove_dir_all(&dir);
}

on_both_backends!(
    search_ranks_matches_typos_and_filters,
    search_shows_each_role_only_what_it_may_see,
    search_never_finds_secrets,
    search_rebuilds_a_deleted_index,
);
