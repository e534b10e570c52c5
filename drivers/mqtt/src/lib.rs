//! An MQTT 3.1.1 client: connects to the broker configured as the module's endpoint,
//! publishes messages, and publishes the messages of its subscriptions as status.
//!
//! The wire format lives in pure modules (`frame` cuts packets out of the byte stream,
//! `packet` encodes and decodes them, `topic` checks topics) that the unit tests run
//! natively; this file is the glue to the host: settings, the session, timers, status and
//! the functions a front end can run.
//!
//! The host's tokenizers cannot split MQTT (its lengths are variable-length integers), so
//! the driver reads with `Tokenizer::Raw` and frames the stream itself: every chunk, from
//! `receive` or from the `received` hook, goes through one `frame::Framer`.

mod frame;
mod packet;
mod topic;

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use warden_driver_sdk::prelude::*;
use warden_driver_sdk::timers::Timer;

use crate::frame::Framer;
use crate::packet::{Connect, Packet, Publish};
use crate::topic::Qos;

/// The defaults a deployer sees; a unit test checks that they agree with serde's.
const DEFAULT_SETTINGS: &str =
    r#"{"keep_alive_s":60,"clean_session":true,"subscriptions":[],"reply_timeout_ms":5000}"#;

/// The tag of the keep-alive timer.
const KEEP_ALIVE: &str = "keep_alive";

/// The status key saying whether the broker accepted the session.
const BROKER_CONNECTED: &str = "broker_connected";

/// At most this many topics are remembered for `last` (the host allows 1,024 status keys).
const MAX_TOPICS: usize = 1000;

/// A password for the broker. Never logged: `Debug` prints no more than that it is set.
#[derive(Clone, PartialEq, Eq, Deserialize, Schema)]
#[serde(transparent)]
struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A topic filter to subscribe to when connected.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Schema)]
struct SubscriptionSetting {
    /// The topic filter, such as `building/+/temperature` or `site/#`.
    filter: String,
    /// The quality of service to ask for: 0 (at most once, the default) or 1 (at least
    /// once).
    #[serde(default)]
    qos: Qos,
}

/// Settings of an MQTT module.
#[derive(Debug, PartialEq, Deserialize, Schema)]
struct MqttSettings {
    /// The client identifier. Unset: `warden-` and 16 random hex digits, chosen when the
    /// module's sandbox starts and kept across reconnects. Set it when the broker's access
    /// rules name clients, and always when `clean_session` is false (a stored session
    /// needs an identifier that survives restarts). Two clients with the same identifier
    /// push each other off the broker.
    #[serde(default)]
    client_id: Option<String>,
    /// The user name to sign in with, if the broker asks for one.
    #[serde(default)]
    username: Option<String>,
    /// The password to sign in with (secret; needs `username`).
    #[serde(default)]
    #[schema(secret)]
    password: Option<Password>,
    /// Keep-alive in seconds: the broker drops the connection after 1.5 times this
    /// without a packet. The driver sends PINGREQ every half of it and reconnects when
    /// the broker does not answer. 0 turns keep-alive off.
    #[serde(default = "default_keep_alive_s")]
    keep_alive_s: u16,
    /// Topic filters to subscribe to on every connection. Each message that arrives is
    /// published as status under its topic: the payload parsed as JSON when it is JSON,
    /// else as a string.
    #[serde(default)]
    subscriptions: Vec<SubscriptionSetting>,
    /// Start every connection without the broker's stored session (subscriptions and
    /// queued QoS 1 messages). False needs `client_id`.
    #[serde(default = "default_clean_session")]
    clean_session: bool,
    /// How long to wait for each answer from the broker (CONNACK, SUBACK, PUBACK,
    /// UNSUBACK), in milliseconds.
    #[serde(default = "default_reply_timeout_ms")]
    reply_timeout_ms: u32,
}

fn default_keep_alive_s() -> u16 {
    60
}

fn default_clean_session() -> bool {
    true
}

fn default_reply_timeout_ms() -> u32 {
    5000
}

/// Checked settings: what a session is opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    client_id: String,
    username: Option<String>,
    password: Option<Password>,
    keep_alive_s: u16,
    clean_session: bool,
    subscriptions: Vec<(String, Qos)>,
    reply_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            client_id: String::new(),
            username: None,
            password: None,
            keep_alive_s: default_keep_alive_s(),
            clean_session: true,
            subscriptions: Vec::new(),
            reply_timeout: Duration::from_millis(default_reply_timeout_ms().into()),
        }
    }
}

