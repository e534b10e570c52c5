//! Room logic: turns a room on and off through its projector and mirrors the projector's
//! power into the room's own status. It has no device of its own; it reaches the other
//! modules of its system through the host's `system` interface, which lets it reach
//! nothing else.

use warden_driver_sdk::prelude::*;

/// Settings of the room logic.
#[derive(Debug, Deserialize, Schema)]
#[serde(default)]
struct RoomSettings {
    /// The projector module of this system, by its system name.
    projector: String,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            projector: "Projector_1".to_string(),
        }
    }
}

#[derive(Default)]
struct RoomLogic {
    settings: RoomSettings,
    /// The subscriptions to the projector's `power` and `connected`.
    power: Option<Subscription>,
    online: Option<Subscription>,
}

impl Driver for RoomLogic {
    type Settings = RoomSettings;
    const INFO: DriverInfo = DriverInfo {
        name: "Room logic",
        generic_name: "Room",
        description: "Turns the room on and off through its projector and mirrors the \
                      projector's power into the room's status (`power`, `projector_online`).",
        version: env!("CARGO_PKG_VERSION"),
        transport: TransportKind::Logic,
        default_port: None,
        default_settings: r#"{"projector":"Projector_1"}"#,
    };

    fn init(&mut self, settings: RoomSettings) -> Result<()> {
        // Settings changed: drop the old subscriptions before watching again.
        for previous in [self.power.take(), self.online.take()]
            .into_iter()
            .flatten()
        {
            system::unsubscribe(previous);
        }
        self.settings = settings;
        status::set("projector", &self.settings.projector)?;
        // Watch the projector's power and connection; `notify` mirrors them.
        self.power = Some(system::subscribe(&self.settings.projector, "power")?);
        self.online = Some(system::subscribe(&self.settings.projector, "connected")?);
        Ok(())
    }

    fn notify(&mut self, subscription: Subscription, value: Value) {
        let key = if Some(subscription) == self.power {
            "power"
        } else if Some(subscription) == self.online {
            "projector_online"
        } else {
            return;
        };
        let _ = status::set(key, &value);
    }
}

#[functions]
impl RoomLogic {
    /// Turn the room on (`true`) or off (`false`): powers the projector and waits for it.
    pub fn power(&mut self, state: bool) -> Result<bool> {
        let projector = self.settings.projector.clone();
        let result: Value = system::exec(&projector, "power", [state])?;
        info(&format!("room power {state}: projector answered {result}"));
        status::set("power", &state)?;
        Ok(state)
    }

    /// Whether the room is on, as last reported by the projector.
    pub fn power_state(&self) -> Result<Option<bool>> {
        Ok(system::status(&self.settings.projector, "power")?.and_then(|v| v.as_bool()))
    }

    /// The modules of this room, by system name.
    pub fn modules(&self) -> Result<Vec<String>> {
        system::modules()
    }
}

fn info(message: &str) {
    log::info(message);
}

export_driver!(RoomLogic);
