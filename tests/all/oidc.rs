//! Single sign-on through a real OpenID Connect provider (panva's `oidc-provider` from npm,
//! tests/clients/oidc-provider) on 127.0.0.1 over HTTPS: a browser (curl with a cookie
//! jar) goes from Warden's sign-in page to the provider's sign-in form, back to Warden's
//! callback, and on into Warden's own authorization server; an application then reads
//! the user with the token it got. Forged, replayed and misdirected callbacks get
//! nothing, and no secret of the flow reaches Warden's log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use warden_tests::browser::{browse, header};
use warden_tests::serve_process::{ServeProcess, admin_api_key, scratch};

const CLIENT_SECRET: &str = "provider-client-secret-7f3a9c";
const PASSWORD: &str = "ada-provider-password-51e2";
const SECRET_ENV: &str = "WARDEN_TEST_OIDC_SECRET";

/// The provider as a child process, killed when dropped.
struct Provider {
    child: Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for 127.0.0.1 (its PEM files), which the provider serves.
fn provider_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let certificate = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("provider.crt"), dir.join("provider.key"));
    std::fs::write(&cert_path, certificate.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn start_provider(port: u16, cert: &Path, key: &Path, redirect_uri: &str) -> Provider {
    let dir = warden_tests::repo_root().join("tests/clients/oidc-provider");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "run scripts/setup (it installs tests/clients/oidc-provider)"
    );
    let mut child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(&dir)
        .env("PORT", port.to_string())
        .env("TLS_CERT", cert)
        .env("TLS_KEY", key)
        .env("CLIENT_ID", "warden")
        .env("CLIENT_SECRET", CLIENT_SECRET)
        .env("REDIRECT_URI", redirect_uri)
        .env("OTHER_CLIENT_ID", "other-app")
        .env("OTHER_CLIENT_SECRET", "other-app-secret-0b1d")
        .env("ACCOUNT_LOGIN", "ada")
        .env("ACCOUNT_PASSWORD", PASSWORD)
        .env("ACCOUNT_EMAIL", "Ada@IdP.example")
        .env("ACCOUNT_GROUPS", "engineers,staff")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (scripts/setup installs it)");
    let stdout = child.stdout.take().unwrap();
    let (send, lines) = std::sync::mpsc::channel();
    // Read to the end, so that the provider never writes into a closed pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = send.send(line);
        }
    });
    let issuer = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the provider did not start");
        if let Some(issuer) = line.strip_prefix("listening on ") {
            break issuer.to_string();
        }
    };
    Provider { child, issuer }
}

fn set_cookies(headers: &str) -> Vec<String> {
    headers
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().to_string())
        })
        .collect()
}

fn query_value(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.to_string())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

fn with_query_value(url: &str, name: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (key, old) in form_urlencoded::parse(query.as_bytes()) {
        out.append_pair(&key, if key == name { value } else { &old });
    }
    format!("{base}?{}", out.finish())
}

/// The browser of one person, and the things it needs to talk to both hosts.
struct Browser<'a> {
    warden: String,
    ca: &'a Path,
    jar: PathBuf,
    /// What the provider's pages showed (every password form was seen here).
    provider_logins: usize,
}

