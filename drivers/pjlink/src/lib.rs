//! PJLink class 1 projector driver.
//!
//! PJLink is the projector industry's common control protocol: a line-based exchange over
//! TCP port 4352 (the `protocol` module has the wire format). The host owns the
//! connection. On every new connection the projector greets first, and the greeting says
//! whether (and with which random number) the session must be authenticated, so the driver
//! tracks one `Session` per connection: it reads the greeting in [`Driver::connected`], or
//! before a command when the command is what opened the connection (make-break mode).
//!
//! Projectors keep the connection open between commands and close it after about 30
//! seconds of silence; some close it after every command, and all of them after a wrong
//! password. The host reconnects; a command whose connection closed under it is sent once
//! more on the next connection, after that connection's greeting.
//!
//! The host delivers connection events that happen during a call only after the call, so
//! a hook may describe a connection a call has already moved past: the hooks check the
//! connection's current state instead of trusting the event's order.

mod md5;
mod protocol;

use std::fmt;

use warden_driver_sdk::prelude::*;
use warden_driver_sdk::timers::Timer;

use protocol::{
    ErrorReport, Greeting, Input, InputCode, Lamp, MuteState, MuteTarget, PowerState,
    ProjectorError, Request,
};

/// How long a command waits for its reply unless `request_timeout_ms` says otherwise.
/// The spec lets a projector take a few seconds, for example while it starts up.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Polling faster than this only keeps the projector busy.
const MIN_POLL_PERIOD: Duration = Duration::from_secs(1);

/// Tag of the polling timer.
const POLL_TIMER: &str = "poll";

/// At most this many buffered messages are looked through before a command; a device
/// that sends more unasked is not a PJLink projector.
const MAX_BUFFERED: usize = 16;

/// A PJLink password. Never logged.
// A newtype so that `Debug` (and so any log line made from the settings) never prints it.
#[derive(Clone, Deserialize, Schema)]
#[serde(transparent)]
struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Settings of a PJLink projector module.
#[derive(Debug, Default, Deserialize, Schema)]
struct PjlinkSettings {
    /// The projector's PJLink password. Leave it unset when the projector has PJLink
    /// authentication turned off.
    #[serde(default)]
    #[schema(secret)]
    password: Option<Password>,
    /// Query power, lamp hours and error status this often, in milliseconds (at least
    /// 1000), and publish them as status. Unset or 0: no polling.
    #[serde(default)]
    poll_every_ms: Option<u32>,
    /// How long to wait for each reply from the projector, in milliseconds (default 5000).
    #[serde(default)]
    request_timeout_ms: Option<u32>,
}

/// Where the current connection's PJLink session stands.
#[derive(Debug, Default)]
enum Session {
    /// A connection is (or will be) opened and its greeting has not been read yet.
    #[default]
    AwaitingGreeting,
    /// The greeting was read. `challenge` holds the random number of an authenticated
    /// session until the first command carried the digest made from it.
    Greeted { challenge: Option<String> },
}

#[derive(Debug)]
struct Pjlink {
    password: Option<Password>,
    request_timeout: Duration,
    poll_timer: Option<Timer>,
    session: Session,
}

impl Default for Pjlink {
    fn default() -> Self {
        Pjlink {
            password: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            poll_timer: None,
            session: Session::AwaitingGreeting,
        }
    }
}

impl Driver for Pjlink {
    type Settings = PjlinkSettings;
    const INFO: DriverInfo = DriverInfo {
        name: "PJLink projector",
        generic_name: "Projector",
        description: "Controls a projector or display over PJLink class 1 (TCP port 4352): \
                      power, input, audio/video mute, error status, lamp hours and \
                      identity, with PJLink's MD5 authentication when a password is set.",
        version: env!("CARGO_PKG_VERSION"),
        transport: TransportKind::Tcp,
        default_port: Some(4352),
        default_settings: r#"{"request_timeout_ms":5000}"#,
    };

