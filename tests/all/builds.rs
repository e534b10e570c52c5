//! The driver supply chain end to end, with real git and cargo: a git repository holding
//! this project's own sources; the host's build queue building `drivers/pjlink` at a
//! commit and registering it with its source; the component's embedded commit shown in
//! the review and by `warden driver inspect --expect-commit`; `warden driver verify`
//! rebuilding in another directory and matching the host's digest byte for byte (and
//! refusing a tampered copy); "update available" after a newer commit; a build script
//! that cannot reach the host's files or network; a commit that does not compile failing
//! with the compiler's message kept; bad requests refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use warden::control::{Control, ControlConfig, ControlError};
use warden::runtime::{Runtime, RuntimeConfig};
use warden::store::{Actor, Approval, BuildJob, BuildState, NewRepository, Store, StoreError};

use warden_tests::serve_process::scratch;

use crate::store::TestDb;

fn admin() -> Actor {
    Actor("user-admin".to_string())
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Warden Test",
            "-c",
            "user.email=test@warden.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A git repository (branch `main`) whose first commit is this project's source tree as
/// it is on disk (tracked and new files, nothing ignored), so the build sees exactly the
/// SDK and drivers under test.
fn source_repository(dir: &Path) -> String {
    let root = warden_tests::repo_root();
    let listed = Command::new("git")
        .current_dir(&root)
        .args(["ls-files", "-co", "--exclude-standard", "-z"])
        .output()
        .expect("git ls-files");
    assert!(
        listed.status.success(),
        "the project must be a git checkout"
    );
    for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).unwrap();
        let from = root.join(name);
        if !from.is_file() {
            continue; // deleted but not yet committed
        }
        let to = dir.join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
    git(dir, &["init", "--quiet", "--initial-branch=main", "."]);
    git(dir, &["add", "--all"]);
    git(
        dir,
        &["commit", "--quiet", "-m", "the project as under test"],
    );
    git(dir, &["rev-parse", "HEAD"])
}

