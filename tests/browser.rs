//! curl as a browser, for the tests that sign in through pages: a cookie jar, the
//! certificate to trust, and the status, headers and body of each answer.

use std::path::Path;
use std::process::Command;

/// Fetch `url` with curl and `args`, trusting `ca`, keeping cookies in `jar` (or none),
/// following redirects only if `args` says `-L`: the status, the last response's headers,
/// and the body.
pub fn browse(ca: &Path, jar: Option<&Path>, args: &[&str], url: &str) -> (u16, String, String) {
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--cacert"])
        .arg(ca);
    if let Some(jar) = jar {
        command
            .arg("--cookie-jar")
            .arg(jar)
            .arg("--cookie")
            .arg(jar);
    }
    let output = command
        .args(["--dump-header", "-", "--write-out", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl (scripts/setup installs it)");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (rest, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    // With -L several header blocks precede the body: keep the last.
    let mut headers = String::new();
    let mut body = rest;
    while body.starts_with("HTTP/") {
        let (head, tail) = body.split_once("\r\n\r\n").unwrap_or((body, ""));
        headers = head.to_string();
        body = tail;
    }
    (code.trim().parse().unwrap_or(0), headers, body.to_string())
}

/// The value of header `name` in `headers`, if it is there.
pub fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}