impl Browser<'_> {
    fn get(&self, url: &str) -> (u16, String, String) {
        let url = if url.starts_with('/') {
            format!("{}{url}", self.warden)
        } else {
            url.to_string()
        };
        browse(self.ca, Some(&self.jar), &[], &url)
    }

    /// From Warden's sign-in page for `authorize` to the provider's authorization URL.
    fn start(&self, authorize: &str) -> String {
        let (status, headers, _) = self.get(authorize);
        assert_eq!(status, 303, "{headers}");
        let login = header(&headers, "location").unwrap();
        assert!(login.starts_with("/auth/login?continue="), "{login}");
        let (status, _, page) = self.get(&login);
        assert_eq!(status, 200, "{page}");
        let marker = "<a href=\"/auth/oidc/corp/login";
        let start = page.find(marker).expect("a link to the provider") + "<a href=\"".len();
        let href = page[start..]
            .split('"')
            .next()
            .unwrap()
            .replace("&amp;", "&");
        assert!(page.contains(">Sign in with Corp Login</a>"), "{page}");
        let (status, headers, body) = self.get(&href);
        assert_eq!(status, 303, "{headers}{body}");
        let cookie = set_cookies(&headers)
            .into_iter()
            .find(|c| c.starts_with("warden_sso="))
            .expect("the browser's sign-in cookie");
        assert!(
            cookie.contains("Path=/auth") && cookie.contains("Secure; HttpOnly; SameSite=Lax"),
            "{cookie}"
        );
        let location = header(&headers, "location").unwrap();
        for (name, value) in [
            ("response_type", "code"),
            ("client_id", "warden"),
            ("code_challenge_method", "S256"),
        ] {
            assert_eq!(query_value(&location, name), value, "{location}");
        }
        assert!(query_value(&location, "state").len() >= 22);
        assert!(query_value(&location, "nonce").len() >= 22);
        location
    }

    /// Through the provider (its sign-in form when it asks) to the callback URL it sends
    /// the browser to, without going there.
    fn through_provider(&mut self, provider: &Provider, authorization: &str) -> String {
        let mut url = authorization.to_string();
        for _ in 0..10 {
            let (status, headers, body) = self.get(&url);
            if status == 200 && body.contains("name=\"password\"") {
                self.provider_logins += 1;
                let marker = "action=\"";
                let start = body.find(marker).unwrap() + marker.len();
                let action = body[start..]
                    .split('"')
                    .next()
                    .unwrap()
                    .replace("&amp;", "&");
                let action = if action.starts_with('/') {
                    format!("{}{action}", provider.issuer)
                } else {
                    action
                };
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("prompt", "login")
                    .append_pair("login", "ada")
                    .append_pair("password", PASSWORD)
                    .finish();
                let (status, headers, body) =
                    browse(self.ca, Some(&self.jar), &["--data", &form], &action);
                assert_eq!(status, 303, "{headers}{body}");
                url = header(&headers, "location").unwrap();
            } else {
                assert!(matches!(status, 302 | 303), "{status} {headers}{body}");
                url = header(&headers, "location").unwrap();
            }
            if url.starts_with('/') {
                url = format!("{}{url}", provider.issuer);
            }
            if url.starts_with(&self.warden) {
                return url;
            }
        }
        panic!("the provider never sent the browser back");
    }
}

fn has_session_cookie(headers: &str) -> bool {
    set_cookies(headers)
        .iter()
        .any(|c| c.starts_with("warden_session=wdn_se_"))
}