impl Config {
    /// Check `settings`; `generated_id` is the client identifier when none is set.
    fn checked(settings: MqttSettings, generated_id: &str) -> Result<Config> {
        let client_id = match settings.client_id {
            Some(id) if id.is_empty() => {
                return Err(Error::invalid_arguments(
                    "client_id is empty: leave it unset for a generated one",
                ));
            }
            Some(id) => id,
            None if !settings.clean_session => {
                return Err(Error::invalid_arguments(
                    "clean_session false needs a client_id, so that the broker's stored \
                     session can be found again after a restart",
                ));
            }
            None => generated_id.to_string(),
        };
        for (name, value) in [
            ("client_id", Some(client_id.as_str())),
            ("username", settings.username.as_deref()),
            ("password", settings.password.as_ref().map(|p| p.0.as_str())),
        ] {
            if value.is_some_and(|value| value.len() > packet::MAX_STRING) {
                return Err(Error::invalid_arguments(format!(
                    "{name} is longer than {} bytes",
                    packet::MAX_STRING
                )));
            }
        }
        if settings.password.is_some() && settings.username.is_none() {
            return Err(Error::invalid_arguments(
                "password needs username (MQTT 3.1.1 sends no password without a user name)",
            ));
        }
        if settings.reply_timeout_ms == 0 {
            return Err(Error::invalid_arguments(
                "reply_timeout_ms must be at least 1",
            ));
        }
        let mut subscriptions = Vec::new();
        for subscription in settings.subscriptions {
            topic::check_filter(&subscription.filter).map_err(|error| {
                Error::invalid_arguments(format!(
                    "subscription {:?}: {error}",
                    shortened(&subscription.filter)
                ))
            })?;
            subscriptions.push((subscription.filter, subscription.qos));
        }
        Ok(Config {
            client_id,
            username: settings.username,
            password: settings.password,
            keep_alive_s: settings.keep_alive_s,
            clean_session: settings.clean_session,
            subscriptions,
            reply_timeout: Duration::from_millis(settings.reply_timeout_ms.into()),
        })
    }

    fn connect(&self) -> Connect<'_> {
        Connect {
            client_id: &self.client_id,
            username: self.username.as_deref(),
            password: self.password.as_ref().map(|password| password.0.as_str()),
            keep_alive_s: self.keep_alive_s,
            clean_session: self.clean_session,
        }
    }
}

/// The driver: one MQTT session on the host's connection to the broker.
#[derive(Debug, Default)]
struct Mqtt {
    config: Config,
    /// The client identifier used when the settings name none.
    generated_id: String,
    /// Bytes of the current connection not yet cut into packets.
    framer: Framer,
    /// The broker accepted CONNECT on the current connection.
    session_up: bool,
    /// A PINGREQ went out and its PINGRESP has not come yet.
    ping_outstanding: bool,
    /// The last packet id used (ids are 1 to 65535).
    packet_id: u16,
    /// The filters subscribed to on every connection: the settings' and `subscribe`'s.
    subscriptions: Vec<(String, Qos)>,
    keep_alive: Option<Timer>,
    /// The last message seen on each topic, for `last`.
    last: BTreeMap<String, Value>,
    /// The last session error logged, so that a broker refusing every reconnect does not
    /// fill the log.
    last_error: Option<String>,
    /// The broker's refusal of the last CONNECT, if it refused it.
    refusal: Option<Error>,
    /// `init` has applied settings at least once (the defaults, if it refused the first).
    configured: bool,
}

impl Driver for Mqtt {
    type Settings = MqttSettings;
    const INFO: DriverInfo = DriverInfo {
        name: "MQTT",
        generic_name: "MQTT",
        description: "MQTT 3.1.1 client: publishes messages to the broker, and publishes \
                      the messages of its subscriptions as status, keyed by topic.",
        version: env!("CARGO_PKG_VERSION"),
        transport: TransportKind::Tcp,
        default_port: Some(1883),
        default_settings: DEFAULT_SETTINGS,
    };

