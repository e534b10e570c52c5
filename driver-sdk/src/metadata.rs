//! The metadata a driver carries in its component.

use crate::schema::{Node, Schema};
use crate::{Driver, Functions};

/// What a driver is, declared once as [`Driver::INFO`].
#[derive(Debug, Clone, Copy)]
pub struct DriverInfo {
    /// The driver's name, such as `PJLink projector`.
    pub name: &'static str,
    /// What kind of device it drives, such as `Projector`. Modules of this driver are named
    /// after it in a system: `Projector_1`, `Projector_2`.
    pub generic_name: &'static str,
    /// What the driver does, for the people who choose and review it.
    pub description: &'static str,
    /// The driver's version, usually `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// How the driver reaches its device.
    pub transport: TransportKind,
    /// The port the device usually listens on.
    pub default_port: Option<u16>,
    /// Default settings as a JSON object, merged under every other settings level.
    pub default_settings: &'static str,
}

/// How a driver reaches its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// A TCP stream to the module's `host:port`.
    Tcp,
    /// A TLS stream to the module's `host:port`.
    Tls,
    /// UDP datagrams to and from the module's `host:port`.
    Udp,
    /// HTTP requests relative to the module's base URI.
    Http,
    /// No device: a logic driver that works through other modules of its system.
    Logic,
}

impl TransportKind {
    const fn as_json(self) -> &'static str {
        match self {
            TransportKind::Tcp => r#""tcp""#,
            TransportKind::Tls => r#""tls""#,
            TransportKind::Udp => r#""udp""#,
            TransportKind::Http => r#""http""#,
            TransportKind::Logic => r#""logic""#,
        }
    }
}

/// Version of the metadata document's layout.
const FORMAT: u64 = 1;

/// The metadata document of a driver, as a constant JSON tree.
pub trait Metadata {
    /// The document.
    const METADATA: Node;
}

impl<D: Driver + Functions> Metadata for D {
    const METADATA: Node = Node::Seq(&[
        Node::Raw(r#"{"format":"#),
        Node::Uint(FORMAT),
        Node::Raw(r#","wit":"#),
        Node::Str(crate::WIT_VERSION),
        Node::Raw(r#","sdk":"#),
        Node::Str(crate::SDK_VERSION),
        Node::Raw(r#","name":"#),
        Node::Str(D::INFO.name),
        Node::Raw(r#","generic_name":"#),
        Node::Str(D::INFO.generic_name),
        Node::Raw(r#","description":"#),
        Node::Str(D::INFO.description),
        Node::Raw(r#","version":"#),
        Node::Str(D::INFO.version),
        Node::Raw(r#","transport":"#),
        Node::Raw(D::INFO.transport.as_json()),
        Node::Raw(r#","default_port":"#),
        match D::INFO.default_port {
            Some(port) => Node::Uint(port as u64),
            None => Node::Opt(None),
        },
        Node::Raw(r#","settings_schema":"#),
        <D::Settings as Schema>::SCHEMA,
        Node::Raw(r#","default_settings":"#),
        Node::Raw(D::INFO.default_settings),
        Node::Raw(r#","functions":"#),
        D::FUNCTIONS,
        Node::Raw("}"),
    ]);
}
