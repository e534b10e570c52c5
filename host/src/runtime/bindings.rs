//! Host-side bindings of the `warden:driver` world, generated from wit/.
#![allow(missing_docs, missing_debug_implementations, clippy::all)]

wasmtime::component::bindgen!({
    world: "driver-world",
    path: "../wit/0.1.1",
    imports: {
        "warden:driver/transport": async,
        "warden:driver/http": async,
        "warden:driver/system": async,
    },
    exports: { default: async },
});

pub use self::warden::driver::types::Error as WitError;