    fn init(&mut self, settings: PjlinkSettings) -> Result<()> {
        // Replies end with a carriage return, which the host strips.
        transport::set_tokenizer(Tokenizer::Delimiter(b"\r".to_vec()))?;
        self.password = settings.password.filter(|password| !password.0.is_empty());
        self.request_timeout = settings
            .request_timeout_ms
            .filter(|ms| *ms > 0)
            .map_or(DEFAULT_REQUEST_TIMEOUT, |ms| {
                Duration::from_millis(u64::from(ms))
            });
        if let Some(timer) = self.poll_timer.take() {
            timers::cancel(timer);
        }
        if let Some(ms) = settings.poll_every_ms.filter(|ms| *ms > 0) {
            let mut period = Duration::from_millis(u64::from(ms));
            if period < MIN_POLL_PERIOD {
                log::warn(&format!(
                    "poll_every_ms {ms} is below the minimum; polling every {} ms",
                    MIN_POLL_PERIOD.as_millis()
                ));
                period = MIN_POLL_PERIOD;
            }
            self.poll_timer = Some(timers::every(POLL_TIMER, period)?);
        }
        Ok(())
    }

    fn connected(&mut self) {
        if !transport::is_connected() {
            // That connection is gone already; reading now would open another one in
            // make-break mode. The next command reads the next greeting.
            self.session = Session::AwaitingGreeting;
            return;
        }
        // A call that needed the connection may have opened it and read its greeting
        // already (the host delivers this hook after that call); then only pick up what
        // is buffered.
        let result = match self.session {
            Session::AwaitingGreeting => self.read_greeting(false),
            Session::Greeted { .. } => self.take_buffered(),
        };
        if let Err(error) = result {
            // The next command tries again, and reports the error if it persists.
            log::warn(&format!("reading the PJLink greeting: {error}"));
        }
    }

    fn disconnected(&mut self) {
        // When a newer connection is already up, this notice is about an older one, and a
        // call may have read the newer one's greeting meanwhile: keep that session.
        if !transport::is_connected() {
            self.session = Session::AwaitingGreeting;
        }
    }

    fn received(&mut self, data: &[u8]) {
        let line = String::from_utf8_lossy(data);
        match Greeting::parse(&line) {
            // A greeting only ever starts a connection: whatever session we thought we had
            // is over, and this one starts now.
            Ok(greeting) => {
                log::debug("read the PJLink greeting outside a call");
                self.start_session(greeting);
            }
            Err(ProjectorError::AuthenticationFailed) => {
                self.session = Session::AwaitingGreeting;
                log::error(&ProjectorError::AuthenticationFailed.to_string());
            }
            Err(_) => log::debug(&format!("ignored unsolicited message {line:?}")),
        }
    }

    fn timer(&mut self, tag: &str) {
        if tag == POLL_TIMER {
            self.poll();
        }
    }
}

#[functions]
impl Pjlink {
    /// Switch the projector on (`true`) or to standby (`false`). Returns the power state
    /// the projector reports afterwards, which is `warming` or `cooling` while it changes.
    pub fn power(&mut self, state: bool) -> Result<PowerState> {
        self.exchange(&Request::set("POWR", if state { "1" } else { "0" }))?;
        match self.power_state() {
            Ok(power) => Ok(power),
            Err(error) => {
                // The command was accepted; only the follow-up query failed.
                log::warn(&format!("querying power after switching it: {error}"));
                let assumed = if state {
                    PowerState::Warming
                } else {
                    PowerState::Cooling
                };
                publish_power(assumed);
                Ok(assumed)
            }
        }
    }

    /// The power state: `off` (standby), `on`, `cooling` or `warming`.
    pub fn power_state(&mut self) -> Result<PowerState> {
        let power = PowerState::parse(&self.exchange(&Request::query("POWR"))?)?;
        publish_power(power);
        Ok(power)
    }

    /// Select an input by its PJLink code, such as `31` (kind digit: 1 rgb, 2 video,
    /// 3 digital, 4 storage, 5 network; then the number 1-9), or by the spec's name for
    /// it, such as `digital1`. `info` lists the projector's inputs. Returns the code.
    pub fn switch_to(&mut self, input: String) -> Result<String> {
        let code = InputCode::from_request(&input)
            .map_err(Error::invalid_arguments)?
            .to_string();
        self.exchange(&Request::set("INPT", code.as_str()))?;
        publish("input", &code);
        Ok(code)
    }