    fn init(&mut self, settings: MqttSettings) -> Result<()> {
        // MQTT frames itself (variable-length lengths): take every chunk as it arrives.
        transport::set_tokenizer(Tokenizer::Raw)?;
        if self.generated_id.is_empty() {
            self.generated_id = generated_client_id();
        }
        // Check everything before changing anything: refused settings leave the module
        // running as it was, and on the first start that is on the default settings.
        match Config::checked(settings, &self.generated_id) {
            Ok(config) => self.apply(config),
            Err(error) => {
                if !self.configured {
                    let defaults: MqttSettings = serde_json::from_str(DEFAULT_SETTINGS)?;
                    self.apply(Config::checked(defaults, &self.generated_id)?)?;
                }
                Err(error)
            }
        }
    }

    fn connected(&mut self) {
        // A function may already have opened the session on this connection.
        if self.session_up || !transport::is_connected() {
            return;
        }
        match self.open_session() {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    log::info("connected to the broker again");
                }
            }
            Err(error) => self.log_session_error(&error),
        }
    }

    fn disconnected(&mut self) {
        self.end_session();
    }

    fn received(&mut self, data: &[u8]) {
        if let Err(error) = self.take_chunk(data, &|_| false) {
            log::warn(&error.to_string());
        }
    }

    fn timer(&mut self, tag: &str) {
        if tag != KEEP_ALIVE || !self.session_up {
            return;
        }
        if self.ping_outstanding {
            log::warn("no PINGRESP from the broker within half the keep-alive; reconnecting");
            self.end_session();
            transport::disconnect();
            return;
        }
        match transport::send(packet::pingreq()) {
            Ok(()) => self.ping_outstanding = true,
            Err(error) => log::warn(&format!("sending PINGREQ: {error}")),
        }
    }
}

#[functions]
impl Mqtt {
    /// Publish `payload` to `topic` (no wildcards). A JSON string is sent as its text,
    /// any other JSON value as JSON. `qos` is 0 (the default) or 1; with 1 the function
    /// returns once the broker acknowledged the message (PUBACK). `retain` (default
    /// false) asks the broker to keep the message for later subscribers.
    pub fn publish(
        &mut self,
        topic: String,
        payload: Value,
        qos: Option<Qos>,
        retain: Option<bool>,
    ) -> Result<()> {
        topic::check_name(&topic).map_err(|error| {
            Error::invalid_arguments(format!(
                "cannot publish to {:?}: {error}",
                shortened(&topic)
            ))
        })?;
        let payload = match payload {
            Value::String(text) => text.into_bytes(),
            other => other.to_string().into_bytes(),
        };
        let qos = qos.unwrap_or_default();
        let size = packet::publish_size(&topic, &payload, qos);
        if size > frame::MAX_PACKET {
            return Err(Error::invalid_arguments(format!(
                "the message would be {size} bytes, more than {}",
                frame::MAX_PACKET
            )));
        }
        self.ensure_session()?;
        let id = self.next_packet_id();
        transport::send(packet::publish(
            &topic,
            &payload,
            qos,
            retain.unwrap_or(false),
            id,
        ))?;
        if qos == Qos::AtLeastOnce {
            self.wait_for("PUBACK", &|packet| *packet == Packet::PubAck(id))?;
        }
        Ok(())
    }

    /// Subscribe to `filter` (`+` and `#` wildcards allowed) with `qos` 0 (the default)
    /// or 1, on this connection and every later one until the settings change. Messages
    /// are published as status under their topic. Returns the QoS the broker granted.
    pub fn subscribe(&mut self, filter: String, qos: Option<Qos>) -> Result<u8> {
        check_filter(&filter)?;
        let qos = qos.unwrap_or_default();
        self.ensure_session()?;
        let granted = self.subscribe_now(&[(filter.as_str(), qos)])?;
        let granted = granted.first().copied().unwrap_or(0x80);
        if granted == 0x80 {
            return Err(Error::device(format!(
                "the broker refused the subscription to {:?}",
                shortened(&filter)
            )));
        }
        self.subscriptions.retain(|(known, _)| *known != filter);
        self.subscriptions.push((filter, qos));
        Ok(granted)
    }

