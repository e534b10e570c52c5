//! The records the store keeps, and the inputs that create and change them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who made a change, as the audit log records it: a user id, or a name for the host
/// itself (`host`) or a command-line operator (`cli`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor(pub String);

impl Actor {
    /// The host acting on its own (history, automatic restarts).
    pub fn host() -> Actor {
        Actor("host".to_string())
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which part of a list to return, and a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only records whose name contains this, ignoring case.
    pub q: Option<String>,
    /// At most this many (capped at 1,000).
    pub limit: i64,
    /// After skipping this many.
    pub offset: i64,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            q: None,
            limit: 100,
            offset: 0,
        }
    }
}

impl ListQuery {
    /// The most a list returns at once.
    pub const MAX_LIMIT: i64 = 1000;

    pub(crate) fn bounds(&self) -> (i64, i64) {
        (
            self.limit.clamp(0, ListQuery::MAX_LIMIT),
            self.offset.max(0),
        )
    }
}

/// One page of a list, and how many records match in all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The records on this page.
    pub items: Vec<T>,
    /// How many match the filter, over every page.
    pub total: i64,
}

/// A zone: a node in the tree of places and groupings (building, level, area).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Zone {
    /// `zone-…`.
    pub id: String,
    /// The zone it belongs to.
    pub parent_id: Option<String>,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Tags (`building`, `level`, …).
    pub tags: Vec<String>,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Last changed, Unix ms.
    pub updated_at: i64,
}

/// What a new zone is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct NewZone {
    /// Name (required).
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The parent zone.
    #[serde(default)]
    pub parent_id: Option<String>,
}

/// A change to a zone: each `Some` replaces that field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct ZonePatch {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// New parent (`Some(None)` makes it a root).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub parent_id: Option<Option<String>>,
}

/// A system: a room, with its zones and modules in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct System {
    /// `sys-…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The room's resource mailbox.
    pub email: Option<String>,
    /// Zone ids, in order (later zones' settings win over earlier ones').
    pub zones: Vec<String>,
    /// Module ids, in order (which fixes `Display_1`, `Display_2`).
    pub modules: Vec<String>,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Last changed, Unix ms.
    pub updated_at: i64,
}

/// What a new system is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct NewSystem {
    /// Name (required).
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Resource mailbox.
    #[serde(default)]
    pub email: Option<String>,
    /// Zone ids in order.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Module ids in order.
    #[serde(default)]
    pub modules: Vec<String>,
}

/// A change to a system: each `Some` replaces that field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct SystemPatch {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New mailbox (`Some(None)` clears it).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    /// New zones, in order.
    pub zones: Option<Vec<String>>,
    /// New modules, in order.
    pub modules: Option<Vec<String>>,
}

/// Whether a reviewer approved a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// Not reviewed yet.
    Pending,
    /// Approved.
    Approved,
    /// Approval withdrawn.
    Revoked,
}

impl Approval {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Approval::Pending => "pending",
            Approval::Approved => "approved",
            Approval::Revoked => "revoked",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Approval> {
        match text {
            "pending" => Some(Approval::Pending),
            "approved" => Some(Approval::Approved),
            "revoked" => Some(Approval::Revoked),
            _ => None,
        }
    }
}

/// A registered driver: one component, by digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriverRecord {
    /// `driver-…`.
    pub id: String,
    /// Name (from the component's metadata unless given).
    pub name: String,
    /// What its modules are called in a system (`Display` → `Display_1`): the component's
    /// generic name, or the driver's name when it declares none.
    pub module_name: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    /// The metadata embedded in the component.
    pub metadata: Value,
    /// Where its source lives.
    pub source_repo: Option<String>,
    /// The commit it was built from.
    pub source_commit: Option<String>,
    /// Review state.
    pub approval: Approval,
    /// Who approved or revoked it.
    pub approved_by: Option<String>,
    /// When.
    pub approved_at: Option<i64>,
    /// The reviewer's note.
    pub approval_note: Option<String>,
    /// The registered repository it was built from.
    pub repository_id: Option<String>,
    /// Its package inside the repository (`drivers/pjlink`).
    pub package_path: Option<String>,
    /// The build that made it.
    pub build_id: Option<String>,
    /// The signed approval (a DSSE envelope), while approved.
    pub attestation: Option<crate::attestation::Envelope>,
    /// Registered, Unix ms.
    pub created_at: i64,
    /// Last changed, Unix ms.
    pub updated_at: i64,
}

