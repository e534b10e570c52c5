//! Systems (rooms) as the runtime sees them: an ordered list of module ids, and the
//! PlaceOS-style names (`Display_1`, `Display_2`) that drivers use to reach each other.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use super::RuntimeInner;

/// A module of a system: its id, and its name when the system's owner gave one.
type Member = (String, Option<String>);

/// Every system's modules, in order.
#[derive(Debug, Default)]
pub(crate) struct Systems {
    members: RwLock<HashMap<String, Vec<Member>>>,
}

impl Systems {
    pub(crate) fn set(&self, id: &str, modules: Vec<Member>) {
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

    fn members(&self, id: &str) -> Vec<Member> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// The ids of the modules of system `id`.
    pub(crate) fn module_set(&self, id: &str) -> BTreeSet<String> {
        self.members(id).into_iter().map(|(id, _)| id).collect()
    }
}

/// `(name, module id)` for each module of system `system`, in order (see [`crate::slug`]).
/// A module is counted under the name the system was given for it; without one, under
/// its running module's name, and not at all when it does not run here.
pub(crate) fn slugs(runtime: &RuntimeInner, system: &str) -> Vec<(String, String)> {
    crate::slug::module_slugs(runtime.systems.members(system).into_iter().filter_map(
        |(id, name)| {
            let name = name.or_else(|| runtime.module(&id).map(|m| m.name().to_string()))?;
            Some((id, name))
        },
    ))
}

/// The id of the module called `slug` in system `system`.
pub(crate) fn resolve(runtime: &RuntimeInner, system: &str, slug: &str) -> Option<String> {
    let wanted = crate::slug::with_index(slug);
    slugs(runtime, system)
        .into_iter()
        .find(|(name, _)| *name == wanted)
        .map(|(_, id)| id)
}
