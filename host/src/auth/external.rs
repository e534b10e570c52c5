//! Signing in a person whom an external identity provider vouched for (SAML2, OpenID
//! Connect). The protocol modules verify the provider's answer and reduce it to an
//! [`ExternalIdentity`]; [`Auth::sign_in_external`] turns that into a user of this host
//! and a browser session, the same session a local sign-in starts, so the authorization
//! server continues from there unchanged. Warden never sees the person's password.
//!
//! A user belongs to one identity source (`auth_source`): an identity from source A never
//! signs in a user of source B or a local account with the same email, since that would
//! let whoever controls A's directory take over B's (or a local administrator's) account.
//! The first sign-in creates the user; each later one refreshes their names, and their
//! roles when the source maps roles. Deactivated users stay out.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::json;

use super::secret::Secret;
use super::{Auth, AuthError, LOCAL_SOURCE};
use crate::store::{Actor, NewAuditEntry, NewUser, ROLES, SessionRecord, User, UserPatch};

/// Who an identity provider says signed in, after its answer was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The identity source's id (from `warden.toml`), which becomes the user's
    /// `auth_source`.
    pub source: String,
    /// Email address (the login name on this host).
    pub email: String,
    /// First name, when the provider sent one.
    pub first_name: Option<String>,
    /// Last name, when the provider sent one.
    pub last_name: Option<String>,
    /// Roles mapped from the provider's attributes or claims; `None` when the source
    /// maps none (the user keeps the roles an administrator gave them, `user` at first).
    pub roles: Option<Vec<String>>,
}

/// Why an identity source's `id` cannot be used, if it cannot: it is 1 to 64 lower-case
/// letters, digits, `-` and `_`, and not `local`. (Uniqueness among the sources of one
/// protocol is the caller's check.)
pub fn source_id_problem(id: &str) -> Option<String> {
    let well_formed = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    (!well_formed || id == LOCAL_SOURCE).then(|| {
        format!(
            "{id:?} must be 1 to 64 lower-case letters, digits, '-' or '_', and not \
             {LOCAL_SOURCE:?}"
        )
    })
}

/// Why a source's role mapping (provider value → Warden role) cannot be used, if it
/// cannot: a value mapped to something that is not a Warden role.
pub fn role_map_problem(map: &BTreeMap<String, String>) -> Option<String> {
    map.iter()
        .find(|(_, role)| !ROLES.contains(&role.as_str()))
        .map(|(value, role)| {
            format!(
                "{value:?} maps to {role:?}, which is not one of {}",
                ROLES.join(", ")
            )
        })
}

/// The Warden roles that a provider's `values` give through `map`, sorted and once each;
/// `user` when none maps.
pub fn mapped_roles<'a>(
    values: impl IntoIterator<Item = &'a str>,
    map: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut roles: Vec<String> = values
        .into_iter()
        .filter_map(|value| map.get(value).cloned())
        .collect();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        roles.push("user".to_string());
    }
    roles
}

impl Auth {
    /// Sign in `identity` from `address`: find or create its user, refresh what the
    /// provider says about them, and start a browser session (its cookie and record).
    pub async fn sign_in_external(
        &self,
        identity: &ExternalIdentity,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<(Secret, SessionRecord), AuthError> {
        let store = self.store();
        let actor = Actor::host();
        let email = identity.email.trim().to_lowercase();
        let user: User = match store.user_by_login(&email).await? {
            Some(user) if user.auth_source != identity.source => {
                store
                    .audit(
                        &NewAuditEntry::new(&actor, "user.sign_in_failed", "user", &user.id)
                            .details(json!({"source": identity.source,
                                            "reason": "the user belongs to another source",
                                            "address": address.map(|a| a.to_string())})),
                    )
                    .await?;
                return Err(AuthError::WrongSource {
                    identity_source: identity.source.clone(),
                });
            }
            Some(user) => {
                let patch = UserPatch {
                    first_name: identity.first_name.clone(),
                    last_name: identity.last_name.clone(),
                    roles: identity.roles.clone(),
                    ..UserPatch::default()
                };
                let changed = patch
                    .first_name
                    .as_ref()
                    .is_some_and(|n| *n != user.first_name)
                    || patch
                        .last_name
                        .as_ref()
                        .is_some_and(|n| *n != user.last_name)
                    || patch.roles.as_ref().is_some_and(|r| *r != user.roles);
                if changed {
                    let updated = store.update_user(&actor, &user.id, &patch).await?;
                    self.forget_user(&user.id);
                    updated
                } else {
                    user
                }
            }
            None => {
                store
                    .create_user(
                        &actor,
                        &NewUser {
                            email: email.clone(),
                            username: None,
                            first_name: identity.first_name.clone().unwrap_or_default(),
                            last_name: identity.last_name.clone().unwrap_or_default(),
                            roles: identity
                                .roles
                                .clone()
                                .unwrap_or_else(|| vec!["user".to_string()]),
                            auth_source: identity.source.clone(),
                        },
                    )
                    .await?
            }
        };
        if !user.active {
            return Err(AuthError::Deactivated);
        }
        // The session's record is audited as `user.sign_in` with its source.
        let session = self
            .start_session(&user, &identity.source, address, now)
            .await?;
        Ok(session)
    }
}
