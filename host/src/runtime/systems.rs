//! Systems (rooms) as the runtime sees them: an ordered list of module ids, and the
//! PlaceOS-style names (`Display_1`, `Display_2`) that drivers use to reach each other.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use super::RuntimeInner;

/// Every system's modules, in order.
#[derive(Debug, Default)]
pub(crate) struct Systems {
    members: RwLock<HashMap<String, Vec<String>>>,
}

impl Systems {
    pub(crate) fn set(&self, id: &str, modules: Vec<String>) {
        self.members
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), modules);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.members
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    pub(crate) fn modules(&self, id: &str) -> Vec<String> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// The ids of the modules of system `id`.
    pub(crate) fn module_set(&self, id: &str) -> BTreeSet<String> {
        self.modules(id).into_iter().collect()
    }
}

/// `(name, module id)` for each module of system `system`, in order. A module is named
/// after its custom name, or its driver's generic name, and its position among the
/// system's modules of that name: `Display_1`, `Display_2`. Only modules this runtime
/// runs are counted.
pub(crate) fn slugs(runtime: &RuntimeInner, system: &str) -> Vec<(String, String)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut named = Vec::new();
    for id in runtime.systems.modules(system) {
        let Some(module) = runtime.module(&id) else {
            continue;
        };
        let base = module.name().to_string();
        let count = counts.entry(base.clone()).or_insert(0);
        *count += 1;
        named.push((format!("{base}_{count}"), id));
    }
    named
}

/// The id of the module called `slug` in system `system`. A bare name means index 1
/// (`Display` is `Display_1`), as in PlaceOS.
pub(crate) fn resolve(runtime: &RuntimeInner, system: &str, slug: &str) -> Option<String> {
    let wanted = if slug
        .rsplit_once('_')
        .is_some_and(|(_, n)| n.parse::<usize>().is_ok())
    {
        slug.to_string()
    } else {
        format!("{slug}_1")
    };
    slugs(runtime, system)
        .into_iter()
        .find(|(name, _)| *name == wanted)
        .map(|(_, id)| id)
}