    /// The selected input's code. Projectors answer this only while on.
    pub fn current_input(&mut self) -> Result<String> {
        let code = InputCode::parse(&self.exchange(&Request::query("INPT"))?)?.to_string();
        publish("input", &code);
        Ok(code)
    }

    /// Mute (`true`) or unmute (`false`) the picture, the sound, or both (the default).
    /// Projectors accept this only while on. Returns the mute state afterwards.
    pub fn mute(&mut self, state: bool, kind: Option<MuteTarget>) -> Result<MuteState> {
        let target = kind.unwrap_or(MuteTarget::Both);
        self.exchange(&Request::set("AVMT", target.param(state)))?;
        self.mute_state()
    }

    /// Whether the picture and the sound are muted.
    pub fn mute_state(&mut self) -> Result<MuteState> {
        let mute = MuteState::parse(&self.exchange(&Request::query("AVMT"))?)?;
        publish("mute", &(mute.video && mute.audio));
        publish("video_mute", &mute.video);
        publish("audio_mute", &mute.audio);
        Ok(mute)
    }

    /// The projector's error status: fan, lamp, temperature, cover, filter and other, each
    /// `ok`, `warning` or `error`.
    pub fn errors(&mut self) -> Result<ErrorReport> {
        let report = ErrorReport::parse(&self.exchange(&Request::query("ERST"))?)?;
        publish("errors", &report);
        Ok(report)
    }

    /// Hours and on/off state of each lamp (or light source), in the projector's order.
    pub fn lamp_hours(&mut self) -> Result<Vec<Lamp>> {
        let lamps = protocol::parse_lamps(&self.exchange(&Request::query("LAMP"))?)?;
        if let Some(first) = lamps.first() {
            publish("lamp_hours", &first.hours);
        }
        publish("lamps", &lamps);
        Ok(lamps)
    }

    /// The projector's name, manufacturer, product name, highest PJLink class, and inputs.
    pub fn info(&mut self) -> Result<ProjectorInfo> {
        let info = ProjectorInfo {
            name: self.exchange(&Request::query("NAME"))?,
            manufacturer: self.exchange(&Request::query("INF1"))?,
            product: self.exchange(&Request::query("INF2"))?,
            class: protocol::parse_class(&self.exchange(&Request::query("CLSS"))?)?,
            inputs: protocol::parse_inputs(&self.exchange(&Request::query("INST"))?)?,
        };
        publish("name", &info.name);
        publish("inputs", &info.inputs);
        Ok(info)
    }

    /// Send one class 1 command, such as `INF1` with `?`, and return the value of the reply
    /// (after `=`). For commissioning and for commands this driver has no function for.
    #[level(support)]
    pub fn raw_command(&mut self, command: String, param: String) -> Result<String> {
        let request = Request::parse(&command, &param).map_err(Error::invalid_arguments)?;
        self.exchange(&request)
    }
}

/// Identity and inputs of the projector.
#[derive(Debug, Serialize, Schema)]
struct ProjectorInfo {
    /// The name the projector was given (`NAME`).
    name: String,
    /// Manufacturer (`INF1`).
    manufacturer: String,
    /// Product name (`INF2`).
    product: String,
    /// Highest PJLink class the projector supports (`CLSS`).
    class: u8,
    /// Input terminals (`INST`).
    inputs: Vec<Input>,
}

impl Pjlink {
    /// Send one command and return the value of its reply.
    fn exchange(&mut self, request: &Request) -> Result<String> {
        let was_greeted = matches!(self.session, Session::Greeted { .. });
        match self.exchange_once(request) {
            // The connection in use closed under the command: the projector closes it
            // after 30 s of silence, and some after every command. Class 1 commands set a
            // value or ask for one, so sending again on the next connection is safe.
            Err(Error::NotConnected(reason)) if was_greeted => {
                log::debug(&format!(
                    "{reason}; sending {} again on a new connection",
                    request.command()
                ));
                self.session = Session::AwaitingGreeting;
                self.exchange_once(request)
            }
            other => other,
        }
    }

