//! Runtime benchmark: the figures of DESIGN.md's "Performance targets" that the runtime
//! alone decides — load a driver from the component cache, start a module, exec through
//! the module's queue, and resident memory per idle module — and whether 10,000 modules
//! fit in one process: started once, after churn, and with the default configuration.
//! Results and their analysis: docs/performance.md.
//!
//! `cargo bench -p warden-tests --bench runtime` (add `-- --quick` for smaller counts).
//! It prints one labelled line per figure with PASS/MISS against the target; it never
//! fails on a miss. The driver is the `bench_logic` fixture: a logic driver (no device
//! connection) whose `add` and `noop` do no I/O.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[path = "support/stats.rs"]
mod stats;

use anyhow::{Context, bail};
use serde_json::json;
use stats::{Stats, fmt};
use warden::runtime::{
    CacheOutcome, Driver, ExecOptions, ModuleConfig, ModuleState, Runtime, RuntimeConfig,
};

/// How much of everything to do.
struct Counts {
    loads: usize,
    starts: usize,
    exec_warmup: usize,
    execs: usize,
    throughput_modules: usize,
    throughput_callers: usize,
    throughput_run: Duration,
    memory_steps: &'static [usize],
    churn_rounds: usize,
}

const FULL: Counts = Counts {
    loads: 300,
    starts: 2_000,
    exec_warmup: 5_000,
    execs: 50_000,
    throughput_modules: 64,
    throughput_callers: 256,
    throughput_run: Duration::from_secs(3),
    memory_steps: &[1_000, 10_000],
    churn_rounds: 6,
};

const QUICK: Counts = Counts {
    loads: 200,
    starts: 1_000,
    exec_warmup: 2_000,
    execs: 20_000,
    throughput_modules: 64,
    throughput_callers: 256,
    throughput_run: Duration::from_secs(1),
    memory_steps: &[1_000, 10_000],
    churn_rounds: 3,
};