    /// Unsubscribe from `filter`, exactly as it was subscribed to, on this connection and
    /// every later one until the settings change. Status already published stays.
    pub fn unsubscribe(&mut self, filter: String) -> Result<()> {
        check_filter(&filter)?;
        self.ensure_session()?;
        let id = self.next_packet_id();
        transport::send(packet::unsubscribe(id, &[filter.as_str()]))?;
        self.wait_for("UNSUBACK", &|packet| *packet == Packet::UnsubAck(id))?;
        self.subscriptions.retain(|(known, _)| *known != filter);
        Ok(())
    }

    /// The last message seen on `topic` since the module started (the payload as JSON
    /// when it is JSON, else as a string), or null.
    pub fn last(&self, topic: String) -> Option<Value> {
        self.last.get(&topic).cloned()
    }
}

impl Mqtt {
    /// Run on checked settings: replace the keep-alive timer, and start a new session when
    /// the settings of the running one changed.
    fn apply(&mut self, config: Config) -> Result<()> {
        if let Some(timer) = self.keep_alive.take() {
            timers::cancel(timer);
        }
        if config.keep_alive_s > 0 {
            let period_ms = (u32::from(config.keep_alive_s) * 1000 / 2).max(1000);
            self.keep_alive = Some(timers::every(
                KEEP_ALIVE,
                Duration::from_millis(period_ms.into()),
            )?);
        }
        self.configured = true;
        if config == self.config {
            return Ok(());
        }
        self.subscriptions = config.subscriptions.clone();
        self.config = config;
        if self.session_up {
            log::info("settings changed: reconnecting to the broker");
            // A clean DISCONNECT, so that the broker closes the session quietly.
            if let Err(error) = transport::send(packet::disconnect()) {
                log::debug(&format!("sending DISCONNECT: {error}"));
            }
            self.end_session();
            transport::disconnect();
        }
        Ok(())
    }

    fn next_packet_id(&mut self) -> u16 {
        self.packet_id = self.packet_id.checked_add(1).unwrap_or(1);
        self.packet_id
    }

    /// Open the session if the connection has none yet (a function can run before the
    /// `connected` hook of a new connection).
    fn ensure_session(&mut self) -> Result<()> {
        if self.session_up && !transport::is_connected() {
            // The connection closed and `disconnected` has not run yet: a message sent
            // now would go out on the next connection before its CONNECT.
            self.end_session();
        }
        if self.session_up {
            return Ok(());
        }
        self.open_session()
            .map_err(|error| match (error, &self.refusal) {
                // The refused connection was still closing: the refusal is the news.
                (Error::NotConnected(_), Some(refusal)) => refusal.clone(),
                (error, _) => error,
            })
            .inspect_err(|error| self.log_session_error(error))
    }

    /// CONNECT, wait for CONNACK, then SUBSCRIBE to every filter. Any failure closes the
    /// connection, so that the host's reconnect starts the next attempt afresh.
    fn open_session(&mut self) -> Result<()> {
        self.framer.clear();
        self.ping_outstanding = false;
        let outcome = self.handshake();
        if outcome.is_err() {
            self.end_session();
            transport::disconnect();
        }
        outcome
    }

    fn handshake(&mut self) -> Result<()> {
        transport::send(packet::connect(&self.config.connect()))?;
        let connack = self.wait_for("CONNACK", &|packet| {
            matches!(packet, Packet::ConnAck { .. })
        })?;
        match connack {
            Packet::ConnAck { code: 0, .. } => self.refusal = None,
            Packet::ConnAck { code, .. } => {
                let refusal = Error::device(packet::connack_refusal(code));
                self.refusal = Some(refusal.clone());
                return Err(refusal);
            }
            other => return Err(Error::failed(format!("expected CONNACK, got {other:?}"))),
        }
        self.session_up = true;
        let subscriptions = self.subscriptions.clone();
        if !subscriptions.is_empty() {
            let filters: Vec<(&str, Qos)> = subscriptions
                .iter()
                .map(|(filter, qos)| (filter.as_str(), *qos))
                .collect();
            let granted = self.subscribe_now(&filters)?;
            for ((filter, _), code) in subscriptions.iter().zip(granted) {
                if code == 0x80 {
                    log::warn(&format!(
                        "the broker refused the subscription to {:?}",
                        shortened(filter)
                    ));
                }
            }
        }
        publish_status(BROKER_CONNECTED, &true);
        Ok(())
    }

