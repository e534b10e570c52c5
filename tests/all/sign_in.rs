//! Sign-in end to end through the whole service (`warden::api::app`) over a real store,
//! on SQLite and on PostgreSQL, with the store's clock under the test's control: the
//! first administrator, the code flow with PKCE as a client sees it, refresh rotation and
//! reuse detection, code replay, lifetimes, API keys, client credentials, rate limiting,
//! deactivation and role changes, the audit trail, and every route against every role.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower_service::Service;
use warden::api::access::{Need, RULES};
use warden::api::{ApiState, app};
use warden::auth::external::ExternalIdentity;
use warden::auth::{Auth, AuthError};
use warden::control::{Control, ControlConfig};
use warden::store::{Actor, Clock, NewOAuthClient, NewUser, Store};
use zeroize::Zeroizing;

use crate::store::TestDb;
use crate::support;

const START: i64 = 1_900_000_000_000;
const MINUTE: i64 = 60_000;
const REDIRECT: &str = "https://app.example/callback";
const PASSWORD: &str = "correct horse battery staple";

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON: {}", self.text))
    }

    fn location(&self) -> String {
        self.headers
            .get(header::LOCATION)
            .unwrap_or_else(|| panic!("no Location ({}): {}", self.status, self.text))
            .to_str()
            .unwrap()
            .to_string()
    }
}

/// The service in process, its sign-in, and a clock the test sets.
struct Host {
    router: axum::Router,
    auth: Auth,
    store: Store,
    clock: Clock,
    _db: TestDb,
}

impl Host {
    async fn new(db: TestDb) -> Host {
        let clock = Clock::manual(START);
        let store = db.store().await.with_clock(clock.clone());
        let control = Control::new(store.clone(), support::runtime(), ControlConfig::default());
        let auth = support::auth(&store);
        Host {
            router: app(ApiState {
                control,
                auth: auth.clone(),
                danger_no_auth: false,
            }),
            auth,
            store,
            clock,
            _db: db,
        }
    }

    fn advance(&self, ms: i64) {
        self.clock.set(self.clock.now() + ms);
    }

    async fn send(&mut self, request: Request<Body>) -> Reply {
        let response = self.router.call(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// An API call with `credential` (`("authorization", "Bearer …")` or `("x-api-key", …)`).
    async fn api(
        &mut self,
        method: Method,
        path: &str,
        credential: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some((name, value)) = credential {
            request = request.header(name, value);
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    async fn form(&mut self, path: &str, fields: &[(&str, &str)], basic: Option<&str>) -> Reply {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(basic) = basic {
            request = request.header("authorization", format!("Basic {basic}"));
        }
        self.send(request.body(Body::from(encode(fields))).unwrap())
            .await
    }

    async fn admin(&self, email: &str) -> warden::store::User {
        self.user(email, &["admin"]).await
    }

    async fn user(&self, email: &str, roles: &[&str]) -> warden::store::User {
        self.auth
            .create_local_user(
                &Actor("test".into()),
                &NewUser {
                    email: email.into(),
                    roles: roles.iter().map(|r| r.to_string()).collect(),
                    auth_source: "local".into(),
                    ..NewUser::default()
                },
                Zeroizing::new(PASSWORD.into()),
            )
            .await
            .unwrap()
    }

    async fn public_client(&self) -> String {
        let (client, secret) = self
            .auth
            .create_client(
                &Actor("test".into()),
                &NewOAuthClient {
                    name: "Front end".into(),
                    redirect_uris: vec![REDIRECT.into()],
                    ..NewOAuthClient::default()
                },
            )
            .await
            .unwrap();
        assert!(secret.is_none());
        client.id
    }
}

fn encode(fields: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        form.append_pair(name, value);
    }
    form.finish()
}

fn query(url: &str) -> BTreeMap<String, String> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A browser: keeps the cookies the host sets for `/auth`.
#[derive(Default)]
struct Browser {
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn keep(&mut self, reply: &Reply) {
        for value in reply.headers.get_all(header::SET_COOKIE) {
            let text = value.to_str().unwrap();
            assert!(
                text.contains("Secure") && text.contains("HttpOnly") && text.contains("Path=/auth")
            );
            let (pair, _) = text.split_once(';').unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, host: &mut Host, path: &str) -> Reply {
        let request = Request::builder()
            .uri(path)
            .header("cookie", self.cookie_header())
            .body(Body::empty())
            .unwrap();
        let reply = host.send(request).await;
        self.keep(&reply);
        reply
    }

    async fn post(&mut self, host: &mut Host, path: &str, fields: &[(&str, &str)]) -> Reply {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(encode(fields)))
            .unwrap();
        let reply = host.send(request).await;
        self.keep(&reply);
        reply
    }

    /// The anti-forgery value of the form on the page just read.
    fn csrf(page: &Reply) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = page.text.find(marker).expect("a form") + marker.len();
        page.text[start..].split('"').next().unwrap().to_string()
    }

    async fn sign_in(
        &mut self,
        host: &mut Host,
        login: &str,
        password: &str,
        next: Option<&str>,
    ) -> Reply {
        let path = match next {
            Some(next) => format!("/auth/login?{}", encode(&[("continue", next)])),
            None => "/auth/login".to_string(),
        };
        let page = self.get(host, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let csrf = Browser::csrf(&page);
        let mut fields = vec![
            ("csrf", csrf.as_str()),
            ("login", login),
            ("password", password),
        ];
        if let Some(next) = next {
            fields.push(("continue", next));
        }
        self.post(host, "/auth/login", &fields).await
    }
}

struct Pkce {
    verifier: String,
    challenge: String,
}

fn new_pkce() -> Pkce {
    let verifier = format!("{:032x}{:032x}", fastrand::u128(..), fastrand::u128(..));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

fn authorize_path(client: &str, pkce: &Pkce, state: &str) -> String {
    format!(
        "/auth/oauth/authorize?{}",
        encode(&[
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", REDIRECT),
            ("scope", "public"),
            ("state", state),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ])
    )
}

/// Sign in through the browser and come back to the client with a code.
async fn code_for(
    host: &mut Host,
    browser: &mut Browser,
    client: &str,
    pkce: &Pkce,
    login: &str,
) -> String {
    let path = authorize_path(client, pkce, "xyz");
    let first = browser.get(host, &path).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.text);
    let location = first.location();
    if location.starts_with("/auth/login") {
        let next = query(&location)["continue"].clone();
        assert_eq!(next, path);
        let signed_in = browser.sign_in(host, login, PASSWORD, Some(&next)).await;
        assert_eq!(
            signed_in.status,
            StatusCode::SEE_OTHER,
            "{}",
            signed_in.text
        );
        assert_eq!(signed_in.location(), path);
    }
    let back = browser.get(host, &path).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.text);
    let location = back.location();
    assert!(location.starts_with(&format!("{REDIRECT}?")), "{location}");
    let params = query(&location);
    assert_eq!(params["state"], "xyz");
    assert_eq!(params["iss"], "https://warden.test");
    params["code"].clone()
}

async fn post_owned(
    browser: &mut Browser,
    host: &mut Host,
    fields: Vec<(String, String)>,
) -> Reply {
    let refs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    browser.post(host, "/auth/setup", &refs).await
}

/// A fresh access token of `login` for `client`, through the browser flow.
async fn token_for(host: &mut Host, client: &str, login: &str) -> String {
    let mut browser = Browser::default();
    let pkce = new_pkce();
    let code = code_for(host, &mut browser, client, &pkce, login).await;
    exchange(host, client, &code, &pkce.verifier).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn exchange(host: &mut Host, client: &str, code: &str, verifier: &str) -> Reply {
    host.form(
        "/auth/oauth/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", client),
            ("code_verifier", verifier),
        ],
        None,
    )
    .await
}

async fn refresh(host: &mut Host, client: &str, token: &str) -> Reply {
    host.form(
        "/auth/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", client),
        ],
        None,
    )
    .await
}

