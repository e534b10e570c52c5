//! The one wasmtime engine of the process: pooling allocator, epoch interruption, and the
//! thread that advances the epoch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::RuntimeConfig;

/// How often the epoch advances; CPU deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Core instances, memories and tables a driver component may contain. A Rust driver
/// built for wasm32-wasip2 has its own module plus the WASI adapter's small shims, and
/// one linear memory.
const CORE_INSTANCES_PER_COMPONENT: u32 = 10;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;

/// Build the engine for `config`.
pub fn build(config: &RuntimeConfig) -> anyhow::Result<Engine> {
    let slots = config.max_modules;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        // One memory per module: every pooled memory slot keeps its mappings once used,
        // and a pool twice that size would let restarts walk the process past the
        // kernel's 65,530 mappings (measured in the runtime benchmark).
        .total_memories(slots)
        .total_tables(slots.saturating_mul(TABLES_PER_COMPONENT))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(config.limits.memory_bytes)
        // A store keeps the last async stack it used until it is dropped, so every live
        // module holds one: the pool needs one stack per module.
        .total_stacks(slots)
        // Keep a little resident memory per slot so restarts and new modules are cheap,
        // but not so much that 10,000 idle modules add up.
        .linear_memory_keep_resident(0)
        .table_keep_resident(0);

    let mut wasm = Config::new();
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        // Drivers built for WASI 0.2 do not need component-model concurrency, and it
        // doubles the cost of a plain call.
        .concurrency_support(false)
        // Each memory reserves only what its limit allows (plus a guard), so 10,000
        // modules fit in the address space; bounds checks become explicit.
        .memory_reservation(config.limits.memory_bytes as u64)
        .memory_guard_size(64 << 10)
        .memory_reservation_for_growth(0)
        .memory_init_cow(true)
        .max_wasm_stack(512 << 10)
        .async_stack_size(1 << 20)
        .wasm_backtrace_max_frames(None);
    Ok(Engine::new(&wasm)?)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
#[derive(Debug)]
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Start ticking `engine`.
    pub fn start(engine: &Engine) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("warden-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
