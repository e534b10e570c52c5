//! What settings mean: the four levels, the four kinds of parent, how records merge into
//! what a driver receives, and what each role may read back.
//!
//! A module's settings are the merge, lowest precedence first, of its driver's defaults
//! (from the component's metadata), then the records of its driver, of each zone of its
//! system in the system's order, of the system, and of the module itself. At each parent
//! the levels merge in order, so a higher level wins over a lower one there. Objects merge
//! deeply; any other value replaces what was below it.
//!
//! The driver receives the merge of every level. A person sees the merge of the levels
//! their role may read: `user` only `none`, `support` up to `support`, `admin` up to
//! `admin`. Nobody reads `never_displayed` back: it holds what only the driver needs
//! (device passwords, API keys).

use std::collections::BTreeMap;

use serde_json::Value;

/// Who may read a settings record back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Level {
    /// Everyone who may see the parent.
    None,
    /// Support staff and administrators.
    Support,
    /// Administrators.
    Admin,
    /// Nobody: only the driver receives it.
    NeverDisplayed,
}

impl Level {
    /// Every level, lowest first (the order they merge in).
    pub const ALL: [Level; 4] = [
        Level::None,
        Level::Support,
        Level::Admin,
        Level::NeverDisplayed,
    ];

    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Support => "support",
            Level::Admin => "admin",
            Level::NeverDisplayed => "never_displayed",
        }
    }

    /// The level named `name`.
    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|level| level.as_str() == name)
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a settings record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ParentKind {
    /// A driver: settings every module of it shares.
    Driver,
    /// A zone: settings for the systems in it.
    Zone,
    /// A system (room).
    System,
    /// One module.
    Module,
}

impl ParentKind {
    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            ParentKind::Driver => "driver",
            ParentKind::Zone => "zone",
            ParentKind::System => "system",
            ParentKind::Module => "module",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<ParentKind> {
        [
            ParentKind::Driver,
            ParentKind::Zone,
            ParentKind::System,
            ParentKind::Module,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for ParentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A person's role, as far as settings are concerned (PlaceOS's user levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Uses rooms.
    User,
    /// Supports the building: sees support settings.
    Support,
    /// Administers the building: sees admin settings.
    Admin,
}

impl Role {
    /// The highest level this role may read.
    pub fn readable(self) -> Level {
        match self {
            Role::User => Level::None,
            Role::Support => Level::Support,
            Role::Admin => Level::Admin,
        }
    }
}

/// Who a merge is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The driver: every level.
    Driver,
    /// A person with this role: the levels it may read, never `never_displayed`.
    Person(Role),
}

impl Audience {
    /// Whether this audience receives records of `level`.
    pub fn reads(self, level: Level) -> bool {
        match self {
            Audience::Driver => true,
            Audience::Person(role) => level <= role.readable() && level != Level::NeverDisplayed,
        }
    }
}

/// `overrides` merged over `base`: objects merge deeply, other values replace.
pub fn merge(base: &Value, overrides: &Value) -> Value {
    let mut merged = base.clone();
    merge_into(&mut merged, overrides);
    merged
}

/// [`merge`] in place: `overrides` merged into `base`, copying only what it adds.
pub fn merge_into(base: &mut Value, overrides: &Value) {
    match (base, overrides) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(existing) => merge_into(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// One parent's records, each level's JSON object.
pub type ParentSettings = BTreeMap<Level, Value>;

/// Merge `layers` (lowest precedence first: driver, zones in the system's order, system,
/// module) over `defaults`, taking at each parent the levels `audience` reads, lowest
/// first.
pub fn merge_layers(defaults: &Value, layers: &[ParentSettings], audience: Audience) -> Value {
    // Defaults are part of the driver's published metadata, so every audience sees them.
    let mut merged = defaults.clone();
    if !merged.is_object() {
        merged = Value::Object(Default::default());
    }
    for layer in layers {
        for (level, value) in layer {
            if audience.reads(*level) {
                merge_into(&mut merged, value);
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(pairs: &[(Level, Value)]) -> ParentSettings {
        pairs.iter().cloned().collect()
    }

    #[test]
    fn objects_merge_deeply_and_other_values_replace() {
        let merged = merge(
            &json!({"a": 1, "nested": {"x": 1, "y": 2}, "list": [1, 2]}),
            &json!({"nested": {"y": 3}, "list": [9], "b": true}),
        );
        assert_eq!(
            merged,
            json!({"a": 1, "nested": {"x": 1, "y": 3}, "list": [9], "b": true})
        );
    }

    #[test]
    fn later_parents_win_and_higher_levels_win_at_one_parent() {
        let driver = layer(&[
            (Level::None, json!({"port": 1, "who": "driver"})),
            (Level::Admin, json!({"who": "driver-admin"})),
        ]);
        let zone = layer(&[(Level::None, json!({"who": "zone", "zone": true}))]);
        let module = layer(&[
            (Level::Support, json!({"who": "module-support"})),
            (Level::None, json!({"who": "module-none"})),
        ]);
        let layers = [driver, zone, module];
        let for_driver = merge_layers(&json!({"port": 0}), &layers, Audience::Driver);
        assert_eq!(
            for_driver,
            json!({"port": 1, "who": "module-support", "zone": true})
        );
        let for_user = merge_layers(&json!({}), &layers, Audience::Person(Role::User));
        assert_eq!(
            for_user,
            json!({"port": 1, "who": "module-none", "zone": true})
        );
    }

    #[test]
    fn each_role_reads_up_to_its_level_and_nobody_reads_never_displayed() {
        let parent = layer(&[
            (Level::None, json!({"none": 1})),
            (Level::Support, json!({"support": 1})),
            (Level::Admin, json!({"admin": 1})),
            (Level::NeverDisplayed, json!({"secret": 1})),
        ]);
        let layers = [parent];
        let keys = |audience| {
            let merged = merge_layers(&json!({}), &layers, audience);
            merged
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(Audience::Person(Role::User)), ["none"]);
        assert_eq!(keys(Audience::Person(Role::Support)), ["none", "support"]);
        assert_eq!(
            keys(Audience::Person(Role::Admin)),
            ["admin", "none", "support"]
        );
        assert_eq!(
            keys(Audience::Driver),
            ["admin", "none", "secret", "support"]
        );
    }

    #[test]
    fn names_round_trip() {
        for level in Level::ALL {
            assert_eq!(Level::parse(level.as_str()), Some(level));
        }
        assert_eq!(Level::parse("never-displayed"), None);
        assert_eq!(ParentKind::parse("zone"), Some(ParentKind::Zone));
        assert_eq!(ParentKind::parse("room"), None);
    }
}