fn bearer(token: &str) -> (String, String) {
    ("authorization".to_string(), format!("Bearer {token}"))
}

async fn me(host: &mut Host, token: &str) -> StatusCode {
    let (name, value) = bearer(token);
    host.api(
        Method::GET,
        "/api/engine/v2/users/current",
        Some((&name, &value)),
        None,
    )
    .await
    .status
}

on_both_backends!(
    the_first_administrator_comes_only_from_the_setup_token,
    code_flow_with_pkce_refresh_rotation_and_reuse_detection,
    a_replayed_code_revokes_what_it_issued,
    authorization_requests_are_checked_before_anything_is_issued,
    lifetimes_follow_the_clock,
    api_keys_are_shown_once_scoped_and_revocable,
    client_credentials_act_as_the_service_user,
    sign_in_is_rate_limited_per_account_and_address,
    deactivation_and_role_changes_take_effect_at_once,
    sign_out_revokes_what_the_session_issued,
    an_external_identity_signs_in_only_its_own_sources_users,
);

async fn the_first_administrator_comes_only_from_the_setup_token(db: TestDb) {
    let mut host = Host::new(db).await;
    let mut browser = Browser::default();
    // No administrator: nobody signs in, not even a user who exists.
    host.user("early@example.org", &["user"]).await;
    let refused = browser
        .sign_in(&mut host, "early@example.org", PASSWORD, None)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.text.contains("no administrator"),
        "{}",
        refused.text
    );

    let token = host.auth.issue_setup_token().await.unwrap().unwrap();
    let page = browser.get(&mut host, "/auth/setup").await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = Browser::csrf(&page);
    let fields = |token: &str| {
        vec![
            ("csrf".to_string(), csrf.clone()),
            ("setup_token".to_string(), token.to_string()),
            ("email".to_string(), "first@example.org".to_string()),
            ("password".to_string(), PASSWORD.to_string()),
        ]
    };
    // A wrong token, or a forged form without the page's anti-forgery value, is refused.
    let wrong = post_owned(&mut browser, &mut host, fields("wdn_su_wrong")).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let mut forged = fields(token.expose());
    forged[0].1 = "wdn_fm_forged".into();
    assert_eq!(
        post_owned(&mut browser, &mut host, forged).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(!host.auth.ready().await.unwrap());
    // The right one creates the administrator and signs them in.
    let made = post_owned(&mut browser, &mut host, fields(token.expose())).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.text);
    assert!(browser.cookies.contains_key("warden_session"));
    let admin = host
        .store
        .user_by_login("first@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.roles, ["admin"]);
    let page = browser.get(&mut host, "/auth/login").await;
    assert!(
        page.text.contains("Signed in as first@example.org"),
        "{}",
        page.text
    );
    // It is used up: no second administrator from it, and the page says so.
    let again = post_owned(&mut browser, &mut host, fields(token.expose())).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert_eq!(
        browser.get(&mut host, "/auth/setup").await.status,
        StatusCode::CONFLICT
    );
    // Now sign-in is open; the password was never stored as itself.
    let mut other = Browser::default();
    let ok = other
        .sign_in(&mut host, "early@example.org", PASSWORD, None)
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    let entries = host.store.audit_entries(0, 1000).await.unwrap();
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains(PASSWORD) && !text.contains(token.expose()));
    assert!(
        entries
            .iter()
            .any(|e| e.action == "user.sign_in" && e.actor == admin.id)
    );
}