    /// SUBSCRIBE to `filters` and return the broker's code for each.
    fn subscribe_now(&mut self, filters: &[(&str, Qos)]) -> Result<Vec<u8>> {
        let id = self.next_packet_id();
        transport::send(packet::subscribe(id, filters))?;
        match self.wait_for(
            "SUBACK",
            &|packet| matches!(packet, Packet::SubAck { packet_id, .. } if *packet_id == id),
        )? {
            Packet::SubAck { codes, .. } if codes.len() == filters.len() => Ok(codes),
            other => Err(Error::device(format!(
                "SUBACK for {} filters: {other:?}",
                filters.len()
            ))),
        }
    }

    fn end_session(&mut self) {
        self.session_up = false;
        self.ping_outstanding = false;
        self.framer.clear();
        publish_status(BROKER_CONNECTED, &false);
    }

    fn log_session_error(&mut self, error: &Error) {
        let text = error.to_string();
        if self.last_error.as_ref() != Some(&text) {
            log::warn(&format!("connecting to the broker: {text}"));
            self.last_error = Some(text);
        }
    }

    /// Wait up to the reply timeout for a packet that `wanted` accepts, handling every
    /// other packet that arrives meanwhile (messages, PINGRESP) as it comes.
    fn wait_for(&mut self, what: &str, wanted: &dyn Fn(&Packet) -> bool) -> Result<Packet> {
        let timeout = self.config.reply_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let no_answer = || {
                Error::Timeout(format!(
                    "no {what} from the broker within {} ms",
                    timeout.as_millis()
                ))
            };
            if left.is_zero() {
                return Err(no_answer());
            }
            let chunk = transport::receive(left).map_err(|error| match error {
                Error::Timeout(_) => no_answer(),
                other => other,
            })?;
            if let Some(packet) = self.take_chunk(&chunk, wanted)? {
                return Ok(packet);
            }
        }
    }

    /// Frame `chunk`, return the first packet `wanted` accepts and handle the others.
    /// A stream that cannot be followed closes the connection.
    fn take_chunk(
        &mut self,
        chunk: &[u8],
        wanted: &dyn Fn(&Packet) -> bool,
    ) -> Result<Option<Packet>> {
        let broken = |this: &mut Mqtt, why: String| {
            this.end_session();
            transport::disconnect();
            Error::device(format!("{why}; reconnecting"))
        };
        let raw_packets = match self.framer.push(chunk) {
            Ok(packets) => packets,
            Err(error) => return Err(broken(self, format!("the broker's stream: {error}"))),
        };
        let mut found = None;
        for raw in raw_packets {
            match Packet::parse(&raw) {
                Ok(packet) if found.is_none() && wanted(&packet) => found = Some(packet),
                Ok(packet) => self.handle(packet),
                Err(error) => return Err(broken(self, error.to_string())),
            }
        }
        Ok(found)
    }

    /// A packet nobody waited for.
    fn handle(&mut self, packet: Packet) {
        match packet {
            Packet::Publish(message) => self.deliver(message),
            Packet::PingResp => self.ping_outstanding = false,
            Packet::Unexpected(kind) => {
                log::warn(&format!("ignored a packet of type {kind} from the broker"));
            }
            late => log::debug(&format!("ignored a late {late:?}")),
        }
    }

    /// An application message: acknowledge it (QoS 1), remember it, publish it.
    fn deliver(&mut self, message: Publish) {
        if let Some(id) = message.packet_id
            && let Err(error) = transport::send(packet::puback(id))
        {
            log::warn(&format!("sending PUBACK {id}: {error}"));
        }
        let value = payload_value(&message.payload);
        if message.topic == BROKER_CONNECTED || message.topic == "connected" {
            log::debug(&format!(
                "a message on `{}` is kept for `last` but not published as status: the key is \
                 the driver's own",
                message.topic
            ));
        } else {
            publish_status(&message.topic, &value);
        }
        if self.last.len() < MAX_TOPICS || self.last.contains_key(&message.topic) {
            self.last.insert(message.topic, value);
        }
    }
}

/// A payload as JSON when it is JSON, else as text (invalid UTF-8 replaced).
fn payload_value(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}

fn check_filter(filter: &str) -> Result<()> {
    topic::check_filter(filter).map_err(|error| {
        Error::invalid_arguments(format!("filter {:?}: {error}", shortened(filter)))
    })
}

