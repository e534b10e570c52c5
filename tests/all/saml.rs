//! SAML2 single sign-on against a real identity provider: SimpleSAMLphp from Debian
//! (`scripts/setup` installs it), served by `php -S` on 127.0.0.1 from a configuration
//! this test writes, with a key and certificate the test makes with openssl. A browser is
//! curl with a cookie jar. Then the attacks, each refused without a session: a replayed,
//! an unsigned, a forged, an expired, a wrong-audience and a signature-wrapped response,
//! and one that answers another browser's request. Responses are edited and re-signed
//! with xmlsec1 (Debian's `xmlsec1`), with the IdP's own key where the test plays an IdP
//! that signs something wrong.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use warden_tests::browser::{browse, header};
use warden_tests::serve_process::{ServeProcess, admin_api_key, scratch};

use crate::store::TestDb;

const PASSWORD: &str = "a-very-secret-idp-password";
const SOURCE: &str = "corp";

/// `php -S` serving SimpleSAMLphp; killed when dropped.
struct Idp {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl_key_and_cert(dir: &Path, name: &str) {
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.crt")))
        .args(["-subj", &format!("/CN={name}")])
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/setup installs it)");
    assert!(status.success());
}

fn start_idp(root: &Path) -> Idp {
    let dir = root.join("idp");
    for sub in ["config", "metadata", "cert", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    openssl_key_and_cert(&dir.join("cert"), "idp");
    let port = warden_tests::free_port();
    let d = dir.display();
    std::fs::write(
        dir.join("config/config.php"),
        format!(
            "<?php\n$config = [\n\
             'baseurlpath' => 'http://127.0.0.1:{port}/',\n\
             'certdir' => '{d}/cert/',\n\
             'metadatadir' => '{d}/metadata/',\n\
             'tempdir' => '{d}/tmp',\n\
             'datadir' => '{d}/tmp/',\n\
             'loggingdir' => '{d}/tmp/',\n\
             'secretsalt' => 'warden-test-salt-{port}',\n\
             'auth.adminpassword' => 'unused-admin-password-{port}',\n\
             'technicalcontact_email' => 'test@example.org',\n\
             'timezone' => 'UTC',\n\
             'logging.handler' => 'stderr',\n\
             'logging.level' => SimpleSAML\\Logger::ERR,\n\
             'enable.saml20-idp' => true,\n\
             'module.enable' => ['exampleauth' => true, 'core' => true, 'saml' => true],\n\
             'store.type' => 'phpsession',\n\
             'session.cookie.secure' => false,\n\
             'session.phpsession.savepath' => '{d}/tmp',\n\
             'language.available' => ['en'],\n];\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("config/authsources.php"),
        format!(
            "<?php\n$config = [\n  'example-userpass' => [\n    'exampleauth:UserPass',\n\
             \x20   'alice:{PASSWORD}' => [\n\
             \x20     'email' => 'alice@example.org',\n\
             \x20     'givenName' => 'Alice',\n\
             \x20     'sn' => 'Liddell',\n\
             \x20     'groups' => ['staff', 'everyone'],\n    ],\n  ],\n];\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("metadata/saml20-idp-hosted.php"),
        "<?php\n$metadata['__DYNAMIC:1__'] = [\n  'host' => '__DEFAULT__',\n\
         \x20 'privatekey' => 'idp.key',\n  'certificate' => 'idp.crt',\n\
         \x20 'auth' => 'example-userpass',\n\
         \x20 'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',\n];\n",
    )
    .unwrap();
    std::fs::write(dir.join("metadata/saml20-sp-remote.php"), "<?php\n").unwrap();
    let child = Command::new("php")
        .args(["-S", &format!("127.0.0.1:{port}")])
        .current_dir("/usr/share/simplesamlphp/www")
        .env("SIMPLESAMLPHP_CONFIG_DIR", dir.join("config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("php (scripts/setup installs simplesamlphp)");
    let idp = Idp { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metadata = http(&idp.url("/saml2/idp/metadata.php"));
        if metadata.contains("IDPSSODescriptor") {
            std::fs::write(idp.dir.join("idp-metadata.xml"), metadata).unwrap();
            return idp;
        }
        assert!(Instant::now() < deadline, "SimpleSAMLphp did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Idp {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Tell the IdP about Warden's service provider (SimpleSAMLphp reads it per request).
    fn trust(&self, entity_id: &str, acs: &str) {
        std::fs::write(
            self.dir.join("metadata/saml20-sp-remote.php"),
            format!(
                "<?php\n$metadata['{entity_id}'] = [\n\
                 \x20 'AssertionConsumerService' => '{acs}',\n\
                 \x20 'saml20.sign.response' => false,\n\
                 \x20 'saml20.sign.assertion' => true,\n];\n"
            ),
        )
        .unwrap();
    }
}

fn http(url: &str) -> String {
    let output = Command::new("curl")
        .args(["--silent", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// A browser: curl with a cookie jar; answers (status, headers, body).
struct Browser {
    jar: PathBuf,
    ca: PathBuf,
}

impl Browser {
    fn new(root: &Path, name: &str, ca: &Path) -> Browser {
        Browser {
            jar: root.join(format!("{name}.jar")),
            ca: ca.to_path_buf(),
        }
    }

    fn go(&self, args: &[&str], url: &str) -> (u16, String, String) {
        browse(&self.ca, Some(&self.jar), args, url)
    }
}

fn html_unescape(text: &str) -> String {
    text.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// The value of the first `name="NAME" value="…"` input in `page`.
fn input(page: &str, name: &str) -> String {
    let start = page
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no {name} in {page}"));
    let rest = &page[start..];
    let value = rest.find("value=\"").unwrap() + "value=\"".len();
    html_unescape(rest[value..].split('"').next().unwrap())
}

struct Setup {
    root: PathBuf,
    idp: Idp,
    server: ServeProcess,
    key: String,
}

impl Setup {
    fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.server.port)
    }

    fn entity_id(&self) -> String {
        format!("{}/auth/saml/{SOURCE}/metadata", self.base())
    }

    fn acs(&self) -> String {
        format!("{}/auth/saml/{SOURCE}/acs", self.base())
    }

    fn browser(&self, name: &str) -> Browser {
        Browser::new(&self.root, name, &self.server.ca())
    }

    /// Start a sign-in at Warden (continuing to `next`), sign in at the IdP; the
    /// SAMLResponse the IdP's page would post to Warden's ACS.
    fn idp_response(&self, browser: &Browser, next: &str) -> String {
        let login = format!(
            "{}/auth/saml/{SOURCE}/login?continue={}",
            self.base(),
            form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        );
        let (status, headers, body) = browser.go(&[], &login);
        assert_eq!(status, 303, "{headers}{body}");
        let cookie = header(&headers, "set-cookie").unwrap();
        assert!(cookie.starts_with("warden_saml=wdn_sr_"), "{cookie}");
        for attribute in ["Path=/auth", "Secure", "HttpOnly", "SameSite=None"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        let location = header(&headers, "location").unwrap();
        assert!(
            location.starts_with(&self.idp.url("/saml2/idp/SSOService.php?SAMLRequest=")),
            "{location}"
        );
        // The IdP's login form.
        let (status, _, page) = browser.go(&["-L"], &location);
        assert_eq!(status, 200, "{page}");
        let auth_state = input(&page, "AuthState");
        let (status, _, page) = browser.go(
            &[
                "--data-urlencode",
                "username=alice",
                "--data-urlencode",
                &format!("password={PASSWORD}"),
                "--data-urlencode",
                &format!("AuthState={auth_state}"),
            ],
            &self.idp.url("/module.php/core/loginuserpass.php"),
        );
        assert_eq!(status, 200, "{page}");
        // The page that posts the answer to the ACS.
        assert!(page.contains(&self.acs()), "{page}");
        input(&page, "SAMLResponse")
    }

    /// Post `response` to the ACS as `browser`; (status, headers).
    fn post_acs(&self, browser: &Browser, response: &str) -> (u16, String) {
        let (status, headers, _) = browser.go(
            &["--data-urlencode", &format!("SAMLResponse={response}")],
            &self.acs(),
        );
        (status, headers)
    }
}

fn decode(response: &str) -> String {
    String::from_utf8(STANDARD.decode(response).unwrap()).unwrap()
}

fn encode(xml: &str) -> String {
    STANDARD.encode(xml)
}

/// `xml` with every `name="…"` attribute set to `value`.
fn set_attribute(xml: &str, name: &str, value: &str) -> String {
    let marker = format!(" {name}=\"");
    let mut out = String::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&marker) {
        let value_start = start + marker.len();
        out.push_str(&rest[..value_start]);
        out.push_str(value);
        let end = rest[value_start..].find('"').unwrap() + value_start;
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The text from the first `open` to the end of the first `close` after it.
fn element<'a>(xml: &'a str, open: &str, close: &str) -> &'a str {
    let start = xml
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in {xml}"));
    let end = xml[start..].find(close).unwrap() + start + close.len();
    &xml[start..end]
}

/// Re-sign the (only) signed assertion of `xml` with `key`/`cert` by xmlsec1.
fn resign(root: &Path, xml: &str, key: &Path, cert: &Path) -> String {
    let digest = element(xml, "<ds:DigestValue>", "</ds:DigestValue>");
    let signature = element(xml, "<ds:SignatureValue>", "</ds:SignatureValue>");
    let template = xml
        .replace(digest, "<ds:DigestValue></ds:DigestValue>")
        .replace(signature, "<ds:SignatureValue></ds:SignatureValue>");
    let input = root.join(format!("template-{}.xml", fastrand::u64(..)));
    std::fs::write(&input, template).unwrap();
    let output = Command::new("xmlsec1")
        .arg("--sign")
        .arg("--privkey-pem")
        .arg(format!("{},{}", key.display(), cert.display()))
        .args([
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
        ])
        .arg(&input)
        .output()
        .expect("xmlsec1 (scripts/setup installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn refused(setup: &Setup, browser: &Browser, response: &str, what: &str) {
    let (status, headers) = setup.post_acs(browser, response);
    assert_eq!(status, 403, "{what}: {headers}");
    assert!(
        !headers.contains("warden_session=wdn_se_"),
        "{what} gave a session: {headers}"
    );
}

fn start() -> Setup {
    let root = scratch("saml");
    let data_dir = root.join("warden-data");
    let idp = start_idp(&root);
    let key = admin_api_key(&data_dir);
    let config = root.join("warden.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.saml]]\nid = \"{SOURCE}\"\nname = \"Corp IdP\"\nidp_metadata = \"{}\"\n\
             roles = {{ staff = \"support\" }}\n",
            idp.dir.join("idp-metadata.xml").display()
        ),
    )
    .unwrap();
    let server = ServeProcess::start(&data_dir, &["--config", config.to_str().unwrap()]);
    let setup = Setup {
        root,
        idp,
        server,
        key,
    };
    setup.idp.trust(&setup.entity_id(), &setup.acs());
    setup
}

#[test]
fn saml_sign_in_through_simplesamlphp_and_attacks_refused() {
    let setup = start();
    let base = setup.base();
    let ca = setup.server.ca();

    // The SP's metadata, at its stable URL.
    let browser = setup.browser("alice");
    let (status, _, metadata) = browser.go(&[], &setup.entity_id());
    assert_eq!(status, 200);
    assert!(metadata.contains(&format!("entityID=\"{}\"", setup.entity_id())));
    assert!(metadata.contains(&format!("Location=\"{}\"", setup.acs())));

    // An application of this host, for Warden's own code + PKCE flow.
    let output = Command::new("curl")
        .args(["--silent", "--cacert"])
        .arg(&ca)
        .args(["-H", &format!("X-API-Key: {}", setup.key)])
        .args(["-H", "content-type: application/json", "--data"])
        .arg(r#"{"name": "Front end", "redirect_uris": ["https://app.example/cb"]}"#)
        .arg(setup.server.url("/oauth_apps"))
        .output()
        .unwrap();
    let client: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let client = client["id"].as_str().unwrap().to_string();
    let verifier = "0123456789abcdefghijklmnopqrstuvwxyz-._~ABCDEFGHIJ";
    let challenge = {
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
    };
    let authorize = format!(
        "/auth/oauth/authorize?response_type=code&client_id={client}&redirect_uri=https%3A%2F%2Fapp.example%2Fcb\
         &state=s1&code_challenge={challenge}&code_challenge_method=S256"
    );

    // The authorization request sends the browser to the sign-in page, which offers the
    // identity provider.
    let (status, headers, _) = browser.go(&[], &format!("{base}{authorize}"));
    assert_eq!(status, 303, "{headers}");
    let login = header(&headers, "location").unwrap();
    let (status, _, page) = browser.go(&[], &format!("{base}{login}"));
    assert_eq!(status, 200);
    assert!(page.contains("Sign in with Corp IdP"), "{page}");
    let link = html_unescape(element(&page, "/auth/saml/", "\"").trim_end_matches('"'));
    let next = link
        .split_once("continue=")
        .map(|(_, n)| {
            form_urlencoded::parse(format!("n={n}").as_bytes())
                .next()
                .unwrap()
                .1
                .to_string()
        })
        .unwrap();
    assert_eq!(next, authorize);

    // SP login → IdP → ACS → session → authorization code → token → the user.
    let response = setup.idp_response(&browser, &next);
    let assertion_xml = decode(&response);
    let (status, headers) = setup.post_acs(&browser, &response);
    assert_eq!(status, 303, "{headers}");
    assert_eq!(header(&headers, "location").unwrap(), authorize);
    assert!(headers.contains("warden_session=wdn_se_"), "{headers}");
    let (status, headers, _) = browser.go(&[], &format!("{base}{authorize}"));
    assert_eq!(status, 303);
    let location = header(&headers, "location").unwrap();
    let code = location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap_or_else(|| panic!("no code in {location}"))
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
        .arg(format!("{base}/auth/oauth/token"))
        .output()
        .unwrap();
    let tokens: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let output = Command::new("curl")
        .args(["--silent", "--cacert"])
        .arg(&ca)
        .args(["-H", &format!("Authorization: Bearer {access}")])
        .arg(setup.server.url("/users/current"))
        .output()
        .unwrap();
    let user: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(user["email"], "alice@example.org", "{user}");
    assert_eq!(user["auth_source"], SOURCE, "{user}");
    assert_eq!(user["first_name"], "Alice", "{user}");
    assert_eq!(user["last_name"], "Liddell", "{user}");
    assert_eq!(user["roles"], serde_json::json!(["support"]), "{user}");

    // Replayed: the same response again, from the same browser.
    refused(&setup, &browser, &response, "a replayed response");

    let idp_key = setup.idp.dir.join("cert/idp.key");
    let idp_cert = setup.idp.dir.join("cert/idp.crt");
    let fresh = |name: &str| {
        let browser = setup.browser(name);
        let response = setup.idp_response(&browser, &authorize);
        (browser, decode(&response))
    };

    // The control for re-signing: an untouched response re-signed with the IdP's key is
    // taken, so the refusals below are the checks' doing, not the tool's.
    let (b, xml) = fresh("control");
    let (status, headers) =
        setup.post_acs(&b, &encode(&resign(&setup.root, &xml, &idp_key, &idp_cert)));
    assert_eq!(status, 303, "a re-signed genuine response: {headers}");

    // Unsigned: the signature removed.
    let (b, xml) = fresh("unsigned");
    let unsigned = xml.replace(element(&xml, "<ds:Signature", "</ds:Signature>"), "");
    refused(&setup, &b, &encode(&unsigned), "an unsigned response");

    // Forged: another identity, signed by a key the IdP never had.
    openssl_key_and_cert(&setup.root, "mallory");
    let (b, xml) = fresh("forged");
    let forged = xml.replace("alice@example.org", "mallory@example.org");
    let forged = resign(
        &setup.root,
        &forged,
        &setup.root.join("mallory.key"),
        &setup.root.join("mallory.crt"),
    );
    refused(&setup, &b, &encode(&forged), "a forged response");

    // Expired: the validity window in the past, signed by the IdP's own key.
    let (b, xml) = fresh("expired");
    let expired = set_attribute(&xml, "NotOnOrAfter", "2020-01-01T00:05:00Z");
    let expired = set_attribute(&expired, "NotBefore", "2020-01-01T00:00:00Z");
    let expired = set_attribute(&expired, "IssueInstant", "2020-01-01T00:00:00Z");
    let expired = set_attribute(&expired, "AuthnInstant", "2020-01-01T00:00:00Z");
    let expired = resign(&setup.root, &expired, &idp_key, &idp_cert);
    refused(&setup, &b, &encode(&expired), "an expired response");

    // SHA-1, signed by the IdP's own key.
    let (b, xml) = fresh("sha1");
    let sha1 = xml
        .replace(
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        )
        .replace(
            "http://www.w3.org/2001/04/xmlenc#sha256",
            "http://www.w3.org/2000/09/xmldsig#sha1",
        );
    assert_ne!(sha1, xml);
    let sha1 = resign(&setup.root, &sha1, &idp_key, &idp_cert);
    assert!(sha1.contains("xmldsig#rsa-sha1"));
    refused(&setup, &b, &encode(&sha1), "a response signed with SHA-1");

    // Wrong audience, signed by the IdP's own key.
    let (b, xml) = fresh("audience");
    let audience = xml.replace(
        &format!(">{}<", setup.entity_id()),
        ">https://other-sp.example/metadata<",
    );
    assert_ne!(audience, xml);
    let audience = resign(&setup.root, &audience, &idp_key, &idp_cert);
    refused(&setup, &b, &encode(&audience), "a wrong-audience response");

    // Signature wrapping: an unsigned forged assertion where the signed one was, the
    // signed one moved inside it (XSW) or beside it.
    let (b, xml) = fresh("wrapped");
    let signed = element(&xml, "<saml:Assertion", "</saml:Assertion>").to_string();
    let evil = signed
        .replace(element(&signed, "<ds:Signature", "</ds:Signature>"), "")
        .replace("alice@example.org", "mallory@example.org");
    let evil = set_attribute(&evil, "ID", "_evil0123456789abcdef");
    let nested = evil.replacen("</saml:Issuer>", &format!("</saml:Issuer>{signed}"), 1);
    refused(
        &setup,
        &b,
        &encode(&xml.replace(&signed, &nested)),
        "a wrapped response",
    );
    let (b, xml) = fresh("wrapped2");
    let signed = element(&xml, "<saml:Assertion", "</saml:Assertion>").to_string();
    let evil = signed
        .replace(element(&signed, "<ds:Signature", "</ds:Signature>"), "")
        .replace("alice@example.org", "mallory@example.org");
    let evil = set_attribute(&evil, "ID", "_evil0123456789abcdef");
    refused(
        &setup,
        &b,
        &encode(&xml.replace(&signed, &format!("{evil}{signed}"))),
        "a response with a forged assertion beside the signed one",
    );

    // Another browser's request: browser A starts signing in; B's answer posted from A.
    let a = setup.browser("a");
    let (status, _, _) = a.go(
        &[],
        &format!("{base}/auth/saml/{SOURCE}/login?continue=%2F"),
    );
    assert_eq!(status, 303);
    let b = setup.browser("b");
    let response_b = setup.idp_response(&b, &authorize);
    refused(&setup, &a, &response_b, "another browser's response");
    // Posted by the browser that asked for it, the same answer is taken.
    let (status, headers) = setup.post_acs(&b, &response_b);
    assert_eq!(status, 303, "{headers}");

    // Nobody signed in as mallory.
    let output = Command::new("curl")
        .args(["--silent", "--cacert"])
        .arg(&ca)
        .args(["-H", &format!("X-API-Key: {}", setup.key)])
        .arg(setup.server.url("/users?q=mallory"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("mallory@"), "{text}");

    // The IdP password, the response and the assertion never reached Warden's output.
    let signature_value = element(
        &assertion_xml,
        "<ds:SignatureValue>",
        "</ds:SignatureValue>",
    )
    .trim_start_matches("<ds:SignatureValue>")
    .trim_end_matches("</ds:SignatureValue>")
    .to_string();
    let assertion_id = element(&assertion_xml, "<saml:Assertion", ">");
    let Setup { server, root, .. } = setup;
    let (_, lines) = server.terminate();
    let output = lines.join("\n");
    assert!(
        output.contains("SAML sign-in refused"),
        "refusals are logged"
    );
    for secret in [
        PASSWORD,
        response.as_str(),
        &response[..40],
        signature_value.as_str(),
        access.as_str(),
    ] {
        assert!(!output.contains(secret), "a secret in Warden's output");
    }
    assert!(
        !output.contains(assertion_id),
        "an assertion in Warden's output"
    );
    let _ = std::fs::remove_dir_all(root);
}

on_both_backends!(the_replay_cache_refuses_a_consumed_assertion_until_it_expires);

/// The replay cache in the store: an assertion id is consumed once per source, shared by
/// every host on the database, and forgotten only after it expired.
async fn the_replay_cache_refuses_a_consumed_assertion_until_it_expires(db: TestDb) {
    let store = db.store().await;
    let now = 1_900_000_000_000;
    let until = now + 5 * 60_000;
    assert!(
        store
            .consume_saml_assertion("corp", "_a1", until, now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .consume_saml_assertion("corp", "_a1", until, now + 1)
            .await
            .unwrap()
    );
    // Another host on the same database refuses it too.
    let other = db.store().await;
    assert!(
        !other
            .consume_saml_assertion("corp", "_a1", until, now + 2)
            .await
            .unwrap()
    );
    // Ids are per source.
    assert!(
        other
            .consume_saml_assertion("other", "_a1", until, now)
            .await
            .unwrap()
    );
    // Pruning keeps it while it could still be presented, and a day beyond.
    store.prune_sign_in(until).await.unwrap();
    assert!(
        !store
            .consume_saml_assertion("corp", "_a1", until, until)
            .await
            .unwrap()
    );
    let later = until + 24 * 60 * 60_000 + 1;
    store.prune_sign_in(later).await.unwrap();
    assert!(
        store
            .consume_saml_assertion("corp", "_a1", later + 60_000, later)
            .await
            .unwrap()
    );
}