/// Room for the largest memory step plus the modules of the other phases.
const MAX_MODULES: u32 = 10_050;

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; everything but `--quick` and `--workers N` is
    // ignored. The targets are for 2 workers; other counts are for analysis only.
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|arg| arg == "--quick");
    let workers = match args.iter().position(|arg| arg == "--workers") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .context("--workers needs a number")?,
        None => 2,
    };
    let counts = if quick { &QUICK } else { &FULL };
    let cache_dir = std::env::temp_dir().join(format!(
        "warden-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    // Measure from a task on the runtime's workers, as the host's API handlers would call,
    // not from the thread that blocks on the runtime.
    let dir = cache_dir.clone();
    let result = runtime
        .block_on(runtime.spawn(async move { run(counts, &dir, workers).await }))
        .context("the benchmark task panicked")
        .and_then(|result| result);
    let _ = std::fs::remove_dir_all(&cache_dir);
    result
}

async fn run(counts: &Counts, cache_dir: &std::path::Path, workers: usize) -> anyhow::Result<()> {
    let bytes = std::fs::read(warden_tests::guests::BENCH_LOGIC)
        .with_context(|| format!("reading {}", warden_tests::guests::BENCH_LOGIC))?;
    println!(
        "warden runtime benchmark: bench_logic.wasm ({} KiB), tokio multi-thread with {workers} worker(s), {} CPUs online",
        bytes.len() / 1024,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let mut config = RuntimeConfig::new(cache_dir);
    config.max_modules = MAX_MODULES;
    let idle_rss = rss_kib()?;
    let runtime = Runtime::new(config).context("creating the runtime")?;
    println!(
        "runtime created (max_modules {MAX_MODULES}): VmRSS {} -> {} KiB, {} mappings",
        idle_rss,
        rss_kib()?,
        map_count()?
    );

    let driver = load(&runtime, &bytes, counts)?;
    // Memory first, while the heap holds little garbage from the other phases.
    memory(&runtime, &driver, counts).await?;
    start(&runtime, &driver, counts).await?;
    exec_latency(&runtime, &driver, counts).await?;
    exec_throughput(&runtime, &driver, counts).await?;
    // Last on this runtime: it may exhaust the process's memory mappings.
    churn(&runtime, &driver, counts).await?;
    runtime.shutdown().await;
    drop(driver);
    drop(runtime);
    default_config_capacity(cache_dir, &bytes).await
}

/// How many modules a runtime with the default configuration (other than the cache
/// directory) can run at once, up to its own `max_modules`.
async fn default_config_capacity(cache_dir: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let config = RuntimeConfig::new(cache_dir);
    let max_modules = config.max_modules;
    let runtime = Runtime::new(config).context("creating the default runtime")?;
    let driver = runtime.load_driver(bytes)?;
    let mut alive = 0usize;
    let mut failure = None;
    const BATCH: usize = 250;
    'batches: while alive < max_modules as usize {
        let ids: Vec<String> = (alive..(alive + BATCH).min(max_modules as usize))
            .map(|i| format!("default-{i}"))
            .collect();
        for id in &ids {
            runtime.start_module(ModuleConfig::new(id, driver.clone()))?;
        }
        for id in &ids {
            if let Err(error) = running(&runtime, id).await {
                failure = Some(format!("{error:#}"));
                break 'batches;
            }
            alive += 1;
        }
    }
    println!(
        "default RuntimeConfig (max_modules {max_modules}): {alive} modules running{} {}",
        failure
            .map(|f| format!("; the next one failed: {f}"))
            .unwrap_or_default(),
        verdict(alive >= 10_000, "10,000 modules"),
    );
    runtime.shutdown().await;
    Ok(())
}

/// 1. Load a driver: once cold (compiled and stored), then from the cache.
fn load(runtime: &Runtime, bytes: &[u8], counts: &Counts) -> anyhow::Result<Arc<Driver>> {
    let started = Instant::now();
    let driver = runtime.load_driver(bytes)?;
    let cold = started.elapsed();
    if driver.cache != CacheOutcome::Compiled {
        bail!("the first load of a fresh cache was {:?}", driver.cache);
    }
    let cached_kib = std::fs::read_dir(&runtime.config().cache_dir)
        .context("listing the cache")?
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .map(|metadata| metadata.len())
        .sum::<u64>()
        / 1024;
    println!(
        "load driver, cold (inspect + compile + store + load): {} ({cached_kib} KiB precompiled)",
        fmt(cold)
    );

    let mut samples = Vec::with_capacity(counts.loads);
    let mut inspects = Vec::with_capacity(counts.loads);
    for _ in 0..counts.loads {
        let started = Instant::now();
        let warm = runtime.load_driver(bytes)?;
        samples.push(started.elapsed());
        if warm.cache != CacheOutcome::Hit {
            bail!("a warm load was {:?}", warm.cache);
        }
        let started = Instant::now();
        std::hint::black_box(warden::component::inspect(bytes)?);
        inspects.push(started.elapsed());
    }
    let stats = Stats::of(samples);
    println!(
        "load driver from cache (inspect + deserialize + link): {} {}",
        stats,
        verdict(stats.p50 <= Duration::from_millis(1), "p50 <= 1 ms")
    );
    println!(
        "  of which inspect (digest, imports, metadata): {}",
        Stats::of(inspects)
    );
    Ok(driver)
}

/// Wait until `id` is running; fail if it crashed instead.
async fn running(runtime: &Runtime, id: &str) -> anyhow::Result<()> {
    let handle = runtime
        .module(id)
        .with_context(|| format!("module {id} vanished"))?;
    let mut state = handle.watch_state();
    let reached = state
        .wait_for(|s| !matches!(s, ModuleState::Starting))
        .await
        .map(|s| s.clone())
        .map_err(|_| anyhow::anyhow!("module {id} dropped its state"))?;
    match reached {
        ModuleState::Running => Ok(()),
        other => bail!("module {id} did not start: {other:?}"),
    }
}

/// 2. Start a module (spawn + instantiate + init) and see it running; stopped in between.
async fn start(runtime: &Runtime, driver: &Arc<Driver>, counts: &Counts) -> anyhow::Result<()> {
    let mut samples = Vec::with_capacity(counts.starts);
    let mut stops = Vec::with_capacity(counts.starts);
    for i in 0..counts.starts + 100 {
        let id = format!("start-{i}");
        let started = Instant::now();
        let handle = runtime.start_module(ModuleConfig::new(&id, driver.clone()))?;
        let mut state = handle.watch_state();
        let reached = state
            .wait_for(|s| !matches!(s, ModuleState::Starting))
            .await
            .map(|s| s.clone())
            .map_err(|_| anyhow::anyhow!("module {id} dropped its state"))?;
        let elapsed = started.elapsed();
        if reached != ModuleState::Running {
            bail!("module {id} did not start: {reached:?}");
        }
        let started = Instant::now();
        runtime.stop_module(&id).await;
        // The first 100 warm the pool's slots and the allocator.
        if i >= 100 {
            samples.push(elapsed);
            stops.push(started.elapsed());
        }
    }
    let stats = Stats::of(samples);
    println!(
        "start module (spawn + instantiate + init, until Running; stopped after each): {} {}",
        stats,
        verdict(stats.p50 <= Duration::from_micros(100), "p50 <= 100 µs")
    );
    println!("  stop module (not a target): {}", Stats::of(stops));
    Ok(())
}

/// Start `ids` and wait until every one of them runs.
async fn start_all(
    runtime: &Runtime,
    driver: &Arc<Driver>,
    ids: impl Iterator<Item = String>,
) -> anyhow::Result<Vec<String>> {
    let mut started = Vec::new();
    for id in ids {
        runtime.start_module(ModuleConfig::new(&id, driver.clone()))?;
        started.push(id);
    }
    for id in &started {
        running(runtime, id).await?;
    }
    Ok(started)
}

/// 3a. Sequential exec latency on one module.
async fn exec_latency(
    runtime: &Runtime,
    driver: &Arc<Driver>,
    counts: &Counts,
) -> anyhow::Result<()> {
    start_all(runtime, driver, std::iter::once("latency".to_string())).await?;
    let handle = runtime.module("latency").context("latency module")?;
    for function in ["add", "noop"] {
        let args = if function == "add" {
            json!([1, 2])
        } else {
            json!([])
        };
        let mut samples = Vec::with_capacity(counts.execs);
        for i in 0..counts.exec_warmup + counts.execs {
            let started = Instant::now();
            let result = handle
                .exec(function, args.clone(), ExecOptions::default())
                .await?;
            let elapsed = started.elapsed();
            if function == "add" && result != json!(3) {
                bail!("add(1, 2) returned {result}");
            }
            if i >= counts.exec_warmup {
                samples.push(elapsed);
            }
        }
        let stats = Stats::of(samples);
        println!(
            "exec `{function}` via queue + sandbox, sequential on one module: {} {}",
            stats,
            verdict(stats.p50 <= Duration::from_micros(20), "p50 <= 20 µs")
        );
    }
    // The same call from a thread outside the runtime, as a blocking caller would make
    // it: each exec then also wakes a worker and is woken back. Not a target.
    let calls = counts.execs / 2;
    let warmup = counts.exec_warmup;
    let tokio_handle = tokio::runtime::Handle::current();
    let outside = tokio::task::spawn_blocking(move || {
        let mut samples = Vec::with_capacity(calls);
        for i in 0..warmup + calls {
            let started = Instant::now();
            tokio_handle.block_on(handle.exec("add", json!([1, 2]), ExecOptions::default()))?;
            if i >= warmup {
                samples.push(started.elapsed());
            }
        }
        anyhow::Ok(samples)
    })
    .await??;
    println!(
        "  exec `add` from a thread outside the runtime (not a target: two thread wake-ups per call): {}",
        Stats::of(outside)
    );
    runtime.stop_module("latency").await;
    Ok(())
}

/// 3b. Throughput: many concurrent callers spread over several modules.
async fn exec_throughput(
    runtime: &Runtime,
    driver: &Arc<Driver>,
    counts: &Counts,
) -> anyhow::Result<()> {
    let ids = start_all(
        runtime,
        driver,
        (0..counts.throughput_modules).map(|i| format!("throughput-{i}")),
    )
    .await?;
    let handles = ids
        .iter()
        .map(|id| runtime.module(id).context("throughput module"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Warm up every module, then run all callers for the same wall-clock time.
    for handle in &handles {
        handle
            .exec("add", json!([1, 2]), ExecOptions::default())
            .await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for caller in 0..counts.throughput_callers {
        let handle = handles
            .get(caller % handles.len())
            .context("no module")?
            .clone();
        let stop = stop.clone();
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 14);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                handle
                    .exec("add", json!([1, 2]), ExecOptions::default())
                    .await?;
                latencies.push(started.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(counts.throughput_run).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await??);
    }
    let elapsed = started.elapsed();
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "exec throughput, {} callers over {} modules, {:.1} s: {:.0} exec/s {}",
        counts.throughput_callers,
        counts.throughput_modules,
        elapsed.as_secs_f64(),
        rate,
        verdict(rate >= 200_000.0, ">= 200k/s on 2 cores")
    );
    println!(
        "  latency per exec under that load (queueing included): {}",
        Stats::of(latencies)
    );
    for id in &ids {
        runtime.stop_module(id).await;
    }
    Ok(())
}

/// 4. Resident memory per idle, running module.
async fn memory(runtime: &Runtime, driver: &Arc<Driver>, counts: &Counts) -> anyhow::Result<()> {
    // One module started and stopped first, so one-time initialisation is not counted.
    start_all(
        runtime,
        driver,
        std::iter::once("memory-warmup".to_string()),
    )
    .await?;
    runtime.stop_module("memory-warmup").await;

    let before = rss_kib()?;
    let maps_before = map_count()?;
    let mut alive = 0;
    for &target in counts.memory_steps {
        let started = Instant::now();
        start_all(
            runtime,
            driver,
            (alive..target).map(|i| format!("memory-{i}")),
        )
        .await?;
        let elapsed = started.elapsed();
        println!(
            "  (started modules {alive}..{target} all at once: {} until all Running, {} per module)",
            fmt(elapsed),
            fmt(elapsed / u32::try_from(target - alive).unwrap_or(u32::MAX).max(1))
        );
        alive = target;
        // Let the workers settle (nothing should run: the modules are idle).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = rss_kib()?;
        let maps = map_count()?;
        let per_module = after.saturating_sub(before) as f64 / target as f64;
        println!(
            "memory with {target} idle modules: {per_module:.1} KiB per module (VmRSS {before} -> {after} KiB), {} mappings (+{:.2} per module) {}",
            maps,
            maps.saturating_sub(maps_before) as f64 / target as f64,
            verdict(per_module <= 128.0, "<= 128 KiB per module"),
        );
    }
    let last = counts.memory_steps.last().copied().unwrap_or(0);
    let maps = map_count()?;
    println!(
        "{last} modules in one process: all Running, {maps} mappings of vm.max_map_count {} {}",
        max_map_count().unwrap_or(0),
        verdict(
            runtime.module_ids().len() >= last && last >= 10_000,
            "10,000 modules"
        ),
    );
    print_resident_mappings()?;

    let started = Instant::now();
    for i in 0..alive {
        runtime.stop_module(&format!("memory-{i}")).await;
    }
    println!(
        "  (stopped {alive} modules in {}; VmRSS now {} KiB)",
        fmt(started.elapsed()),
        rss_kib()?
    );
    Ok(())
}

/// Churn at full size: stop every module and start them all again, a few times, as
/// restarts, upgrades and reconfiguration do over a host's life. Freed pool slots keep
/// their mappings, so this finds the mapping limit where a single start does not.
async fn churn(runtime: &Runtime, driver: &Arc<Driver>, counts: &Counts) -> anyhow::Result<()> {
    let modules = counts.memory_steps.last().copied().unwrap_or(0);
    let mut failure = None;
    let mut rounds = 0;
    for round in 0..counts.churn_rounds {
        let ids: Vec<String> = (0..modules).map(|i| format!("churn-{round}-{i}")).collect();
        for id in &ids {
            runtime.start_module(ModuleConfig::new(id, driver.clone()))?;
        }
        let mut running_now = 0;
        for id in &ids {
            if let Err(error) = running(runtime, id).await {
                failure = Some(format!(
                    "round {round}, after {running_now} modules: {error:#}"
                ));
                break;
            }
            running_now += 1;
        }
        let maps = map_count()?;
        for id in &ids {
            runtime.stop_module(id).await;
        }
        println!(
            "  churn round {round}: {running_now} of {modules} modules running, {maps} mappings; {} mappings with every module stopped",
            map_count()?
        );
        if failure.is_some() {
            break;
        }
        rounds += 1;
    }
    println!(
        "{modules} modules stopped and started again {} times: {} {}",
        counts.churn_rounds,
        match &failure {
            None => format!("all {rounds} rounds ran"),
            Some(failure) => format!("failed in {failure}"),
        },
        verdict(failure.is_none(), "10,000 modules, also after churn"),
    );
    Ok(())
}

/// The largest resident mappings of this process, to see where module memory lives.
fn print_resident_mappings() -> anyhow::Result<()> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").context("reading smaps")?;
    struct Mapping {
        size_kib: u64,
        perms: String,
        rss_kib: u64,
        name: String,
    }
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            let perms = fields.next().unwrap_or_default().to_string();
            let name = fields.nth(3).unwrap_or("[anon]").to_string();
            mappings.push(Mapping {
                size_kib: (end - start) / 1024,
                perms,
                rss_kib: 0,
                name,
            });
        } else if first == "Rss:"
            && let Some(mapping) = mappings.last_mut()
        {
            mapping.rss_kib = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    let total: u64 = mappings.iter().map(|m| m.rss_kib).sum();
    // Group by (size, permissions, name): pool slots, stacks and guard pages show up as
    // many mappings of one size.
    let mut groups = std::collections::HashMap::<(u64, String, String), (usize, u64)>::new();
    for m in &mappings {
        let entry = groups
            .entry((m.size_kib, m.perms.clone(), m.name.clone()))
            .or_default();
        entry.0 += 1;
        entry.1 += m.rss_kib;
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by_key(|(_, (count, rss))| std::cmp::Reverse((*rss, *count)));
    println!(
        "  resident mappings by (size, perms, name), largest first (smaps total {total} KiB):"
    );
    for ((size_kib, perms, name), (count, rss)) in groups.iter().take(10) {
        println!("    {count} x {size_kib} KiB {perms} {name}: {rss} KiB resident");
    }
    let mut counts: Vec<_> = groups.iter().collect();
    counts.sort_by_key(|(_, (count, _))| std::cmp::Reverse(*count));
    println!("  most numerous mappings:");
    for ((size_kib, perms, name), (count, rss)) in counts.iter().take(6) {
        println!("    {count} x {size_kib} KiB {perms} {name}: {rss} KiB resident");
    }
    // Roles by layout (a heuristic): a pooled linear memory is [guest stack area][memfd
    // data image][heap pages][reserved]; a pooled fiber stack is [4 KiB guard][stack].
    let image = |m: Option<&Mapping>| m.is_some_and(|m| m.name.contains("wasm-memory-image"));
    let mut roles = std::collections::BTreeMap::<&str, (usize, u64)>::new();
    for (i, m) in mappings.iter().enumerate() {
        let before = i.checked_sub(1).and_then(|j| mappings.get(j));
        let after = mappings.get(i + 1);
        let anon_rw = m.name == "[anon]" && m.perms.starts_with("rw");
        let role = if image(Some(m)) {
            "linear memories: data images"
        } else if anon_rw && image(after) {
            "linear memories: pages below the data (guest stack)"
        } else if anon_rw && image(before) {
            "linear memories: pages above the data (guest heap)"
        } else if anon_rw && m.size_kib >= 1 << 20 {
            // The kernel merges an adjacent malloc arena into this mapping at times.
            "table pool (>= 1 GiB, may include an adjacent malloc arena)"
        } else if anon_rw
            && m.size_kib <= 2 << 10
            && before.is_some_and(|b| b.size_kib == 4 && b.perms.starts_with("---"))
        {
            "fiber stacks (pooled async stacks) and thread stacks"
        } else if m.name == "[heap]" || anon_rw {
            "malloc heap and other anonymous (host state, stores, instances)"
        } else if m.name.starts_with('/') {
            "file-backed (binary, libraries, .cwasm)"
        } else {
            "other (guard pages, reservations)"
        };
        let entry = roles.entry(role).or_default();
        entry.0 += 1;
        entry.1 += m.rss_kib;
    }
    println!("  resident memory by role:");
    for (role, (count, rss)) in roles {
        println!("    {role}: {rss} KiB in {count} mappings");
    }
    Ok(())
}

fn verdict(pass: bool, target: &str) -> String {
    format!("[{}: target {target}]", if pass { "PASS" } else { "MISS" })
}

/// This process's resident set, in KiB.
fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}

/// This process's memory mappings.
fn map_count() -> anyhow::Result<usize> {
    Ok(std::fs::read_to_string("/proc/self/maps")
        .context("reading maps")?
        .lines()
        .count())
}

fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}