#[test]
fn oidc_sign_in_through_a_real_provider_reaches_the_api_and_refuses_forged_callbacks() {
    let root = scratch("oidc");
    let data_dir = root.join("warden-data");
    // An administrator exists (sign-in is closed until one does), with a key.
    let key = admin_api_key(&data_dir);
    let (provider_cert, provider_key) = provider_certificate(&root);
    let warden_port = warden_tests::free_port();
    let warden = format!("https://127.0.0.1:{warden_port}");
    let callback = format!("{warden}/auth/oidc/corp/callback");
    let provider = start_provider(
        warden_tests::free_port(),
        &provider_cert,
        &provider_key,
        &callback,
    );
    let config = root.join("warden.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[auth.oidc]]
id = "corp"
name = "Corp Login"
issuer = "{issuer}"
client_id = "warden"
client_secret_env = "{SECRET_ENV}"
ca = "{ca}"
scopes = ["openid", "email", "profile", "groups"]
roles_claim = "groups"
roles = {{ "engineers" = "support" }}
"#,
            issuer = provider.issuer,
            ca = provider_cert.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // Without its client secret in the environment, the host refuses to start.
    let output = Command::new(warden_tests::warden_bin())
        .args(["serve", "--data-dir"])
        .arg(&data_dir)
        .args([
            "--listen",
            &format!("127.0.0.1:{warden_port}"),
            "--config",
            config,
        ])
        .env_remove(SECRET_ENV)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("oidc[0].client_secret_env") && stderr.contains(SECRET_ENV),
        "{stderr}"
    );

    let server = ServeProcess::start_on(
        &data_dir,
        warden_port,
        &["--config", config],
        &[(SECRET_ENV, CLIENT_SECRET)],
    );
    // One CA file for the browser: Warden's generated certificate and the provider's.
    let ca = root.join("browser-ca.pem");
    std::fs::write(
        &ca,
        std::fs::read_to_string(server.ca()).unwrap()
            + &std::fs::read_to_string(&provider_cert).unwrap(),
    )
    .unwrap();

    // An application registered with Warden's own authorization server.
    let (status, _, body) = browse(
        &ca,
        None,
        &[
            "-H",
            &format!("X-API-Key: {key}"),
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"name": "Front end", "redirect_uris": ["https://app.example/cb"]}"#,
        ],
        &server.url("/oauth_apps"),
    );
    assert_eq!(status, 201, "{body}");
    let app: serde_json::Value = serde_json::from_str(&body).unwrap();
    let app = app["id"].as_str().unwrap().to_string();
    let verifier = "oidc-test-verifier-0123456789abcdefghijklmnopqrstuvwxyz";
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
    };
    let authorize = format!(
        "/auth/oauth/authorize?response_type=code&client_id={app}\
         &redirect_uri=https%3A%2F%2Fapp.example%2Fcb&state=app-state\
         &code_challenge={challenge}&code_challenge_method=S256"
    );

    let mut browser = Browser {
        warden: warden.clone(),
        ca: &ca,
        jar: root.join("cookies"),
        provider_logins: 0,
    };
    let mut codes = Vec::new();

    // 1. The callback presented by another browser (no sign-in cookie) gets nothing, and
    //    the state it named is used up.
    let authorization = browser.start(&authorize);
    let stolen = browser.through_provider(&provider, &authorization);
    assert_eq!(
        browser.provider_logins, 1,
        "the provider asked for the password"
    );
    assert!(stolen.starts_with(&callback), "{stolen}");
    codes.push(query_value(&stolen, "code"));
    let (status, headers, page) = browse(&ca, None, &[], &stolen);
    assert_eq!(status, 400, "{headers}{page}");
    assert!(!has_session_cookie(&headers));
    assert!(page.contains("started in another browser"), "{page}");
    let (status, headers, _) = browser.get(&stolen);
    assert_eq!(status, 400);
    assert!(!has_session_cookie(&headers));

    // 2. A wrong state gets nothing; the right one, once, signs the browser in and
    //    continues into the authorization request.
    let authorization = browser.start(&authorize);
    let genuine = browser.through_provider(&provider, &authorization);
    codes.push(query_value(&genuine, "code"));
    let forged = with_query_value(&genuine, "state", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let (status, headers, _) = browser.get(&forged);
    assert_eq!(status, 400);
    assert!(!has_session_cookie(&headers));
    let (status, headers, body) = browser.get(&genuine);
    assert_eq!(status, 303, "{headers}{body}");
    assert!(has_session_cookie(&headers), "{headers}");
    let session_cookie = set_cookies(&headers)
        .into_iter()
        .find(|c| c.starts_with("warden_session="))
        .unwrap();
    assert!(session_cookie.contains("Path=/auth") && session_cookie.contains("HttpOnly"));
    let next = header(&headers, "location").unwrap();
    assert!(next.starts_with("/auth/oauth/authorize?"), "{next}");

    // 3. The same callback again (replayed from history or a log) gets nothing.
    let (status, headers, _) = browse(&ca, Some(&root.join("replay-jar")), &[], &genuine);
    assert_eq!(status, 400);
    assert!(!has_session_cookie(&headers));
    let (status, headers, _) = browser.get(&genuine);
    assert_eq!(status, 400);
    assert!(!has_session_cookie(&headers));

    // 4. The used code under a fresh, genuine state: the provider refuses to exchange it
    //    a second time, and nothing is issued.
    let mut second = Browser {
        warden: warden.clone(),
        ca: &ca,
        jar: root.join("second-jar"),
        provider_logins: 0,
    };
    let authorization = second.start(&authorize);
    let fresh = second.through_provider(&provider, &authorization);
    codes.push(query_value(&fresh, "code"));
    let reused = with_query_value(&fresh, "code", &query_value(&genuine, "code"));
    let (status, headers, page) = second.get(&reused);
    assert_eq!(status, 502, "{headers}{page}");
    assert!(!has_session_cookie(&headers));

    // 5. A code the provider issued to another application, under a genuine state: the
    //    provider will not exchange it for Warden, and nothing is issued.
    let authorization = second.start(&authorize);
    let other = with_query_value(&authorization, "client_id", "other-app");
    let misdirected = second.through_provider(&provider, &other);
    assert!(misdirected.starts_with(&callback), "{misdirected}");
    codes.push(query_value(&misdirected, "code"));
    let (status, headers, _) = second.get(&misdirected);
    assert_eq!(status, 502);
    assert!(!has_session_cookie(&headers));

    // 6. One client cannot fill the host with sign-ins in progress: after at most 64
    //    from its address, it is told to finish one first (429), and nothing more is kept.
    let mut started = 0;
    let refused = loop {
        let (status, _, page) = browse(&ca, None, &[], &format!("{warden}/auth/oidc/corp/login"));
        if status != 303 {
            break (status, page);
        }
        started += 1;
        assert!(
            started <= warden::auth::pending::MAX_PER_ADDRESS,
            "an address started more sign-ins than its share"
        );
    };
    assert_eq!(refused.0, 429, "{}", refused.1);
    assert!(refused.1.contains("Too many sign-ins"), "{}", refused.1);

    // The signed-in browser completes the application's authorization request.
    let (status, headers, body) = browser.get(&next);
    assert_eq!(status, 303, "{headers}{body}");
    let redirect = header(&headers, "location").unwrap();
    assert!(
        redirect.starts_with("https://app.example/cb?code=wdn_ac_"),
        "{redirect}"
    );
    let code = query_value(&redirect, "code");
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &code)
        .append_pair("redirect_uri", "https://app.example/cb")
        .append_pair("client_id", &app)
        .append_pair("code_verifier", verifier)
        .finish();
    let (status, _, body) = browse(
        &ca,
        None,
        &["--data", &form],
        &format!("{warden}/auth/oauth/token"),
    );
    assert_eq!(status, 200, "{body}");
    let tokens: serde_json::Value = serde_json::from_str(&body).unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let (status, _, body) = browse(
        &ca,
        None,
        &["-H", &format!("Authorization: Bearer {access}")],
        &server.url("/users/current"),
    );
    assert_eq!(status, 200, "{body}");
    let user: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(user["email"], "ada@idp.example", "{user}");
    assert_eq!(user["auth_source"], "corp", "{user}");
    assert_eq!(user["first_name"], "Ada", "{user}");
    assert_eq!(user["last_name"], "Lovelace", "{user}");
    assert!(
        user["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "support"),
        "{user}"
    );

    // Nothing secret of the flow is in Warden's output (its log ran at debug).
    let (_, lines) = server.terminate();
    let output = lines.join("\n");
    assert!(output.contains("OpenID Connect sign-in failed"), "{output}");
    let cookie_value = session_cookie
        .trim_start_matches("warden_session=")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let mut secrets = vec![
        PASSWORD.to_string(),
        CLIENT_SECRET.to_string(),
        access,
        code,
        cookie_value,
    ];
    secrets.extend(codes);
    for secret in &secrets {
        assert!(!output.contains(secret.as_str()), "{secret} is in the log");
    }
    // No JWT (an ID token) either.
    assert!(!output.contains("eyJ"), "a JWT is in the log");

    // Every refused callback is in the audit log, with its reason and no secret.
    let audit: Vec<(String, String)> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::sqlite::SqlitePool::connect(&format!(
            "sqlite://{}",
            data_dir.join("warden.db").display()
        ))
        .await
        .unwrap();
        let rows = sqlx::query_as("SELECT action, details FROM audit_log ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    });
    let failures: Vec<&String> = audit
        .iter()
        .filter(|(action, details)| {
            action == "user.sign_in_failed" && details.contains("\"source\":\"corp\"")
        })
        .map(|(_, details)| details)
        .collect();
    assert_eq!(failures.len(), 7, "{failures:#?}");
    assert!(
        failures.iter().any(|d| d.contains("invalid_grant")),
        "{failures:#?}"
    );
    for (_, details) in &audit {
        for secret in &secrets {
            assert!(
                !details.contains(secret.as_str()),
                "{secret} is in the audit log"
            );
        }
    }
    drop(provider);
    let _ = std::fs::remove_dir_all(root);
}
