//! What the host offers a driver to import, and the check that refuses a component
//! importing anything else — before it is compiled or instantiated.
//!
//! The offer is the `warden:driver` interfaces of every version the host implements
//! (0.1.0, and 0.1.1 which adds `http`) plus a capability-free slice of WASI
//! 0.2 that the Rust standard library needs: I/O streams, clocks, random numbers, the CLI
//! environment (empty), stdio (stdout/stderr become log lines, stdin is empty) and the
//! filesystem types with no preopened directory. Sockets and name lookup are not offered,
//! so a component importing them is refused by name.

/// `warden:driver` interfaces of version 0.1.0.
const WARDEN_0_1_0: &[&str] = &[
    "types",
    "log",
    "status",
    "settings",
    "transport",
    "timers",
    "system",
];
/// `warden:driver` interfaces of version 0.1.1: those of 0.1.0, unchanged, and `http`.
const WARDEN_0_1_1: &[&str] = &[
    "types",
    "log",
    "status",
    "settings",
    "transport",
    "http",
    "timers",
    "system",
];
/// Each frozen version the host implements, with its interfaces. The host links the
/// newest; wasmtime resolves an import of an older compatible version to it.
const WARDEN_VERSIONS: &[(&str, &[&str])] = &[("0.1.0", WARDEN_0_1_0), ("0.1.1", WARDEN_0_1_1)];

/// WASI 0.2 interfaces linked into every module's sandbox.
pub(crate) const WASI_INTERFACES: &[&str] = &[
    "io/error",
    "io/poll",
    "io/streams",
    "clocks/wall-clock",
    "clocks/monotonic-clock",
    "random/random",
    "random/insecure",
    "random/insecure-seed",
    "cli/exit",
    "cli/environment",
    "cli/stdin",
    "cli/stdout",
    "cli/stderr",
    "cli/terminal-input",
    "cli/terminal-output",
    "cli/terminal-stdin",
    "cli/terminal-stdout",
    "cli/terminal-stderr",
    "filesystem/types",
    "filesystem/preopens",
];
/// Newest WASI 0.2 patch release the linked implementation provides.
const WASI_MAX_PATCH: u64 = 12;

/// Whether the host offers the import `name` (`namespace:package/interface@version`).
pub fn is_offered(name: &str) -> bool {
    let Some((path, version)) = name.split_once('@') else {
        return false;
    };
    if let Some(interface) = path.strip_prefix("warden:driver/") {
        return WARDEN_VERSIONS
            .iter()
            .any(|(offered, interfaces)| *offered == version && interfaces.contains(&interface));
    }
    if let Some(interface) = path.strip_prefix("wasi:") {
        let patch = version
            .strip_prefix("0.2.")
            .and_then(|patch| patch.parse::<u64>().ok());
        return WASI_INTERFACES.contains(&interface)
            && matches!(patch, Some(patch) if patch <= WASI_MAX_PATCH);
    }
    false
}

/// Every import of `imports` that the host does not offer.
pub fn refused_imports(imports: &[String]) -> Vec<String> {
    imports
        .iter()
        .filter(|name| !is_offered(name))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_is_exact() {
        assert!(is_offered("warden:driver/transport@0.1.0"));
        assert!(is_offered("wasi:io/streams@0.2.6"));
        assert!(is_offered("wasi:cli/environment@0.2.0"));
        assert!(!is_offered("warden:driver/transport@0.2.0"));
        assert!(!is_offered("warden:driver/http@0.1.0"));
        assert!(is_offered("warden:driver/http@0.1.1"));
        assert!(is_offered("warden:driver/system@0.1.1"));
        assert!(!is_offered("warden:driver/http@0.1.2"));
        assert!(!is_offered("wasi:sockets/tcp@0.2.6"));
        assert!(!is_offered("wasi:sockets/ip-name-lookup@0.2.0"));
        assert!(!is_offered("wasi:http/outgoing-handler@0.2.6"));
        assert!(!is_offered("wasi:io/streams@0.2.99"));
        assert!(!is_offered("wasi:io/streams@0.3.0"));
        assert!(!is_offered("wasi:io/streams"));
        assert_eq!(
            refused_imports(&["wasi:io/poll@0.2.0".into(), "evil:net/raw@1.0.0".into()]),
            vec!["evil:net/raw@1.0.0".to_string()]
        );
    }
}
