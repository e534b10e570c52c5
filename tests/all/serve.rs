//! `warden serve` as a real process, checked from outside with clients others wrote:
//! OpenSSL's `s_client` probes which protocol versions, cipher suites and key-exchange
//! groups the server accepts; curl verifies the generated certificate and talks to the
//! API. Then SIGTERM stops it cleanly, and a restart keeps the certificate and the data.

use std::path::Path;
use std::process::{Command, Stdio};

use std::time::Duration;
use warden_tests::browser;
use warden_tests::serve_process::{ServeProcess, scratch};

/// Whether `openssl s_client` with `args` completes a handshake.
fn handshake(port: u16, args: &[&str]) -> bool {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (scripts/setup installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    // A completed handshake names its cipher; a refused one says `Cipher is (NONE)`.
    text.contains("Cipher is ") && !text.contains("Cipher is (NONE)")
}

fn curl(server: &ServeProcess, ca: &Path, args: &[&str], path: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--cacert"])
        .arg(ca)
        .args(["--write-out", "\n%{http_code}"])
        .args(args)
        .arg(server.url(path))
        .output()
        .expect("curl (scripts/setup installs it)");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn serve_offers_only_the_tls_policy_and_stops_cleanly() {
    let root = scratch("serve");
    let data_dir = root.join("warden-data");
    let server = ServeProcess::start(&data_dir, &["--danger-no-auth"]);
    let port = server.port;

    // Offered: TLS 1.3 (AES-GCM), TLS 1.2 (ECDHE + AES-GCM), X25519, P-256, P-384.
    for accepted in [
        &["-tls1_3"][..],
        &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
        &["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
        &["-tls1_3", "-groups", "X25519"],
        &["-tls1_3", "-groups", "P-256"],
        &["-tls1_3", "-groups", "P-384"],
    ] {
        assert!(handshake(port, accepted), "refused {accepted:?}");
    }
    // Refused: older protocols, CBC, ChaCha20, static RSA key exchange, other groups.
    for refused in [
        &["-tls1_1"][..],
        &["-tls1"],
        &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA"],
        &["-tls1_2", "-cipher", "AES128-GCM-SHA256"],
        &["-tls1_3", "-groups", "X448"],
        &["-tls1_3", "-groups", "ffdhe2048"],
        &["-tls1_3", "-groups", "P-521"],
    ] {
        assert!(!handshake(port, refused), "accepted {refused:?}");
    }

    // The printed fingerprint is the certificate's; curl verifies the certificate itself.
    let ca = data_dir.join("tls/self-signed.crt");
    let openssl = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&ca)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&openssl.stdout);
    assert_eq!(
        printed.trim().trim_start_matches("sha256 Fingerprint="),
        server.fingerprint
    );
    let (status, body) = curl(
        &server,
        &ca,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"name":"Campus"}"#,
        ],
        "/zones",
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = curl(&server, &ca, &["--include"], "/zones");
    assert_eq!(status, 200);
    assert!(
        body.contains("strict-transport-security: max-age=31536000"),
        "{body}"
    );
    assert!(body.contains("x-total-count: 1"), "{body}");
    assert!(body.contains("\"name\":\"Campus\""), "{body}");
    // There is no plain-HTTP listener.
    let plain = Command::new("curl")
        .args(["--silent", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/api/engine/v2/zones"))
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plain HTTP answered");

    let (status, lines) = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(lines.iter().any(|l| l == "warden: stopped"), "{lines:?}");

    // A restart keeps the certificate and the building.
    let again = ServeProcess::start(&data_dir, &["--danger-no-auth"]);
    assert_eq!(
        again.fingerprint,
        printed.trim().trim_start_matches("sha256 Fingerprint=")
    );
    let (status, body) = curl(&again, &ca, &[], "/zones?q=camp");
    assert_eq!(status, 200);
    assert!(body.contains("Campus"), "{body}");
    let (status, _) = again.terminate();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn without_sign_in_every_request_is_refused() {
    let root = scratch("serve");
    let data_dir = root.join("warden-data");
    let server = ServeProcess::start(&data_dir, &[]);
    let ca = data_dir.join("tls/self-signed.crt");
    let (status, body) = curl(&server, &ca, &[], "/zones");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"unauthenticated\""), "{body}");
    let (status, _) = server.terminate();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn a_bad_configuration_is_refused_with_the_key_named() {
    let root = scratch("serve");
    let config = root.join("warden.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\n[tls]\ncertficate = \"x.pem\"\n",
    )
    .unwrap();
    let output = Command::new(warden_tests::warden_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(root.join("data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("certficate"), "{stderr}");
    let _ = std::fs::remove_dir_all(root);
}

/// sslyze (PyPI), a TLS scanner written by others, sees exactly the policy: no SSL, no TLS
/// 1.0 or 1.1, ECDHE with AES-GCM on TLS 1.2, AES-GCM on TLS 1.3, X25519, P-256, P-384.
#[test]
fn sslyze_sees_only_the_tls_policy() {
    let root = scratch("serve");
    let data_dir = root.join("warden-data");
    let server = ServeProcess::start(&data_dir, &[]);
    let report = root.join("sslyze.json");
    let scan = Command::new(warden_tests::python())
        .args(["-m", "sslyze", &format!("127.0.0.1:{}", server.port)])
        .args([
            "--sslv2",
            "--sslv3",
            "--tlsv1",
            "--tlsv1_1",
            "--tlsv1_2",
            "--tlsv1_3",
            "--elliptic_curves",
        ])
        .arg(format!("--json_out={}", report.display()))
        .output()
        .expect("sslyze (scripts/setup installs it)");
    assert!(
        scan.status.success(),
        "{}",
        String::from_utf8_lossy(&scan.stdout)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let result = &report["server_scan_results"][0];
    assert_eq!(result["scan_status"], "COMPLETED", "{result}");
    let scans = &result["scan_result"];
    let accepted = |scan: &str| -> Vec<String> {
        let mut names: Vec<String> = scans[scan]["result"]["accepted_cipher_suites"]
            .as_array()
            .unwrap_or_else(|| panic!("{scan}: {}", scans[scan]))
            .iter()
            .map(|suite| suite["cipher_suite"]["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    for refused in [
        "ssl_2_0_cipher_suites",
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ] {
        assert!(
            accepted(refused).is_empty(),
            "{refused}: {:?}",
            accepted(refused)
        );
    }
    assert_eq!(
        accepted("tls_1_2_cipher_suites"),
        [
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        ]
    );
    assert_eq!(
        accepted("tls_1_3_cipher_suites"),
        ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"]
    );
    let mut curves: Vec<&str> = scans["elliptic_curves"]["result"]["supported_curves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|curve| curve["name"].as_str().unwrap())
        .collect();
    curves.sort();
    assert_eq!(curves, ["X25519", "secp256r1", "secp384r1"]);
    let (status, _) = server.terminate();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(root);
}

/// curl as a browser: a cookie jar, no redirects followed; the status, the headers and
/// the body.
fn browse(
    server: &ServeProcess,
    ca: &Path,
    jar: &Path,
    args: &[&str],
    path: &str,
) -> (u16, String, String) {
    browser::browse(
        ca,
        Some(jar),
        args,
        &format!("https://127.0.0.1:{}{path}", server.port),
    )
}

fn header_value(headers: &str, name: &str) -> String {
    browser::header(headers, name).unwrap_or_else(|| panic!("no {name} in {headers}"))
}

fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a form") + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

#[test]
fn a_new_installation_is_set_up_and_signed_into_over_https() {
    let root = scratch("serve");
    let data_dir = root.join("warden-data");
    let server = ServeProcess::start(&data_dir, &[]);
    let ca = data_dir.join("tls/self-signed.crt");
    let jar = root.join("cookies");
    // The host printed the one-time setup token after it started listening.
    let mut printed = Vec::new();
    let token = loop {
        let line = server.lines.recv_timeout(Duration::from_secs(30)).unwrap();
        printed.push(line.clone());
        if let Some(token) = line.trim().strip_prefix("wdn_su_") {
            break format!("wdn_su_{token}");
        }
    };
    // Nothing works before an administrator exists, not even with a key.
    let (status, _) = curl(&server, &ca, &["-H", "X-API-Key: wdn_ak_x"], "/zones");
    assert_eq!(status, 401);

    // The setup page creates the administrator and signs the browser in.
    let (status, _, page) = browse(&server, &ca, &jar, &[], "/auth/setup");
    assert_eq!(status, 200, "{page}");
    let password = "a long and unguessable passphrase";
    let form = format!(
        "csrf={}&setup_token={token}&email=first%40example.org&first_name=Ada&password={}",
        csrf_of(&page),
        password.replace(' ', "+")
    );
    let (status, headers, body) = browse(&server, &ca, &jar, &["--data", &form], "/auth/setup");
    assert_eq!(status, 303, "{headers}{body}");
    assert!(header_value(&headers, "set-cookie").contains("Secure; HttpOnly"));

    // The operator's first credential, from the CLI beside the running host.
    let output = Command::new(warden_tests::warden_bin())
        .args([
            "api-key",
            "create",
            "--user",
            "first@example.org",
            "--name",
            "bootstrap",
            "--data-dir",
        ])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let (status, body) = curl(
        &server,
        &ca,
        &[
            "-H",
            &format!("X-API-Key: {key}"),
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"name": "Front end", "redirect_uris": ["https://app.example/cb"]}"#,
        ],
        "/oauth_apps",
    );
    assert_eq!(status, 201, "{body}");
    let client: serde_json::Value = serde_json::from_str(&body).unwrap();
    let client = client["id"].as_str().unwrap().to_string();

    // The code flow with PKCE, as a browser and a client do it.
    let verifier = "0123456789abcdefghijklmnopqrstuvwxyz-._~ABCDEFGHIJ";
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
    };
    let authorize = format!(
        "/auth/oauth/authorize?response_type=code&client_id={client}&redirect_uri=https%3A%2F%2Fapp.example%2Fcb\
         &state=s1&code_challenge={challenge}&code_challenge_method=S256"
    );
    let (status, headers, _) = browse(&server, &ca, &jar, &[], &authorize);
    assert_eq!(status, 303);
    let location = header_value(&headers, "location");
    assert!(
        location.starts_with("https://app.example/cb?code=wdn_ac_"),
        "{location}"
    );
    let code: String = location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap()
        .to_string();
    let output = Command::new("curl")
        .args(["--silent", "--cacert"])
        .arg(&ca)
        .args([
            "--data-urlencode",
            "grant_type=authorization_code",
            "--data-urlencode",
            &format!("code={code}"),
            "--data-urlencode",
            "redirect_uri=https://app.example/cb",
            "--data-urlencode",
            &format!("client_id={client}"),
            "--data-urlencode",
            &format!("code_verifier={verifier}"),
        ])
        .arg(format!(
            "https://127.0.0.1:{}/auth/oauth/token",
            server.port
        ))
        .output()
        .unwrap();
    let tokens: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let (status, body) = curl(
        &server,
        &ca,
        &["-H", &format!("Authorization: Bearer {access}")],
        "/users/current",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("first@example.org"));

    // Not one secret reached the host's output, however talkative its log.
    let (status, rest) = server.terminate();
    assert!(status.success());
    printed.extend(rest);
    let output = printed.join("\n");
    for secret in [
        password,
        key.as_str(),
        access.as_str(),
        refresh.as_str(),
        code.as_str(),
        verifier,
    ] {
        assert!(!output.contains(secret), "a secret in the host's output");
    }
    // The setup token is the one secret it prints, and only on stdout, once.
    assert_eq!(output.matches(&token).count(), 1);
    let _ = std::fs::remove_dir_all(root);
}