    fn exchange_once(&mut self, request: &Request) -> Result<String> {
        self.prepare_session()?;
        let digest = self.take_digest()?;
        let reply = transport::request(request.line(digest.as_deref()), self.request_timeout);
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                if digest.is_some() {
                    // Whether the projector took the digest is unknown: start afresh.
                    self.session = Session::AwaitingGreeting;
                    if transport::is_connected() {
                        transport::disconnect();
                    }
                }
                return Err(error.context(request.command()));
            }
        };
        let mut line = String::from_utf8_lossy(&reply).into_owned();
        if let Ok(greeting) = Greeting::parse(&line) {
            // The connection was replaced just before the command went out, so the new
            // one's greeting came first. Without authentication the projector answers the
            // command next; with it, the command lacked the digest and is refused.
            let challenged = matches!(greeting, Greeting::Challenge(_));
            self.start_session(greeting);
            let reply = transport::receive(self.request_timeout)
                .map_err(|error| error.context(request.command()))?;
            line = String::from_utf8_lossy(&reply).into_owned();
            if challenged && line == protocol::AUTH_FAILURE {
                self.session = Session::AwaitingGreeting;
                return Err(Error::NotConnected(format!(
                    "{}: the projector reconnected and asked for authentication before \
                     the command",
                    request.command()
                )));
            }
        }
        request.parse_reply(&line).map_err(|error| {
            if error == ProjectorError::AuthenticationFailed {
                // The projector closes the connection after refusing the digest.
                self.session = Session::AwaitingGreeting;
            }
            error.into()
        })
    }

    /// Make sure the session belongs to the open connection before a command goes out.
    fn prepare_session(&mut self) -> Result<()> {
        if matches!(self.session, Session::Greeted { .. }) && transport::is_connected() {
            match self.take_buffered() {
                Ok(()) => return Ok(()),
                // The connection the session belonged to closed; wait for the next one.
                Err(error) => log::debug(&format!("before sending: {error}")),
            }
        }
        self.session = Session::AwaitingGreeting;
        self.read_greeting(true)
    }

    /// Take the messages that arrived while no call waited. A greeting among them means
    /// the connection was replaced, and starts the new session; anything else is a late
    /// reply to a command that timed out, and is dropped.
    fn take_buffered(&mut self) -> Result<()> {
        for _ in 0..MAX_BUFFERED {
            match transport::receive(Duration::ZERO) {
                Ok(message) => {
                    let line = String::from_utf8_lossy(&message);
                    match Greeting::parse(&line) {
                        Ok(greeting) => self.start_session(greeting),
                        Err(_) => log::debug(&format!("dropped late message {line:?}")),
                    }
                }
                Err(Error::Timeout(_)) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Wait for the greeting of the current connection and start its session. With
    /// `through_close`, a wait that ends on the close of the previous connection goes on
    /// to the next connection's greeting (opening it, in make-break mode).
    fn read_greeting(&mut self, through_close: bool) -> Result<()> {
        let mut line = transport::receive(self.request_timeout);
        if through_close && matches!(line, Err(Error::NotConnected(_))) {
            line = transport::receive(self.request_timeout);
        }
        let line = line.map_err(|error| error.context("waiting for the PJLink greeting"))?;
        let greeting = Greeting::parse(&String::from_utf8_lossy(&line))?;
        self.start_session(greeting);
        Ok(())
    }

    fn start_session(&mut self, greeting: Greeting) {
        let challenge = match greeting {
            Greeting::Open => None,
            Greeting::Challenge(random) => Some(random),
        };
        self.session = Session::Greeted { challenge };
    }

    /// The digest the next command must carry: `Some` once per authenticated session.
    fn take_digest(&mut self) -> Result<Option<String>> {
        let Session::Greeted { challenge } = &mut self.session else {
            return Ok(None);
        };
        let Some(random) = challenge.as_deref() else {
            return Ok(None);
        };
        let Some(password) = &self.password else {
            return Err(ProjectorError::PasswordRequired.into());
        };
        let digest = Greeting::digest(random, &password.0);
        *challenge = None;
        Ok(Some(digest))
    }

    /// Refresh the polled status values; failures are logged, the next poll tries again.
    fn poll(&mut self) {
        let report = |what: &str, error: Error| match error {
            Error::NotConnected(_) => log::debug(&format!("polling {what}: {error}")),
            _ => log::warn(&format!("polling {what}: {error}")),
        };
        if let Err(error) = self.power_state() {
            report("power", error);
            return;
        }
        if let Err(error) = self.lamp_hours() {
            report("lamp hours", error);
        }
        if let Err(error) = self.errors() {
            report("error status", error);
        }
    }
}

/// Publish the power state: `power` is true while on or warming up, `power_state` tells
/// which.
fn publish_power(power: PowerState) {
    publish("power", &power.is_on());
    publish("power_state", &power);
}

/// Publish a status value. A failure to publish is logged rather than returned: the
/// projector did what it was asked, and the caller should hear that.
fn publish<T: Serialize + ?Sized>(key: &str, value: &T) {
    if let Err(error) = status::set(key, value) {
        log::warn(&format!("publishing status `{key}`: {error}"));
    }
}

/// Each PJLink error becomes the WIT error case a caller can act on: a refused parameter
/// is the caller's to fix, a missing password the deployer's, everything else the
/// device's.
impl From<ProjectorError> for Error {
    fn from(error: ProjectorError) -> Self {
        let message = error.to_string();
        match error {
            ProjectorError::OutOfParameter { .. } => Error::InvalidArguments(message),
            ProjectorError::PasswordRequired => Error::Failed(message),
            ProjectorError::UndefinedCommand { .. }
            | ProjectorError::UnavailableTime { .. }
            | ProjectorError::ProjectorFailure { .. }
            | ProjectorError::AuthenticationFailed
            | ProjectorError::Malformed { .. } => Error::Device(message),
        }
    }
}

export_driver!(Pjlink);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted() {
        let settings: PjlinkSettings =
            serde_json::from_str(r#"{"password":"hunter2","poll_every_ms":5000}"#).unwrap();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
        assert_eq!(settings.poll_every_ms, Some(5000));
    }

    #[test]
    fn empty_settings_are_valid() {
        let settings: PjlinkSettings = serde_json::from_str("{}").unwrap();
        assert!(settings.password.is_none() && settings.request_timeout_ms.is_none());
    }

    #[test]
    fn projector_errors_map_to_distinct_cases() {
        let invalid = Error::from(ProjectorError::OutOfParameter {
            command: "INPT".into(),
            param: "59".into(),
        });
        assert!(matches!(invalid, Error::InvalidArguments(ref m) if m.contains("ERR2")));
        let auth = Error::from(ProjectorError::AuthenticationFailed);
        assert!(matches!(auth, Error::Device(ref m) if m.contains("authentication failed")));
        let busy = Error::from(ProjectorError::UnavailableTime {
            command: "INPT".into(),
        });
        assert!(matches!(busy, Error::Device(ref m) if m.contains("ERR3")));
        assert!(matches!(
            Error::from(ProjectorError::PasswordRequired),
            Error::Failed(_)
        ));
    }

    #[test]
    fn context_keeps_the_case() {
        let error = Error::Timeout("no reply".into()).context("POWR");
        assert_eq!(error, Error::Timeout("POWR: no reply".into()));
    }

    #[test]
    fn metadata_is_json_with_every_function() {
        use warden_driver_sdk::__private::Metadata;
        const BYTES: &[u8] = &warden_driver_sdk::json_bytes!(<Pjlink as Metadata>::METADATA);
        let metadata: Value = serde_json::from_slice(BYTES).unwrap();
        assert_eq!(metadata["name"], "PJLink projector");
        assert_eq!(metadata["default_port"], 4352);
        let names: Vec<&str> = metadata["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        for expected in [
            "power",
            "power_state",
            "switch_to",
            "current_input",
            "mute",
            "mute_state",
            "errors",
            "lamp_hours",
            "info",
            "raw_command",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let settings = &metadata["settings_schema"]["properties"];
        assert!(settings["password"].is_object());
        assert!(settings["poll_every_ms"].is_object());
    }
}
