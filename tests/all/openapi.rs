//! The OpenAPI document, checked against the running server by schemathesis (PyPI,
//! installed by scripts/setup): it generates requests for every operation from the
//! document — valid ones, invalid ones, sequences that create and then use resources —
//! and checks each response: no 5xx, only documented statuses, content types and
//! headers, bodies that match their schemas, invalid input refused, deleted resources
//! gone, methods the route lacks refused with `Allow`, and every protected operation
//! refusing a request without a credential or with a wrong one.

use std::process::Command;

use warden_tests::serve_process::{ServeProcess, admin_api_key, scratch};

/// What the test asks schemathesis to check: everything but `positive_data_acceptance`,
/// which expects every schema-valid request to succeed, while a request naming a zone,
/// driver or module that does not exist is refused (404) however well-formed it is.
const CHECKS: &str = "all";
const EXCLUDED_CHECKS: &str = "positive_data_acceptance";

#[test]
fn schemathesis_finds_the_api_true_to_its_document() {
    let root = scratch("openapi");
    let data_dir = root.join("warden-data");
    let key = admin_api_key(&data_dir);
    let server = ServeProcess::start(&data_dir, &[]);

    // The document is public, and it is OpenAPI 3.1.
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--cacert"])
        .arg(server.ca())
        .arg(server.url("/openapi.json"))
        .output()
        .expect("curl (scripts/setup installs it)");
    assert!(output.status.success(), "{output:?}");
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["paths"]["/api/engine/v2/systems/{id}/{module_slug}/{method}"].is_object());

    let hooks = warden_tests::repo_root().join("tests/clients/schemathesis");
    let schemathesis = warden_tests::python().with_file_name("schemathesis");
    let output = Command::new(&schemathesis)
        .arg("run")
        .arg(server.url("/openapi.json"))
        .arg("--tls-verify")
        .arg(server.ca())
        .args(["--header", &format!("X-API-Key: {key}")])
        .args(["--checks", CHECKS, "--exclude-checks", EXCLUDED_CHECKS])
        // Repeatable: the same seed generates the same cases.
        .args([
            "--max-examples",
            "25",
            "--seed",
            "20261204",
            "--workers",
            "2",
        ])
        .args(["--request-timeout", "30"])
        .env("PYTHONPATH", &hooks)
        .env("SCHEMATHESIS_HOOKS", "warden_hooks")
        .env("NO_COLOR", "1")
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} (scripts/setup installs it): {e}",
                schemathesis.display()
            )
        });
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // It did test every operation (but the document itself, which it reads as the
    // specification), through every phase.
    let operations = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum::<usize>();
    assert!(
        report.contains(&format!("Tested: {}", operations - 1)),
        "not every one of {operations} operations was tested:\n{report}"
    );
    for phase in ["Coverage", "Fuzzing", "Stateful"] {
        assert!(
            report.contains(&format!("✅ {phase}")),
            "{phase}:\n{report}"
        );
    }

    // Nothing it sent took the host down or locked the administrator out.
    let output = Command::new("curl")
        .args(["--silent", "--fail", "--cacert"])
        .arg(server.ca())
        .args(["--header", &format!("X-API-Key: {key}")])
        .arg(server.url("/users/current"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let (status, _) = server.terminate();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(root);
}