fn commit_file(dir: &Path, path: &str, text: &str, message: &str) -> String {
    std::fs::write(dir.join(path), text).unwrap();
    git(dir, &["add", path]);
    git(dir, &["commit", "--quiet", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

async fn finished(store: &Store, id: &str) -> BuildJob {
    // A cold build of a driver and its crates takes tens of seconds on two cores.
    for _ in 0..1200 {
        let job = store.build(id).await.unwrap();
        if matches!(job.state, BuildState::Succeeded | BuildState::Failed) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("build {id} did not finish in 5 minutes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_are_built_reproducibly_from_a_commit_and_verified() {
    let source = scratch("source");
    let first = source_repository(&source);

    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let host_dir = scratch("host-builds");
    let config = ControlConfig {
        build_dir: Some(host_dir.clone()),
        ..ControlConfig::default()
    };
    let control = Control::new(
        store.clone(),
        Runtime::new(RuntimeConfig::new(warden_tests::cache_dir())).unwrap(),
        config,
    );
    let repository = store
        .create_repository(
            &admin(),
            &NewRepository {
                name: "warden".into(),
                url: source.display().to_string(),
                branch: Some("main".into()),
                credentials: None,
            },
        )
        .await
        .unwrap();

    // Requests that name no exact, contained source are refused before anything runs.
    for (commit, path, field) in [
        ("main", "drivers/pjlink", "commit"),
        ("0123456", "drivers/pjlink", "commit"),
        (first.as_str(), "../pjlink", "path"),
        (first.as_str(), "/etc", "path"),
    ] {
        match control
            .request_build(&admin(), &repository.id, commit, path)
            .await
        {
            Err(ControlError::Store(StoreError::Invalid { field: named, .. })) => {
                assert_eq!(named, field, "{commit} {path}")
            }
            other => panic!("{commit} {path}: {other:?}"),
        }
    }

    // The host builds the driver in the background and registers it, pending review.
    let job = control
        .request_build(&admin(), &repository.id, &first, "drivers/pjlink")
        .await
        .unwrap();
    assert_eq!(job.state, BuildState::Queued);
    let job = finished(&store, &job.id).await;
    assert_eq!(
        job.state,
        BuildState::Succeeded,
        "{:?}\n{}",
        job.error,
        job.output
    );
    let record = job.record.clone().unwrap();
    assert_eq!(record["commit"], first.as_str());
    assert_eq!(record["path"], "drivers/pjlink");
    assert_eq!(record["package"], "pjlink");
    assert!(
        record["toolchain"]
            .as_str()
            .unwrap()
            .starts_with("rustc 1.")
    );
    assert!(job.output.contains("Compiling pjlink"), "{}", job.output);
    let digest = record["digest"].as_str().unwrap().to_string();
    let driver = store
        .driver(job.driver_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(driver.digest, digest);
    assert_eq!(driver.approval, Approval::Pending);
    assert_eq!(driver.source_commit.as_deref(), Some(first.as_str()));
    assert_eq!(
        driver.repository_id.as_deref(),
        Some(repository.id.as_str())
    );
    assert_eq!(driver.package_path.as_deref(), Some("drivers/pjlink"));
    assert_eq!(driver.build_id.as_deref(), Some(job.id.as_str()));
    // The build's working directory is gone.
    let left: Vec<_> = std::fs::read_dir(host_dir.join("work")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    // The reviewer's page: the component names the commit it was registered with, and the
    // PJLink password is marked secret.
    let review = control.review(&driver.id).await.unwrap();
    assert_eq!(
        review.source.embedded_commit.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(review.source.commit_matches, Some(true));
    assert!(
        review.secret_settings.contains(&"password".to_string()),
        "{:?}",
        review.secret_settings
    );
    assert!(!review.approval.attestation_verified);

    // Nothing newer yet; then a commit lands on main.
    let updates = control.driver_updates(&driver.id).await.unwrap();
    assert!(!updates.update_available, "{updates:?}");
    let second = commit_file(&source, "NOTES.txt", "later work\n", "a later commit");
    let updates = control.driver_updates(&driver.id).await.unwrap();
    assert!(updates.update_available);
    assert_eq!(updates.newer_commits, 1);
    assert_eq!(updates.latest, second);
    assert_eq!(updates.pinned, first);

    // A reviewer rebuilds elsewhere: the host's component matches byte for byte, a
    // tampered copy does not.
    let review_dir = scratch("review");
    let good = review_dir.join("pjlink.wasm");
    std::fs::write(&good, store.component(&digest).await.unwrap()).unwrap();
    let mut bytes = std::fs::read(&good).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = review_dir.join("tampered.wasm");
    std::fs::write(&tampered, bytes).unwrap();
    let work = review_dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let source_text = source.display().to_string();
    let verify = tokio::task::spawn_blocking({
        let (good, tampered, work, first, source_text) = (
            good.display().to_string(),
            tampered.display().to_string(),
            work.display().to_string(),
            first.clone(),
            source_text.clone(),
        );
        move || {
            warden_tests::warden(&[
                "driver",
                "verify",
                &good,
                &tampered,
                "--repo",
                &source_text,
                "--commit",
                &first,
                "--path",
                "drivers/pjlink",
                "--work-dir",
                &work,
                "--json",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(verify.code, Some(1), "{}\n{}", verify.stdout, verify.stderr);
    let result: Value = serde_json::from_str(&verify.stdout).unwrap();
    assert_eq!(result["rebuilt"]["digest"], digest.as_str(), "reproducible");
    assert_eq!(result["files"][0]["matches"], true);
    assert_eq!(result["files"][1]["matches"], false);
    assert_eq!(result["all_match"], false);

    // `inspect --expect-commit` flags a component that names another commit.
    let good_text = good.display().to_string();
    let inspect =
        warden_tests::warden(&["driver", "inspect", &good_text, "--expect-commit", &first]);
    assert_eq!(inspect.code, Some(0), "{}", inspect.stderr);
    assert!(inspect.stdout.contains(&format!("commit     {first}")));
    let inspect =
        warden_tests::warden(&["driver", "inspect", &good_text, "--expect-commit", &second]);
    assert_eq!(inspect.code, Some(1));
    assert!(
        inspect.stdout.contains("COMMIT MISMATCH"),
        "{}",
        inspect.stdout
    );

    // A commit whose build script tries to read the host's files and reach a local
    // service, and whose driver does not compile: the sandbox refuses the first two, and
    // the build fails with the compiler's message kept.
    let secret = host_dir.join("master.key");
    std::fs::write(&secret, "not for drivers").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let probe = format!(
        r#"fn main() {{
    let secret = std::fs::read({secret:?}).is_ok();
    let home = std::fs::read_dir({home:?}).is_ok();
    let local = std::net::TcpStream::connect({local:?}).is_ok();
    if secret || home || local {{
        panic!("SANDBOX BREACH: secret={{secret}} home={{home}} local={{local}}");
    }}
    println!("cargo:warning=sandboxed: the host's files and network were out of reach");
}}
"#,
        secret = secret.display().to_string(),
        local = listener.local_addr().unwrap().to_string(),
    );
    std::fs::write(source.join("drivers/pjlink/build.rs"), probe).unwrap();
    let lib = "drivers/pjlink/src/lib.rs";
    let broken_text = std::fs::read_to_string(source.join(lib)).unwrap() + "\nfn broken( {\n";
    git(&source, &["add", "drivers/pjlink/build.rs"]);
    let broken = commit_file(&source, lib, &broken_text, "a probing, broken driver");
    let job = control
        .request_build(&admin(), &repository.id, &broken, "drivers/pjlink")
        .await
        .unwrap();
    let job = finished(&store, &job.id).await;
    assert_eq!(job.state, BuildState::Failed);
    assert!(
        job.error.as_deref().unwrap().contains("compile the driver"),
        "{:?}",
        job.error
    );
    assert!(job.output.contains("error"), "{}", job.output);
    assert!(
        job.output.contains("sandboxed: the host's files"),
        "{}",
        job.output
    );
    assert!(!job.output.contains("BREACH"), "{}", job.output);
    assert!(job.output.contains("pjlink/src/lib.rs"), "{}", job.output);
    assert!(job.driver_id.is_none());

    // A commit the repository does not have fails at the checkout.
    let job = control
        .request_build(&admin(), &repository.id, &"ab".repeat(20), "drivers/pjlink")
        .await
        .unwrap();
    let job = finished(&store, &job.id).await;
    assert_eq!(job.state, BuildState::Failed);
    assert!(
        job.error.as_deref().unwrap().contains("not in"),
        "{:?}",
        job.error
    );

    control.shutdown().await;
    for dir in [source, host_dir, review_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