/// At most the first 80 characters of a topic, for messages.
fn shortened(topic: &str) -> String {
    match topic.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", topic.get(..end).unwrap_or_default()),
        None => topic.to_string(),
    }
}

/// `warden-` and 16 hex digits from WASI's random source (through std's hash seed).
fn generated_client_id() -> String {
    format!("warden-{:016x}", RandomState::new().hash_one(0u8))
}

/// Publish a status value; a failure (too many keys, say) is logged, not returned.
fn publish_status<T: Serialize + ?Sized>(key: &str, value: &T) {
    if let Err(error) = status::set(key, value) {
        log::warn(&format!("publishing `{}`: {error}", shortened(key)));
    }
}

export_driver!(Mqtt);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: Value) -> MqttSettings {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn default_settings_agree_with_the_serde_defaults() {
        let declared: MqttSettings = serde_json::from_str(DEFAULT_SETTINGS).unwrap();
        assert_eq!(declared, settings(json!({})));
        let config = Config::checked(declared, "warden-x").unwrap();
        assert_eq!(
            config,
            Config {
                client_id: "warden-x".into(),
                ..Config::default()
            }
        );
    }

    #[test]
    fn settings_schema_describes_every_setting() {
        const SCHEMA: &[u8] = &warden_driver_sdk::json_bytes!(<MqttSettings as Schema>::SCHEMA);
        let schema: Value = serde_json::from_slice(SCHEMA).unwrap();
        for key in [
            "client_id",
            "username",
            "password",
            "keep_alive_s",
            "subscriptions",
            "clean_session",
            "reply_timeout_ms",
        ] {
            assert!(
                schema["properties"][key]["description"].is_string(),
                "{key}: {schema}"
            );
        }
        assert_eq!(schema["required"], json!([]), "every setting has a default");
    }

    #[test]
    fn settings_are_checked() {
        let refused = |json: Value| {
            Config::checked(settings(json), "g")
                .unwrap_err()
                .to_string()
        };
        assert!(refused(json!({"clean_session": false})).contains("needs a client_id"));
        assert!(refused(json!({"client_id": ""})).contains("client_id is empty"));
        assert!(refused(json!({"password": "pw"})).contains("password needs username"));
        assert!(refused(json!({"reply_timeout_ms": 0})).contains("reply_timeout_ms"));
        assert!(refused(json!({"subscriptions": [{"filter": "a/#/b"}]})).contains("subscription"));
        assert!(
            serde_json::from_value::<MqttSettings>(
                json!({"subscriptions": [{"filter": "a", "qos": 2}]})
            )
            .is_err()
        );
        let config = Config::checked(
            settings(json!({
                "client_id": "me", "clean_session": false, "username": "u", "password": "pw",
                "subscriptions": [{"filter": "a/+", "qos": 1}, {"filter": "#"}]
            })),
            "g",
        )
        .unwrap();
        assert_eq!(config.client_id, "me");
        assert_eq!(
            config.subscriptions,
            vec![
                ("a/+".into(), Qos::AtLeastOnce),
                ("#".into(), Qos::AtMostOnce)
            ]
        );
    }

    #[test]
    fn the_password_is_never_printed() {
        let parsed = settings(json!({"username": "u", "password": "hunter2"}));
        assert!(!format!("{parsed:?}").contains("hunter2"));
        let config = Config::checked(parsed, "g").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn payloads_become_json_or_text() {
        assert_eq!(payload_value(br#"{"t": 21.5}"#), json!({"t": 21.5}));
        assert_eq!(payload_value(b"42"), json!(42));
        assert_eq!(payload_value(b"hello"), json!("hello"));
        assert_eq!(payload_value(b""), json!(""));
        assert_eq!(payload_value(&[0x66, 0xff]), json!("f\u{fffd}"));
    }

    #[test]
    fn long_topics_are_shortened_in_messages() {
        assert_eq!(shortened("a/b"), "a/b");
        let long = "é".repeat(100);
        assert_eq!(shortened(&long).chars().count(), 81);
    }

    #[test]
    fn generated_ids_look_alike_and_differ() {
        let (one, two) = (generated_client_id(), generated_client_id());
        assert!(one.starts_with("warden-") && one.len() == 23, "{one}");
        assert_ne!(one, two);
    }
}
