//! How a module reaches its device: the grant for its configuration, and the link its
//! driver's transport kind calls for (TCP, TLS, UDP, HTTP or none), built from the
//! module's configuration and merged settings. Settings that configure the link (TLS
//! trust, HTTP authentication) are checked here before a module starts or takes new
//! settings, so a bad value is refused with a clear error and the old one kept.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::ModuleConfig;
use crate::capability::{Endpoint, Grant};
use crate::component::TransportKind;
use crate::transport::http::{HttpAuth, SETTING_AUTH};
use crate::transport::tls::{self, Alpn, DeviceTls};
use crate::transport::{Connection, HttpLink, Link, TransportEvent, UdpLink};

/// What a module talks to its device through.
pub(crate) enum DeviceLink {
    /// A stream or datagram link (the `transport` interface).
    Stream(Link),
    /// An HTTP client (the `http` interface).
    Http(Arc<HttpLink>),
}

/// The grant of a module: its endpoint or base URI, the broadcast permission and the
/// modules of its system.
pub(crate) fn grant(id: &str, config: &ModuleConfig, members: BTreeSet<String>) -> Grant {
    let endpoint = match config.driver.metadata().transport {
        TransportKind::Http | TransportKind::Logic => None,
        TransportKind::Tcp | TransportKind::Tls | TransportKind::Udp => config.endpoint.clone(),
    };
    let grant = Grant::new(id, endpoint, members)
        .with_broadcast(config.connection.allow_broadcast)
        .in_a_system(config.system.is_some());
    match (&config.base_uri, config.driver.metadata().transport) {
        (Some(base), TransportKind::Http) => grant.with_base_uri(base.clone()),
        _ => grant,
    }
}

/// Check the link-related settings in `merged` for `config`'s transport kind.
pub(crate) fn check(config: &ModuleConfig, merged: &Value) -> Result<(), String> {
    let kind = config.driver.metadata().transport;
    match kind {
        TransportKind::Tls => {
            let host = config.endpoint.as_ref().map_or("", |e| e.host.as_str());
            DeviceTls::from_settings(merged, host, Alpn::None).map_err(|e| e.to_string())?;
        }
        TransportKind::Http => {
            let host = config
                .base_uri
                .as_ref()
                .map_or("", |base| base.origin.endpoint.host.as_str());
            HttpAuth::from_settings(merged).map_err(|e| e.to_string())?;
            let https = config
                .base_uri
                .as_ref()
                .is_some_and(|base| base.origin.scheme == crate::capability::Scheme::Https);
            if https {
                DeviceTls::from_settings(merged, host, Alpn::Http1).map_err(|e| e.to_string())?;
            } else if tls::mentions_tls(merged) {
                return Err("TLS settings are given but the base URI is http://".to_string());
            }
        }
        TransportKind::Tcp | TransportKind::Udp | TransportKind::Logic => {
            if tls::mentions_tls(merged) {
                return Err(format!(
                    "TLS settings are given but the driver's transport is {}",
                    kind_name(kind)
                ));
            }
        }
    }
    if kind != TransportKind::Http && merged.get(SETTING_AUTH).is_some_and(|v| !v.is_null()) {
        return Err(format!(
            "`{SETTING_AUTH}` is given but the driver's transport is {}",
            kind_name(kind)
        ));
    }
    Ok(())
}

fn kind_name(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Tcp => "plain TCP",
        TransportKind::Tls => "TLS",
        TransportKind::Udp => "UDP",
        TransportKind::Http => "HTTP",
        TransportKind::Logic => "none (a logic driver)",
    }
}

/// The part of `merged` the link is built from; when it changes, the link is rebuilt.
pub(crate) fn link_settings(merged: &Value) -> Value {
    let keys = [
        tls::SETTING_CA_PEM,
        tls::SETTING_FINGERPRINT,
        tls::SETTING_SERVER_NAME,
        tls::SETTING_DANGER,
        SETTING_AUTH,
    ];
    let subset: Map<String, Value> = keys
        .iter()
        .filter_map(|key| {
            merged
                .get(*key)
                .map(|value| (key.to_string(), value.clone()))
        })
        .collect();
    Value::Object(subset)
}

/// Build the link of a module whose settings passed [`check`]. `None` for a logic
/// module (or one without an endpoint).
pub(crate) fn open(
    config: &ModuleConfig,
    grant: &Arc<Grant>,
    merged: &Value,
    events: mpsc::Sender<TransportEvent>,
) -> Result<Option<DeviceLink>, String> {
    let kind = config.driver.metadata().transport;
    let endpoint: Option<&Endpoint> = config.endpoint.as_ref();
    let mut options = config.connection.clone();
    Ok(match (kind, endpoint) {
        (TransportKind::Http, _) => Some(DeviceLink::Http(Arc::new(
            HttpLink::new(
                Arc::clone(grant),
                merged,
                config.http.clone(),
                options.connect_timeout,
                options.keepalive,
                events,
            )
            .map_err(|e| e.to_string())?,
        ))),
        (TransportKind::Udp, Some(endpoint)) => Some(DeviceLink::Stream(Link::Udp(
            UdpLink::spawn(endpoint.clone(), Arc::clone(grant), options, events),
        ))),
        (TransportKind::Tls, Some(endpoint)) => {
            options.tls = Some(
                DeviceTls::from_settings(merged, &endpoint.host, Alpn::None)
                    .map_err(|e| e.to_string())?,
            );
            Some(DeviceLink::Stream(Link::Tcp(Connection::spawn(
                endpoint.clone(),
                Arc::clone(grant),
                options,
                events,
            ))))
        }
        (TransportKind::Tcp, Some(endpoint)) => Some(DeviceLink::Stream(Link::Tcp(
            Connection::spawn(endpoint.clone(), Arc::clone(grant), options, events),
        ))),
        (TransportKind::Tcp | TransportKind::Tls | TransportKind::Udp, None)
        | (TransportKind::Logic, _) => None,
    })
}
