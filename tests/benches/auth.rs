//! Sign-in benchmark (issue 6): what checking a request's credential costs, what a
//! password hash costs at the scrypt parameters around the default, and how many sign-ins
//! per second the host accepts and refuses under the rate limiter. Results and their
//! analysis: docs/performance.md, "Sign-in (issue 6)".
//!
//! `cargo bench -p warden-tests --bench auth` (add `-- --quick` for smaller counts), on a
//! SQLite file in a temporary directory. It prints one labelled line per figure.
//!
//! 1. scrypt: `PasswordHasher::hash` at N = 2^14, 2^15 and 2^16 (the default), r = 8,
//!    p = 1, one at a time.
//! 2. Token check: `Auth::check_bearer` for one access token, warm (the credential cache
//!    holds it) and cold (a new API key each time: hash, one query, cache insert).
//! 3. Sign-in throughput: 40 accounts signing in with the right password from 8 tasks at
//!    once (bounded by scrypt and the hashing concurrency, one hash per core), then one
//!    account attacked with wrong passwords from 8 tasks: after its free failures every
//!    attempt is refused by the limiter before any hashing.

#[path = "support/stats.rs"]
mod stats;

use std::sync::Arc;
use std::time::Instant;

use stats::{Stats, fmt};
use warden::auth::password::{PasswordHasher, ScryptCost};
use warden::auth::{Auth, AuthConfig, AuthError, TokenRequest};
use warden::crypto::{KeyId, KeyRing, MasterKey};
use warden::store::{Actor, KeySource, NewApiKey, NewOAuthClient, NewUser, Store};
use zeroize::Zeroizing;

const PASSWORD: &str = "benchmark passphrase, long enough";

async fn store(dir: &std::path::Path) -> anyhow::Result<Store> {
    let keys = KeySource::fixed(KeyRing::new(vec![MasterKey::generate(KeyId(1))], KeyId(1))?);
    Ok(Store::open(
        &format!("sqlite://{}", dir.join("warden.db").display()),
        keys,
    )
    .await?)
}

async fn scrypt_costs(quick: bool) -> anyhow::Result<()> {
    for log_n in [14u8, 15, 16] {
        let hasher = PasswordHasher::new(ScryptCost { log_n, r: 8, p: 1 }, 1)?;
        let mut samples = Vec::new();
        for _ in 0..if quick { 3 } else { 10 } {
            let started = Instant::now();
            hasher.hash(Zeroizing::new(PASSWORD.to_string())).await?;
            samples.push(started.elapsed());
        }
        println!(
            "scrypt N=2^{log_n} r=8 p=1 ({} MiB): hash {}",
            128 * 8 * (1u64 << log_n) / (1 << 20),
            Stats::of(samples)
        );
    }
    Ok(())
}

async fn token_checks(auth: &Auth, quick: bool) -> anyhow::Result<()> {
    let actor = Actor("bench".to_string());
    let service = auth
        .store()
        .create_user(
            &actor,
            &NewUser {
                email: "service@bench.invalid".into(),
                roles: vec!["support".into()],
                auth_source: "service".into(),
                ..NewUser::default()
            },
        )
        .await?;
    let (client, secret) = auth
        .create_client(
            &actor,
            &NewOAuthClient {
                name: "bench".into(),
                grant_types: vec!["client_credentials".into()],
                confidential: true,
                service_user_id: Some(service.id.clone()),
                ..NewOAuthClient::default()
            },
        )
        .await?;
    let request = TokenRequest {
        grant_type: Some("client_credentials".into()),
        client_id: Some(client.id.clone()),
        client_secret: secret.map(|s| s.expose().to_string()),
        ..TokenRequest::default()
    };
    let tokens = auth
        .token(&request, None, auth.now())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let token = tokens.access_token.expose().to_string();
    let now = auth.now();
    auth.check_bearer(&token, now).await?;
    let rounds = if quick { 20_000 } else { 200_000 };
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let caller = auth.check_bearer(std::hint::black_box(&token), now).await?;
        samples.push(started.elapsed());
        std::hint::black_box(caller);
    }
    println!("token check, warm cache: {}", Stats::of(samples));

    let mut keys = Vec::new();
    for i in 0..if quick { 100 } else { 1000 } {
        let (_, key) = auth
            .create_api_key(
                &actor,
                &NewApiKey {
                    user_id: service.id.clone(),
                    name: format!("key {i}"),
                    ..NewApiKey::default()
                },
            )
            .await?;
        keys.push(key.expose().to_string());
    }
    let mut samples = Vec::new();
    for key in &keys {
        let started = Instant::now();
        auth.check_api_key(key, now).await?;
        samples.push(started.elapsed());
    }
    println!(
        "credential check, cold (one SQLite query): {}",
        Stats::of(samples)
    );
    Ok(())
}

async fn sign_ins(auth: &Auth, quick: bool) -> anyhow::Result<()> {
    let actor = Actor("bench".to_string());
    let accounts = if quick { 8 } else { 40 };
    let mut logins = Vec::new();
    for i in 0..accounts {
        let email = format!("user{i}@bench.invalid");
        auth.create_local_user(
            &actor,
            &NewUser {
                email: email.clone(),
                roles: vec![if i == 0 {
                    "admin".into()
                } else {
                    "user".into()
                }],
                auth_source: "local".into(),
                ..NewUser::default()
            },
            Zeroizing::new(PASSWORD.to_string()),
        )
        .await?;
        logins.push(email);
    }
    let logins = Arc::new(logins);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let auth = auth.clone();
        let logins = Arc::clone(&logins);
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            for login in logins.iter().skip(t).step_by(8) {
                let password = Zeroizing::new(PASSWORD.to_string());
                if auth
                    .sign_in_password(login, password, None, auth.now())
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task.await?;
    }
    let elapsed = started.elapsed();
    println!(
        "sign-in, right password, 8 tasks: {ok} in {} = {:.1}/s (hashing {} at once)",
        fmt(elapsed),
        ok as f64 / elapsed.as_secs_f64(),
        auth.passwords().concurrency()
    );

    let attempts = if quick { 200 } else { 2000 };
    let started = Instant::now();
    let mut tasks = Vec::new();
    let address: Option<std::net::IpAddr> = "203.0.113.9".parse().ok();
    for _ in 0..8 {
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let (mut wrong, mut limited) = (0usize, 0usize);
            for _ in 0..attempts / 8 {
                let password = Zeroizing::new("a wrong password!".to_string());
                match auth
                    .sign_in_password("user1@bench.invalid", password, address, auth.now())
                    .await
                {
                    Err(AuthError::BadPassword) => wrong += 1,
                    Err(AuthError::RateLimited { .. }) => limited += 1,
                    _ => {}
                }
            }
            (wrong, limited)
        }));
    }
    let (mut wrong, mut limited) = (0, 0);
    for task in tasks {
        let (w, l) = task.await?;
        wrong += w;
        limited += l;
    }
    let elapsed = started.elapsed();
    println!(
        "guessing one account, 8 tasks: {} attempts in {} = {:.0}/s; {wrong} checked, {limited} refused with 429 before hashing",
        wrong + limited,
        fmt(elapsed),
        (wrong + limited) as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = std::env::temp_dir().join(format!("warden-bench-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    scrypt_costs(quick).await?;
    let store = store(&dir).await?;
    let auth = Auth::new(
        store.clone(),
        &AuthConfig::default(),
        "https://bench.invalid",
    )?;
    token_checks(&auth, quick).await?;
    sign_ins(&auth, quick).await?;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