/// A reviewer's decision, as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalDecision {
    /// The new state.
    pub approval: Approval,
    /// Why.
    pub note: Option<String>,
    /// When, Unix ms (the time the attestation states).
    pub at: i64,
    /// The signed statement of an approval.
    pub attestation: Option<crate::attestation::Envelope>,
}

/// What a new driver is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewDriver {
    /// Name.
    pub name: String,
    /// The component's bytes; the store computes the digest.
    pub component: Vec<u8>,
    /// The metadata read from the component.
    pub metadata: Value,
    /// Source repository.
    pub source_repo: Option<String>,
    /// Source commit.
    pub source_commit: Option<String>,
    /// The registered repository it was built from.
    pub repository_id: Option<String>,
    /// Its package inside the repository.
    pub package_path: Option<String>,
    /// The build that made it.
    pub build_id: Option<String>,
}

/// A module: one device (or logic) instance of a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModuleRecord {
    /// `mod-…`.
    pub id: String,
    /// Its driver.
    pub driver_id: String,
    /// `host:port` of the device (TCP, TLS, UDP drivers).
    pub endpoint: Option<String>,
    /// Base URI (HTTP drivers).
    pub uri: Option<String>,
    /// Name used instead of the driver's generic name in its systems.
    pub custom_name: Option<String>,
    /// Notes.
    pub notes: String,
    /// Whether it should be running.
    pub running: bool,
    /// Its home system: whose zones and settings merge into its settings and whose modules
    /// a logic driver may reach. The first system it was added to, while it stays there.
    pub system_id: Option<String>,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Last changed, Unix ms.
    pub updated_at: i64,
}

/// What a new module is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct NewModule {
    /// Its driver (required).
    pub driver_id: String,
    /// Device endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Base URI.
    #[serde(default)]
    pub uri: Option<String>,
    /// Custom name.
    #[serde(default)]
    pub custom_name: Option<String>,
    /// Notes.
    #[serde(default)]
    pub notes: String,
    /// Start it.
    #[serde(default)]
    pub running: bool,
}

/// A change to a module: each `Some` replaces that field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct ModulePatch {
    /// New endpoint (`Some(None)` clears it).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub endpoint: Option<Option<String>>,
    /// New base URI.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub uri: Option<Option<String>>,
    /// New custom name.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub custom_name: Option<Option<String>>,
    /// New notes.
    pub notes: Option<String>,
    /// Run or stop.
    pub running: Option<bool>,
    /// Move to another driver (an upgrade).
    pub driver_id: Option<String>,
}

/// A person who may sign in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    /// `user-…`.
    pub id: String,
    /// Email (unique).
    pub email: String,
    /// Username (unique).
    pub username: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Roles (`admin`, `support`, `user`, `reviewer`).
    pub roles: Vec<String>,
    /// Where they sign in: `local`, or the identity source's id.
    pub auth_source: String,
    /// Whether they may sign in; a deactivated user's tokens, sessions and keys are revoked.
    pub active: bool,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Last changed, Unix ms.
    pub updated_at: i64,
}

/// What a new user is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NewUser {
    /// Email (required).
    pub email: String,
    /// Username (defaults to the email).
    #[serde(default)]
    pub username: Option<String>,
    /// First name.
    #[serde(default)]
    pub first_name: String,
    /// Last name.
    #[serde(default)]
    pub last_name: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Identity source (required).
    pub auth_source: String,
}

/// A change to a user: each `Some` replaces that field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct UserPatch {
    /// New email.
    pub email: Option<String>,
    /// New username.
    pub username: Option<String>,
    /// New first name.
    pub first_name: Option<String>,
    /// New last name.
    pub last_name: Option<String>,
    /// New roles.
    pub roles: Option<Vec<String>>,
    /// Activate or deactivate: deactivating revokes every token, session and API key.
    pub active: Option<bool>,
}

/// A patch field that may be absent (leave it: `None`), `null` (clear it: `Some(None)`)
/// or a value (set it: `Some(Some(v))`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The roles a user may hold.
pub const ROLES: [&str; 4] = ["admin", "support", "user", "reviewer"];

/// A name: trimmed, not empty, at most 256 characters.
pub(crate) fn checked_name(field: &'static str, name: &str) -> super::Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(super::StoreError::invalid(field, "must not be empty"));
    }
    if name.chars().count() > 256 {
        return Err(super::StoreError::invalid(
            field,
            "must be at most 256 characters",
        ));
    }
    Ok(name.to_string())
}
