//! PlaceOS module names in a system: a module is called after its custom name, or its
//! driver's generic name, and its position among the system's modules of that name —
//! `Display_1`, `Display_2`. Front ends, the API and logic drivers address modules so.

use std::collections::HashMap;

/// `(slug, module id)` for `modules` given as `(module id, name)` in the system's order.
pub fn module_slugs(modules: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut counts: HashMap<String, u32> = HashMap::new();
    modules
        .into_iter()
        .map(|(id, name)| {
            let count = counts.entry(name.clone()).or_insert(0);
            *count += 1;
            (format!("{name}_{count}"), id)
        })
        .collect()
}

/// `slug` with its index: a bare name means index 1 (`Display` is `Display_1`), as in
/// PlaceOS.
pub fn with_index(slug: &str) -> String {
    if slug
        .rsplit_once('_')
        .is_some_and(|(_, n)| n.parse::<u32>().is_ok())
    {
        slug.to_string()
    } else {
        format!("{slug}_1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_count_per_name_in_order() {
        let modules = [
            ("m1", "Display"),
            ("m2", "Switcher"),
            ("m3", "Display"),
            ("m4", "Lobby"),
        ]
        .map(|(id, name)| (id.to_string(), name.to_string()));
        let names: Vec<_> = module_slugs(modules)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, ["Display_1", "Switcher_1", "Display_2", "Lobby_1"]);
    }

    #[test]
    fn a_bare_name_is_index_one() {
        assert_eq!(with_index("Display"), "Display_1");
        assert_eq!(with_index("Display_2"), "Display_2");
        assert_eq!(with_index("Room_Logic"), "Room_Logic_1");
    }
}