async fn code_flow_with_pkce_refresh_rotation_and_reuse_detection(db: TestDb) {
    let mut host = Host::new(db).await;
    host.admin("ann@example.org").await;
    let client = host.public_client().await;
    let mut browser = Browser::default();
    let pkce = new_pkce();
    let code = code_for(&mut host, &mut browser, &client, &pkce, "ann@example.org").await;
    assert!(code.starts_with("wdn_ac_"));

    // A wrong verifier is refused and uses the code up.
    let tokens = exchange(&mut host, &client, &code, &pkce.verifier).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text);
    let tokens = tokens.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 15 * 60);
    assert_eq!(tokens["scope"], "public");
    assert_eq!(tokens["access_token"].as_str().unwrap().len(), 50);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh1 = tokens["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(me(&mut host, &access).await, StatusCode::OK);

    // Rotation: a new pair each time; the old access token keeps working until it expires.
    let second = refresh(&mut host, &client, &refresh1).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let second = second.json();
    let access2 = second["access_token"].as_str().unwrap().to_string();
    let refresh2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh1, refresh2);
    assert_eq!(me(&mut host, &access2).await, StatusCode::OK);
    // Another client cannot use it.
    let other = host.public_client().await;
    assert_eq!(
        refresh(&mut host, &other, &refresh2).await.json()["error"],
        "invalid_grant"
    );

    // Reuse of the first refresh token: the whole family is revoked, at once.
    let reused = refresh(&mut host, &client, &refresh1).await;
    assert_eq!(reused.status, StatusCode::BAD_REQUEST);
    assert_eq!(reused.json()["error"], "invalid_grant");
    assert_eq!(me(&mut host, &access2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&mut host, &access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&mut host, &client, &refresh2).await.status,
        StatusCode::BAD_REQUEST
    );
    let entries = host.store.audit_entries(0, 1000).await.unwrap();
    assert!(entries.iter().any(|e| e.action == "token.reuse_detected"));
    assert!(entries.iter().any(|e| e.action == "token.issue"));
    assert!(entries.iter().any(|e| e.action == "token.refresh"));
    let text = serde_json::to_string(&entries).unwrap();
    for secret in [&access, &access2, &refresh1, &refresh2, &code] {
        assert!(!text.contains(secret.as_str()), "a token in the audit log");
    }

    // The password grant is refused by design.
    let password = host
        .form(
            "/auth/oauth/token",
            &[
                ("grant_type", "password"),
                ("username", "ann@example.org"),
                ("password", PASSWORD),
                ("client_id", &client),
            ],
            None,
        )
        .await;
    assert_eq!(password.json()["error"], "unsupported_grant_type");

    // Revocation (RFC 7009) ends a grant at once.
    let pkce = new_pkce();
    let code = code_for(&mut host, &mut browser, &client, &pkce, "ann@example.org").await;
    let tokens = exchange(&mut host, &client, &code, &pkce.verifier)
        .await
        .json();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(me(&mut host, access).await, StatusCode::OK);
    let revoked = host
        .form(
            "/auth/oauth/revoke",
            &[
                ("token", tokens["refresh_token"].as_str().unwrap()),
                ("client_id", &client),
            ],
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(me(&mut host, access).await, StatusCode::UNAUTHORIZED);
}

async fn a_replayed_code_revokes_what_it_issued(db: TestDb) {
    let mut host = Host::new(db).await;
    host.admin("ann@example.org").await;
    let client = host.public_client().await;
    let mut browser = Browser::default();
    let pkce = new_pkce();
    let code = code_for(&mut host, &mut browser, &client, &pkce, "ann@example.org").await;
    let first = exchange(&mut host, &client, &code, &pkce.verifier)
        .await
        .json();
    let access = first["access_token"].as_str().unwrap().to_string();
    assert_eq!(me(&mut host, &access).await, StatusCode::OK);
    let replay = exchange(&mut host, &client, &code, &pkce.verifier).await;
    assert_eq!(replay.json()["error"], "invalid_grant");
    assert_eq!(me(&mut host, &access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&mut host, &client, first["refresh_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // A wrong verifier uses the code up too, and gives nothing.
    let pkce2 = new_pkce();
    let code = code_for(&mut host, &mut browser, &client, &pkce2, "ann@example.org").await;
    let wrong = exchange(&mut host, &client, &code, &pkce.verifier).await;
    assert_eq!(wrong.json()["error"], "invalid_grant");
    assert_eq!(
        exchange(&mut host, &client, &code, &pkce2.verifier)
            .await
            .json()["error"],
        "invalid_grant"
    );
    // A code for one client is nothing to another.
    let other = host.public_client().await;
    let code = code_for(&mut host, &mut browser, &client, &pkce2, "ann@example.org").await;
    assert_eq!(
        exchange(&mut host, &other, &code, &pkce2.verifier)
            .await
            .json()["error"],
        "invalid_grant"
    );
}

async fn authorization_requests_are_checked_before_anything_is_issued(db: TestDb) {
    let mut host = Host::new(db).await;
    host.admin("ann@example.org").await;
    let client = host.public_client().await;
    let mut browser = Browser::default();
    browser
        .sign_in(&mut host, "ann@example.org", PASSWORD, None)
        .await;
    let pkce = new_pkce();
    let with = |changes: &[(&str, Option<&str>)]| {
        let mut fields: BTreeMap<&str, String> = [
            ("response_type", "code"),
            ("client_id", client.as_str()),
            ("redirect_uri", REDIRECT),
            ("state", "s1"),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        for (name, value) in changes {
            match value {
                Some(value) => fields.insert(name, value.to_string()),
                None => fields.remove(name),
            };
        }
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        format!("/auth/oauth/authorize?{}", encode(&pairs))
    };
    // Unknown client or unregistered redirect URI: a page, never a redirect.
    for path in [
        with(&[("client_id", Some("app-nope"))]),
        with(&[("redirect_uri", Some("https://evil.example/callback"))]),
        with(&[("redirect_uri", Some("https://app.example/callback/"))]),
        with(&[("redirect_uri", None)]),
    ] {
        let reply = browser.get(&mut host, &path).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(reply.headers.get(header::LOCATION).is_none());
    }
    // Everything else goes back to the client as an error, with state and iss.
    for (changes, error) in [
        (
            vec![("code_challenge_method", Some("plain"))],
            "invalid_request",
        ),
        (vec![("code_challenge_method", None)], "invalid_request"),
        (vec![("code_challenge", None)], "invalid_request"),
        (vec![("code_challenge", Some("short"))], "invalid_request"),
        (
            vec![("response_type", Some("token"))],
            "unsupported_response_type",
        ),
        (vec![("scope", Some("public admin"))], "invalid_scope"),
    ] {
        let reply = browser.get(&mut host, &with(&changes)).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        let params = query(&reply.location());
        assert_eq!(params["error"], error, "{changes:?}");
        assert_eq!(params["state"], "s1");
        assert_eq!(params["iss"], "https://warden.test");
        assert!(!params.contains_key("code"));
    }
    // The sign-in page continues only into authorization requests on this host.
    let mut stranger = Browser::default();
    let reply = stranger
        .sign_in(
            &mut host,
            "ann@example.org",
            PASSWORD,
            Some("https://evil.example/"),
        )
        .await;
    assert_eq!(reply.location(), "/auth/login");
}

async fn lifetimes_follow_the_clock(db: TestDb) {
    let mut host = Host::new(db).await;
    host.admin("ann@example.org").await;
    let client = host.public_client().await;
    let mut browser = Browser::default();
    let pkce = new_pkce();
    // A code lives 60 s.
    let code = code_for(&mut host, &mut browser, &client, &pkce, "ann@example.org").await;
    host.advance(61_000);
    assert_eq!(
        exchange(&mut host, &client, &code, &pkce.verifier)
            .await
            .json()["error"],
        "invalid_grant"
    );
    // An access token lives 15 minutes, checked on every request (cached or not).
    let code = code_for(&mut host, &mut browser, &client, &pkce, "ann@example.org").await;
    let tokens = exchange(&mut host, &client, &code, &pkce.verifier)
        .await
        .json();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(me(&mut host, &access).await, StatusCode::OK);
    host.advance(15 * MINUTE - 1);
    assert_eq!(me(&mut host, &access).await, StatusCode::OK);
    host.advance(1);
    assert_eq!(me(&mut host, &access).await, StatusCode::UNAUTHORIZED);
    // A grant unused for its idle time (a week) cannot be refreshed.
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_string();
    host.advance(7 * 24 * 60 * MINUTE);
    let idle = refresh(&mut host, &client, &refresh_token).await;
    assert_eq!(idle.json()["error"], "invalid_grant");
    assert!(
        idle.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("idle")
    );
    // Refreshed often, a grant still ends after 30 days.
    let code = code_for(
        &mut host,
        &mut Browser::default(),
        &client,
        &pkce,
        "ann@example.org",
    )
    .await;
    let mut token = exchange(&mut host, &client, &code, &pkce.verifier)
        .await
        .json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..5 {
        host.advance(5 * 24 * 60 * MINUTE);
        let next = refresh(&mut host, &client, &token).await;
        assert_eq!(next.status, StatusCode::OK, "{}", next.text);
        token = next.json()["refresh_token"].as_str().unwrap().to_string();
    }
    host.advance(5 * 24 * 60 * MINUTE);
    let old = refresh(&mut host, &client, &token).await;
    assert_eq!(old.json()["error"], "invalid_grant");
    assert!(
        old.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("absolute")
    );
    // A sign-in page session lasts 12 hours.
    let mut browser = Browser::default();
    browser
        .sign_in(&mut host, "ann@example.org", PASSWORD, None)
        .await;
    host.advance(12 * 60 * MINUTE - 1);
    let still = browser
        .get(&mut host, &authorize_path(&client, &pkce, "s"))
        .await;
    assert!(still.location().starts_with(REDIRECT));
    host.advance(1);
    let again = browser
        .get(&mut host, &authorize_path(&client, &pkce, "s"))
        .await;
    assert!(again.location().starts_with("/auth/login?continue="));
}

async fn api_keys_are_shown_once_scoped_and_revocable(db: TestDb) {
    let mut host = Host::new(db).await;
    let admin = host.admin("ann@example.org").await;
    let bob = host.user("bob@example.org", &["support"]).await;
    let (_, key) = host
        .auth
        .create_api_key(
            &Actor("test".into()),
            &warden::store::NewApiKey {
                user_id: admin.id.clone(),
                name: "bootstrap 2".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let admin_key = ("x-api-key", key.expose());
    // Created through the API for bob, read-only, expiring in an hour.
    let created = host
        .api(
            Method::POST,
            "/api/engine/v2/api_keys",
            Some(admin_key),
            Some(
                json!({"user_id": bob.id, "name": "dashboard", "scopes": ["read"],
                        "expires_at": START + 60 * MINUTE}),
            ),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let created = created.json();
    let bob_key = created["x_api_key"].as_str().unwrap().to_string();
    assert!(bob_key.starts_with("wdn_ak_"));
    let listed = host
        .api(
            Method::GET,
            "/api/engine/v2/api_keys",
            Some(admin_key),
            None,
        )
        .await;
    assert_eq!(listed.headers["x-total-count"], "2");
    assert!(!listed.text.contains(&bob_key) && !listed.text.contains("key_hash"));
    // It reads as bob (support), and only reads.
    let bob_auth = ("x-api-key", bob_key.as_str());
    assert_eq!(
        host.api(
            Method::GET,
            "/api/engine/v2/users/current",
            Some(bob_auth),
            None
        )
        .await
        .json()["email"],
        "bob@example.org"
    );
    assert_eq!(
        host.api(Method::GET, "/api/engine/v2/modules", Some(bob_auth), None)
            .await
            .status,
        StatusCode::OK
    );
    let write = host
        .api(
            Method::POST,
            "/api/engine/v2/settings",
            Some(bob_auth),
            Some(json!({})),
        )
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN, "{}", write.text);
    assert!(write.text.contains("read"));
    // Expiry, then a fresh one revoked.
    host.advance(60 * MINUTE);
    assert_eq!(
        host.api(
            Method::GET,
            "/api/engine/v2/users/current",
            Some(bob_auth),
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    let created = host
        .api(
            Method::POST,
            "/api/engine/v2/api_keys",
            Some(admin_key),
            Some(json!({"user_id": bob.id, "name": "d2"})),
        )
        .await
        .json();
    let key2 = created["x_api_key"].as_str().unwrap().to_string();
    let auth2 = ("x-api-key", key2.as_str());
    assert_eq!(
        host.api(
            Method::GET,
            "/api/engine/v2/users/current",
            Some(auth2),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    let path = format!(
        "/api/engine/v2/api_keys/{}",
        created["id"].as_str().unwrap()
    );
    assert_eq!(
        host.api(Method::DELETE, &path, Some(admin_key), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        host.api(
            Method::GET,
            "/api/engine/v2/users/current",
            Some(auth2),
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    // A bad key is a 401 with a challenge, even on a route that exists.
    let bad = host
        .api(
            Method::GET,
            "/api/engine/v2/zones",
            Some(("x-api-key", "wdn_ak_nope")),
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.headers.contains_key(header::WWW_AUTHENTICATE));
}

async fn client_credentials_act_as_the_service_user(db: TestDb) {
    let mut host = Host::new(db).await;
    host.admin("ann@example.org").await;
    let service = host
        .store
        .create_user(
            &Actor("test".into()),
            &NewUser {
                email: "bms@service.invalid".into(),
                roles: vec!["support".into()],
                auth_source: "service".into(),
                ..NewUser::default()
            },
        )
        .await
        .unwrap();
    let (client, secret) = host
        .auth
        .create_client(
            &Actor("test".into()),
            &NewOAuthClient {
                name: "BMS".into(),
                grant_types: vec!["client_credentials".into()],
                confidential: true,
                service_user_id: Some(service.id.clone()),
                ..NewOAuthClient::default()
            },
        )
        .await
        .unwrap();
    let secret = secret.unwrap();
    let basic = |id: &str, secret: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    };
    let wrong = host
        .form(
            "/auth/oauth/token",
            &[("grant_type", "client_credentials")],
            Some(&basic(&client.id, "wdn_cs_wrong")),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["error"], "invalid_client");
    let good = host
        .form(
            "/auth/oauth/token",
            &[("grant_type", "client_credentials")],
            Some(&basic(&client.id, secret.expose())),
        )
        .await;
    assert_eq!(good.status, StatusCode::OK, "{}", good.text);
    let good = good.json();
    assert!(good.get("refresh_token").is_none());
    let token = good["access_token"].as_str().unwrap();
    let (name, value) = bearer(token);
    let current = host
        .api(
            Method::GET,
            "/api/engine/v2/users/current",
            Some((&name, &value)),
            None,
        )
        .await;
    assert_eq!(current.json()["id"], service.id);
    // The service user is support: not an administrator.
    assert_eq!(
        host.api(
            Method::GET,
            "/api/engine/v2/users",
            Some((&name, &value)),
            None
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    // The secret in the form works as well; a public client may not use this grant.
    let form = host
        .form(
            "/auth/oauth/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client.id),
                ("client_secret", secret.expose()),
            ],
            None,
        )
        .await;
    assert_eq!(form.status, StatusCode::OK);
    let public = host.public_client().await;
    let refused = host
        .form(
            "/auth/oauth/token",
            &[("grant_type", "client_credentials"), ("client_id", &public)],
            None,
        )
        .await;
    assert_eq!(refused.json()["error"], "unauthorized_client");
    // A new secret revokes what the old one was given.
    host.auth
        .replace_client_secret(&Actor("test".into()), &client.id)
        .await
        .unwrap();
    assert_eq!(me(&mut host, token).await, StatusCode::UNAUTHORIZED);
}

async fn sign_in_is_rate_limited_per_account_and_address(db: TestDb) {
    let mut host = Host::new(db).await;
    host.admin("ann@example.org").await;
    let mut browser = Browser::default();
    for _ in 0..warden::auth::limiter::FREE_ACCOUNT_FAILURES + 1 {
        let wrong = browser
            .sign_in(
                &mut host,
                "ann@example.org",
                "not the password at all",
                None,
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
    // Locked: even the right password is refused, with a time to wait.
    let locked = browser
        .sign_in(&mut host, "ann@example.org", PASSWORD, None)
        .await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        locked.text
    );
    assert_eq!(locked.headers[header::RETRY_AFTER], "1");
    host.advance(1000);
    let ok = browser
        .sign_in(&mut host, "ann@example.org", PASSWORD, None)
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    // An unknown account is counted like a known one.
    let mut browser = Browser::default();
    for _ in 0..warden::auth::limiter::FREE_ACCOUNT_FAILURES + 1 {
        browser
            .sign_in(&mut host, "nobody@example.org", PASSWORD, None)
            .await;
    }
    let unknown = browser
        .sign_in(&mut host, "nobody@example.org", PASSWORD, None)
        .await;
    assert_eq!(unknown.status, StatusCode::TOO_MANY_REQUESTS);
    let failures = host.store.audit_entries(0, 1000).await.unwrap();
    assert!(
        failures
            .iter()
            .filter(|e| e.action == "user.sign_in_failed")
            .count()
            >= 12
    );
}

async fn deactivation_and_role_changes_take_effect_at_once(db: TestDb) {
    let mut host = Host::new(db).await;
    let admin = host.admin("ann@example.org").await;
    let bob = host.user("bob@example.org", &["admin"]).await;
    let client = host.public_client().await;
    let ann = token_for(&mut host, &client, "ann@example.org").await;
    let bobs = token_for(&mut host, &client, "bob@example.org").await;
    let (an, av) = bearer(&ann);
    let (bn, bv) = bearer(&bobs);
    // Bob is an admin, and the check is cached: demoting him counts on the next request.
    assert_eq!(
        host.api(Method::GET, "/api/engine/v2/users", Some((&bn, &bv)), None)
            .await
            .status,
        StatusCode::OK
    );
    let path = format!("/api/engine/v2/users/{}", bob.id);
    let demote = host
        .api(
            Method::PATCH,
            &path,
            Some((&an, &av)),
            Some(json!({"roles": ["user"]})),
        )
        .await;
    assert_eq!(demote.status, StatusCode::OK, "{}", demote.text);
    assert_eq!(
        host.api(Method::GET, "/api/engine/v2/users", Some((&bn, &bv)), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Deactivated: every credential stops at once.
    let off = host
        .api(
            Method::PATCH,
            &path,
            Some((&an, &av)),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(off.json()["active"], false);
    assert_eq!(me(&mut host, &bobs).await, StatusCode::UNAUTHORIZED);
    let mut browser = Browser::default();
    assert_eq!(
        browser
            .sign_in(&mut host, "bob@example.org", PASSWORD, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // The last administrator cannot be removed, demoted or deactivated.
    let me_path = format!("/api/engine/v2/users/{}", admin.id);
    for body in [json!({"active": false}), json!({"roles": ["user"]})] {
        let refused = host
            .api(Method::PATCH, &me_path, Some((&an, &av)), Some(body))
            .await;
        assert_eq!(refused.status, StatusCode::CONFLICT);
        assert_eq!(refused.json()["error"]["code"], "last_admin");
    }
    assert_eq!(
        host.api(Method::DELETE, &me_path, Some((&an, &av)), None)
            .await
            .status,
        StatusCode::CONFLICT
    );
    let audit = host.store.audit_entries(0, 1000).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "user.update" && e.details["changed"] == json!(["roles"]))
    );
}

async fn sign_out_revokes_what_the_session_issued(db: TestDb) {
    let mut host = Host::new(db).await;
    host.admin("ann@example.org").await;
    let client = host.public_client().await;
    let mut browser = Browser::default();
    let pkce = new_pkce();
    let code = code_for(&mut host, &mut browser, &client, &pkce, "ann@example.org").await;
    let tokens = exchange(&mut host, &client, &code, &pkce.verifier)
        .await
        .json();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(me(&mut host, &access).await, StatusCode::OK);
    let page = browser.get(&mut host, "/auth/logout").await;
    let csrf = Browser::csrf(&page);
    // A forged sign-out (no anti-forgery value) does nothing.
    assert_eq!(
        browser.post(&mut host, "/auth/logout", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(me(&mut host, &access).await, StatusCode::OK);
    let out = browser
        .post(&mut host, "/auth/logout", &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(!browser.cookies.contains_key("warden_session"));
    assert_eq!(me(&mut host, &access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(
            &mut host,
            &client,
            tokens["refresh_token"].as_str().unwrap()
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
    let again = browser
        .get(&mut host, &authorize_path(&client, &pkce, "s"))
        .await;
    assert!(again.location().starts_with("/auth/login"));
}

async fn an_external_identity_signs_in_only_its_own_sources_users(db: TestDb) {
    let host = Host::new(db).await;
    host.admin("root@example.org").await;
    let corp = |email: &str, roles: Option<&[&str]>| ExternalIdentity {
        source: "corp".into(),
        email: email.into(),
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        roles: roles.map(|roles| roles.iter().map(|r| r.to_string()).collect()),
    };
    // The first sign-in creates the user in the source, with the mapped roles.
    let (cookie, session) = host
        .auth
        .sign_in_external(&corp("Ada@Example.org", Some(&["support"])), None, START)
        .await
        .unwrap();
    assert_eq!(session.source, "corp");
    let (_, user) = host
        .auth
        .session(cookie.expose(), START)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (user.email.as_str(), user.auth_source.as_str()),
        ("ada@example.org", "corp")
    );
    assert_eq!(user.roles, ["support"]);
    // A later one refreshes what the provider says.
    let mut renamed = corp("ada@example.org", Some(&["admin"]));
    renamed.last_name = Some("King".into());
    host.auth
        .sign_in_external(&renamed, None, START + MINUTE)
        .await
        .unwrap();
    let user = host.store.user(&user.id).await.unwrap();
    assert_eq!(
        (user.last_name.as_str(), user.roles.clone()),
        ("King", vec!["admin".to_string()])
    );
    // A source that maps no roles leaves them as an administrator set them.
    host.auth
        .sign_in_external(&corp("ada@example.org", None), None, START + MINUTE)
        .await
        .unwrap();
    assert_eq!(host.store.user(&user.id).await.unwrap().roles, ["admin"]);
    // Another source, or a local account with the same email: refused, and audited.
    let mut other = corp("ada@example.org", None);
    other.source = "partner".into();
    let refused = host.auth.sign_in_external(&other, None, START).await;
    assert!(
        matches!(refused, Err(AuthError::WrongSource { .. })),
        "{refused:?}"
    );
    let refused = host
        .auth
        .sign_in_external(&corp("root@example.org", Some(&["admin"])), None, START)
        .await;
    assert!(
        matches!(refused, Err(AuthError::WrongSource { .. })),
        "{refused:?}"
    );
    let failures = host
        .store
        .audit_entries(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|entry| entry.action == "user.sign_in_failed")
        .count();
    assert_eq!(failures, 2);
    // A deactivated user stays out.
    host.store
        .update_user(
            &Actor("test".into()),
            &user.id,
            &warden::store::UserPatch {
                active: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let refused = host
        .auth
        .sign_in_external(&corp("ada@example.org", None), None, START)
        .await;
    assert!(
        matches!(refused, Err(AuthError::Deactivated)),
        "{refused:?}"
    );
}

/// What each route needs, written out again here: a route whose rule changes, or a new
/// rule, fails this test until the change is made on purpose in both places.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("GET", "/openapi.json", "public"),
    ("GET", "/zones", "user"),
    ("GET", "/zones/{id}", "user"),
    ("POST", "/zones", "admin"),
    ("PATCH", "/zones/{id}", "admin"),
    ("PUT", "/zones/{id}", "admin"),
    ("DELETE", "/zones/{id}", "admin"),
    ("GET", "/systems", "user"),
    ("GET", "/systems/{id}", "user"),
    ("POST", "/systems", "admin"),
    ("PATCH", "/systems/{id}", "admin"),
    ("PUT", "/systems/{id}", "admin"),
    ("DELETE", "/systems/{id}", "admin"),
    ("PUT", "/systems/{id}/module/{module_id}", "admin"),
    ("DELETE", "/systems/{id}/module/{module_id}", "admin"),
    ("GET", "/systems/{id}/functions/{module_slug}", "user"),
    ("GET", "/systems/{id}/{module_slug}", "user"),
    ("POST", "/systems/{id}/{module_slug}/{method}", "user"),
    ("GET", "/systems/control", "user"),
    ("GET", "/search", "user"),
    ("GET", "/drivers", "support"),
    ("GET", "/drivers/{id}", "support"),
    ("POST", "/drivers", "admin"),
    ("DELETE", "/drivers/{id}", "admin"),
    ("POST", "/drivers/{id}/approval", "reviewer"),
    ("GET", "/drivers/{id}/attestation", "support"),
    ("POST", "/drivers/{id}/upgrade", "admin"),
    ("GET", "/drivers/{id}/review", "reviewer"),
    ("GET", "/drivers/{id}/updates", "reviewer"),
    ("GET", "/drivers/{id}/component", "reviewer"),
    ("GET", "/signing_keys", "user"),
    ("GET", "/repositories", "reviewer"),
    ("POST", "/repositories", "admin"),
    ("GET", "/repositories/{id}", "reviewer"),
    ("DELETE", "/repositories/{id}", "admin"),
    ("GET", "/builds", "reviewer"),
    ("POST", "/builds", "admin"),
    ("GET", "/builds/{id}", "reviewer"),
    ("POST", "/builds/{id}/cancel", "admin"),
    ("GET", "/modules", "support"),
    ("GET", "/modules/{id}", "support"),
    ("POST", "/modules", "admin"),
    ("PATCH", "/modules/{id}", "admin"),
    ("PUT", "/modules/{id}", "admin"),
    ("DELETE", "/modules/{id}", "admin"),
    ("POST", "/modules/{id}/start", "support"),
    ("POST", "/modules/{id}/stop", "support"),
    ("GET", "/modules/{id}/state", "support"),
    ("GET", "/modules/{id}/state/{key}", "support"),
    ("POST", "/modules/{id}/exec/{method}", "support"),
    ("GET", "/modules/{id}/settings", "support"),
    ("GET", "/modules/{id}/history", "support"),
    ("GET", "/settings", "support"),
    ("POST", "/settings", "support"),
    ("GET", "/settings/{id}", "support"),
    ("DELETE", "/settings/{id}", "support"),
    ("GET", "/settings/{id}/history", "support"),
    ("GET", "/users/current", "user"),
    ("POST", "/users/current/password", "user"),
    ("GET", "/users", "admin"),
    ("POST", "/users", "admin"),
    ("GET", "/users/{id}", "admin"),
    ("PATCH", "/users/{id}", "admin"),
    ("PUT", "/users/{id}", "admin"),
    ("DELETE", "/users/{id}", "admin"),
    ("POST", "/users/{id}/password", "admin"),
    ("GET", "/api_keys", "admin"),
    ("POST", "/api_keys", "admin"),
    ("DELETE", "/api_keys/{id}", "admin"),
    ("GET", "/oauth_apps", "admin"),
    ("POST", "/oauth_apps", "admin"),
    ("GET", "/oauth_apps/{id}", "admin"),
    ("PATCH", "/oauth_apps/{id}", "admin"),
    ("PUT", "/oauth_apps/{id}", "admin"),
    ("DELETE", "/oauth_apps/{id}", "admin"),
    ("POST", "/oauth_apps/{id}/secret", "admin"),
];

fn need_name(need: Need) -> &'static str {
    match need {
        Need::Public => "public",
        Need::User => "user",
        Need::Support => "support",
        Need::Admin => "admin",
        Need::Reviewer => "reviewer",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_every_role_below_its_rule() {
    let actual: Vec<(&str, &str, &str)> = RULES
        .iter()
        .map(|r| (r.method, r.path, need_name(r.need)))
        .collect();
    assert_eq!(actual, EXPECTED, "the access table changed");

    let mut host = Host::new(TestDb::sqlite().await).await;
    host.admin("root@example.org").await;
    let mut keys: Vec<(&str, Option<String>)> = vec![("anonymous", None)];
    for role in ["user", "support", "admin", "reviewer"] {
        let user = host.user(&format!("{role}@example.org"), &[role]).await;
        let (_, key) = host
            .auth
            .create_api_key(
                &Actor("test".into()),
                &warden::store::NewApiKey {
                    user_id: user.id,
                    name: role.into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        keys.push((role, Some(key.expose().to_string())));
    }
    let rank = |role: &str| match role {
        "user" | "reviewer" => 1,
        "support" => 2,
        "admin" => 3,
        _ => 0,
    };
    for (method, path, need) in EXPECTED {
        // Placeholders become ids that do not exist: an allowed call fails later, as a
        // 4xx of its own, never with the access checks' 401 or 403.
        let concrete = path
            .replace("{id}", "nope-000000000000")
            .replace("{module_id}", "mod-000000000000")
            .replace("{module_slug}", "Display_1")
            .replace("{method}", "power")
            .replace("{key}", "power");
        let uri = format!("/api/engine/v2{concrete}");
        for (role, key) in &keys {
            let credential = key.as_deref().map(|k| ("x-api-key", k));
            let body = (*method != "GET" && *method != "DELETE").then(|| json!({}));
            let reply = host
                .api(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    &uri,
                    credential,
                    body,
                )
                .await;
            let allowed = match *need {
                "user" => *role != "anonymous",
                "reviewer" => matches!(*role, "reviewer" | "admin"),
                other => rank(role) >= rank(other),
            };
            let expected_refusal = if *role == "anonymous" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            if allowed {
                assert!(
                    reply.status != StatusCode::UNAUTHORIZED
                        && reply.status != StatusCode::FORBIDDEN
                        && !reply.text.contains("no such route"),
                    "{method} {path} as {role}: {} {}",
                    reply.status,
                    reply.text
                );
            } else {
                assert_eq!(
                    reply.status, expected_refusal,
                    "{method} {path} as {role}: {}",
                    reply.text
                );
            }
        }
    }
}
