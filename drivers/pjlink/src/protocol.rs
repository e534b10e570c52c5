//! PJLink class 1 as text: the greeting, command lines, replies, and the values inside
//! them. Nothing here talks to the host, so all of it is unit-tested natively.
//!
//! A session: the projector greets with `PJLINK 0` (no authentication) or `PJLINK 1
//! <random>`; every command is `%1CMND <param>\r` and is answered `%1CMND=<value>\r`,
//! where the value may be one of the error codes `ERR1`..`ERR4`. With authentication on,
//! the first command of a connection is prefixed with `md5_hex(random + password)`; a wrong
//! digest is answered `PJLINK ERRA` and the projector closes the connection.

use std::fmt;

use serde::{Deserialize, Serialize};
use warden_driver_sdk::Schema;

use crate::md5;

/// What the projector sends first on every new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// `PJLINK 0`: authentication is off.
    Open,
    /// `PJLINK 1 <random>`: the first command must carry `md5_hex(random + password)`.
    Challenge(String),
}

impl Greeting {
    /// Parse a greeting line. `PJLINK ERRA` is an authentication failure, not a greeting.
    pub fn parse(line: &str) -> Result<Greeting, ProjectorError> {
        if line == AUTH_FAILURE {
            return Err(ProjectorError::AuthenticationFailed);
        }
        let malformed = || ProjectorError::Malformed {
            what: "greeting",
            text: line.to_string(),
        };
        let rest = line.strip_prefix("PJLINK ").ok_or_else(malformed)?;
        let mut words = rest.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some("0"), None, None) => Ok(Greeting::Open),
            (Some("1"), Some(random), None) if is_challenge(random) => {
                Ok(Greeting::Challenge(random.to_string()))
            }
            _ => Err(malformed()),
        }
    }

    /// The digest the first command of this session must carry, if any.
    pub fn digest(random: &str, password: &str) -> String {
        md5::hex_digest(format!("{random}{password}").as_bytes())
    }
}

/// The spec's random number is 8 hex digits; accept any short printable token so that a
/// projector that deviates a little still authenticates.
fn is_challenge(random: &str) -> bool {
    !random.is_empty() && random.len() <= 32 && random.bytes().all(|b| b.is_ascii_graphic())
}

/// The projector's answer to a command sent with a wrong (or missing) digest.
pub const AUTH_FAILURE: &str = "PJLINK ERRA";

/// The answer some projectors (and the pjlink-advance emulator) give to a line that is not
/// a command at all, such as one with a digest where none was expected.
const NOT_A_COMMAND: &str = "PJLINK ERR1";

/// One class 1 command line: four-letter command and parameter (`?` for a query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    command: String,
    param: String,
}

impl Request {
    /// `%1<command> ?`. `command` is one of the protocol's own four-letter names.
    pub fn query(command: &'static str) -> Request {
        Request {
            command: command.to_string(),
            param: "?".to_string(),
        }
    }

    /// `%1<command> <param>` for a parameter the driver built itself.
    pub fn set(command: &'static str, param: impl Into<String>) -> Request {
        Request {
            command: command.to_string(),
            param: param.into(),
        }
    }

    /// A command typed by a person: four upper-case letters or digits, and a parameter of
    /// printable ASCII (at most 128 bytes, the spec's limit), so it cannot smuggle a second
    /// command into the line.
    pub fn parse(command: &str, param: &str) -> Result<Request, String> {
        if command.len() != 4
            || !command
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(format!(
                "`{command}` is not a PJLink command: use four upper-case letters or digits, such as POWR"
            ));
        }
        if param.is_empty()
            || param.len() > 128
            || !param.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        {
            return Err(format!(
                "`{param}` is not a PJLink parameter: use `?` or up to 128 printable ASCII characters"
            ));
        }
        Ok(Request {
            command: command.to_string(),
            param: param.to_string(),
        })
    }

    /// The four-letter command.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The bytes to send, with the session's digest in front when this is the first command
    /// of an authenticated session.
    pub fn line(&self, digest: Option<&str>) -> String {
        format!(
            "{}%1{} {}\r",
            digest.unwrap_or(""),
            self.command,
            self.param
        )
    }

    /// The value of the projector's reply to this request, or the error it reports.
    pub fn parse_reply(&self, line: &str) -> Result<String, ProjectorError> {
        if line == AUTH_FAILURE {
            return Err(ProjectorError::AuthenticationFailed);
        }
        if line == NOT_A_COMMAND {
            return Err(ProjectorError::UndefinedCommand {
                command: self.command.clone(),
            });
        }
        let value = line
            .strip_prefix("%1")
            .and_then(|rest| rest.strip_prefix(self.command.as_str()))
            .and_then(|rest| rest.strip_prefix('='))
            .ok_or_else(|| ProjectorError::Malformed {
                what: "reply",
                text: line.to_string(),
            })?;
        let command = self.command.clone();
        match value {
            "ERR1" => Err(ProjectorError::UndefinedCommand { command }),
            "ERR2" => Err(ProjectorError::OutOfParameter {
                command,
                param: self.param.clone(),
            }),
            "ERR3" => Err(ProjectorError::UnavailableTime { command }),
            "ERR4" => Err(ProjectorError::ProjectorFailure { command }),
            _ => Ok(value.to_string()),
        }
    }
}

/// Why a command did not succeed, as far as the projector (or its greeting) tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectorError {
    /// `ERR1`: the projector does not know the command.
    UndefinedCommand {
        /// The four-letter command.
        command: String,
    },
    /// `ERR2`: the parameter is out of range for this projector.
    OutOfParameter {
        /// The four-letter command.
        command: String,
        /// The parameter it refused.
        param: String,
    },
    /// `ERR3`: the command cannot run now (typically the projector is off, warming up or
    /// cooling down).
    UnavailableTime {
        /// The four-letter command.
        command: String,
    },
    /// `ERR4`: the projector reports a failure of its own.
    ProjectorFailure {
        /// The four-letter command.
        command: String,
    },
    /// `PJLINK ERRA`: the digest did not match: the password is wrong.
    AuthenticationFailed,
    /// The projector asks for a password and none is configured.
    PasswordRequired,
    /// The projector sent something that does not follow the protocol.
    Malformed {
        /// What was expected: a greeting, a reply, a power state...
        what: &'static str,
        /// What arrived.
        text: String,
    },
}

impl fmt::Display for ProjectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProjectorError::UndefinedCommand { command } => write!(
                f,
                "the projector does not support {command} (ERR1: undefined command)"
            ),
            ProjectorError::OutOfParameter { command, param } => write!(
                f,
                "the projector refused `{param}` for {command} (ERR2: out of parameter)"
            ),
            ProjectorError::UnavailableTime { command } => write!(
                f,
                "the projector cannot run {command} now (ERR3: unavailable time); it may be \
                 off, warming up or cooling down"
            ),
            ProjectorError::ProjectorFailure { command } => write!(
                f,
                "the projector reported a failure running {command} (ERR4: projector \
                 failure); see `errors`"
            ),
            ProjectorError::AuthenticationFailed => f.write_str(
                "authentication failed: the projector rejected the password (PJLINK ERRA); \
                 check the `password` setting",
            ),
            ProjectorError::PasswordRequired => f.write_str(
                "the projector requires a PJLink password (it greeted with PJLINK 1) and \
                 the `password` setting is not set",
            ),
            ProjectorError::Malformed { what, text } => {
                write!(f, "unexpected {what} from the projector: {text:?}")
            }
        }
    }
}

impl std::error::Error for ProjectorError {}

/// Power state as `POWR ?` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Schema)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// In standby.
    Off,
    /// Lamp on, showing a picture.
    On,
    /// Going to standby.
    Cooling,
    /// Starting up.
    Warming,
}

impl PowerState {
    /// Decode the value of a `POWR ?` reply.
    pub fn parse(value: &str) -> Result<PowerState, ProjectorError> {
        match value {
            "0" => Ok(PowerState::Off),
            "1" => Ok(PowerState::On),
            "2" => Ok(PowerState::Cooling),
            "3" => Ok(PowerState::Warming),
            _ => Err(ProjectorError::Malformed {
                what: "power state",
                text: value.to_string(),
            }),
        }
    }

    /// True when the projector shows, or is about to show, a picture: what a power button
    /// should light up for.
    pub fn is_on(self) -> bool {
        matches!(self, PowerState::On | PowerState::Warming)
    }
}

/// Kind of input terminal: the first digit of an input code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Schema)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// `1`: analogue RGB (VGA).
    Rgb,
    /// `2`: composite or S-video.
    Video,
    /// `3`: digital (HDMI, DVI, DisplayPort, HDBaseT).
    Digital,
    /// `4`: storage (USB memory, SD card).
    Storage,
    /// `5`: network.
    Network,
    /// `6`: internal (class 2 only).
    Internal,
}

impl InputKind {
    const ALL: [(InputKind, char, &'static str); 6] = [
        (InputKind::Rgb, '1', "rgb"),
        (InputKind::Video, '2', "video"),
        (InputKind::Digital, '3', "digital"),
        (InputKind::Storage, '4', "storage"),
        (InputKind::Network, '5', "network"),
        (InputKind::Internal, '6', "internal"),
    ];

    fn from_digit(digit: char) -> Option<InputKind> {
        Self::ALL
            .iter()
            .find(|(_, d, _)| *d == digit)
            .map(|(kind, _, _)| *kind)
    }

    fn from_name(name: &str) -> Option<InputKind> {
        Self::ALL
            .iter()
            .find(|(_, _, n)| n.eq_ignore_ascii_case(name))
            .map(|(kind, _, _)| *kind)
    }

    fn digit(self) -> char {
        Self::ALL
            .iter()
            .find(|(kind, _, _)| *kind == self)
            .map_or('0', |(_, digit, _)| *digit)
    }

    /// Class 1 addresses RGB to network; internal sources need class 2 commands.
    fn in_class1(self) -> bool {
        self != InputKind::Internal
    }
}

/// One input terminal, such as `31` (digital 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputCode {
    kind: InputKind,
    number: char,
}

impl InputCode {
    /// An input code as the projector reports it (`INPT ?`, `INST ?`). Class 2 projectors
    /// may report numbers `A`..`Z` and the internal kind; those are accepted here.
    pub fn parse(code: &str) -> Result<InputCode, ProjectorError> {
        let mut chars = code.chars();
        let parsed = match (chars.next(), chars.next(), chars.next()) {
            (Some(digit), Some(number), None)
                if (number.is_ascii_digit() && number != '0') || number.is_ascii_uppercase() =>
            {
                InputKind::from_digit(digit).map(|kind| InputCode { kind, number })
            }
            _ => None,
        };
        parsed.ok_or_else(|| ProjectorError::Malformed {
            what: "input code",
            text: code.to_string(),
        })
    }

    /// An input a person asked for: a class 1 code such as `31`, or the spec's name for it,
    /// `digital1` (also `digital 1`, any case).
    pub fn from_request(text: &str) -> Result<InputCode, String> {
        let text = text.trim();
        let invalid = || {
            format!(
                "`{text}` is not a PJLink input: use a two-digit code such as 31, whose first \
                 digit is the kind (1 rgb, 2 video, 3 digital, 4 storage, 5 network) and \
                 second the number (1-9), or a name such as digital1"
            )
        };
        // The last character is the number; what comes before is the kind's digit or name.
        let mut chars = text.chars();
        let number = chars.next_back().ok_or_else(invalid)?;
        let head = chars.as_str();
        let kind = if head.len() == 1 {
            head.chars().next().and_then(InputKind::from_digit)
        } else {
            InputKind::from_name(head.trim_end())
        };
        match kind {
            Some(kind) if kind.in_class1() && ('1'..='9').contains(&number) => {
                Ok(InputCode { kind, number })
            }
            _ => Err(invalid()),
        }
    }

    /// What kind of terminal this is.
    pub fn kind(self) -> InputKind {
        self.kind
    }
}

impl fmt::Display for InputCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.digit(), self.number)
    }
}

/// An input terminal of the projector, as listed by `INST ?`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Schema)]
pub struct Input {
    /// The two-character code to pass to `switch_to`, such as `31`.
    pub code: String,
    /// The kind of terminal.
    pub kind: InputKind,
}

/// Decode the value of an `INST ?` reply: input codes separated by spaces.
pub fn parse_inputs(value: &str) -> Result<Vec<Input>, ProjectorError> {
    value
        .split_whitespace()
        .map(|code| {
            InputCode::parse(code).map(|input| Input {
                code: input.to_string(),
                kind: input.kind(),
            })
        })
        .collect()
}

/// What `mute` acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Schema)]
#[serde(rename_all = "lowercase")]
pub enum MuteTarget {
    /// The picture only.
    Video,
    /// The sound only.
    Audio,
    /// Picture and sound.
    Both,
}

impl MuteTarget {
    /// The `AVMT` parameter: target digit, then 1 to mute or 0 to unmute.
    pub fn param(self, mute: bool) -> String {
        let target = match self {
            MuteTarget::Video => '1',
            MuteTarget::Audio => '2',
            MuteTarget::Both => '3',
        };
        format!("{target}{}", u8::from(mute))
    }
}

/// Audio and video mute, as `AVMT ?` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Schema)]
pub struct MuteState {
    /// The picture is blanked.
    pub video: bool,
    /// The sound is muted.
    pub audio: bool,
}

impl MuteState {
    /// Decode the value of an `AVMT ?` reply: `11` video muted, `21` audio muted, `31`
    /// both; `10`, `20` and `30` say the named target is not muted.
    pub fn parse(value: &str) -> Result<MuteState, ProjectorError> {
        let (video, audio) = match value {
            "11" => (true, false),
            "21" => (false, true),
            "31" => (true, true),
            "10" | "20" | "30" => (false, false),
            _ => {
                return Err(ProjectorError::Malformed {
                    what: "mute state",
                    text: value.to_string(),
                });
            }
        };
        Ok(MuteState { video, audio })
    }
}

/// Severity of one category of `ERST ?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Schema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorLevel {
    /// No problem.
    Ok,
    /// A warning, such as a filter due for cleaning.
    Warning,
    /// An error.
    Error,
}

impl ErrorLevel {
    fn from_digit(digit: char) -> Option<ErrorLevel> {
        match digit {
            '0' => Some(ErrorLevel::Ok),
            '1' => Some(ErrorLevel::Warning),
            '2' => Some(ErrorLevel::Error),
            _ => None,
        }
    }
}

/// The projector's error status, one level per category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Schema)]
pub struct ErrorReport {
    /// Fan.
    pub fan: ErrorLevel,
    /// Lamp or light source.
    pub lamp: ErrorLevel,
    /// Temperature.
    pub temperature: ErrorLevel,
    /// Cover open.
    pub cover: ErrorLevel,
    /// Filter.
    pub filter: ErrorLevel,
    /// Anything else.
    pub other: ErrorLevel,
}

impl ErrorReport {
    /// Decode the value of an `ERST ?` reply: six digits in the order fan, lamp,
    /// temperature, cover, filter, other.
    pub fn parse(value: &str) -> Result<ErrorReport, ProjectorError> {
        let levels: Option<Vec<ErrorLevel>> = value.chars().map(ErrorLevel::from_digit).collect();
        match levels.as_deref() {
            Some(&[fan, lamp, temperature, cover, filter, other]) => Ok(ErrorReport {
                fan,
                lamp,
                temperature,
                cover,
                filter,
                other,
            }),
            _ => Err(ProjectorError::Malformed {
                what: "error status",
                text: value.to_string(),
            }),
        }
    }
}

/// One lamp (or other light source), as `LAMP ?` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Schema)]
pub struct Lamp {
    /// Hours the lamp has been lit.
    pub hours: u32,
    /// The lamp is lit now.
    pub on: bool,
}

/// Decode the value of a `LAMP ?` reply: `hours on` pairs, one per lamp.
pub fn parse_lamps(value: &str) -> Result<Vec<Lamp>, ProjectorError> {
    let malformed = || ProjectorError::Malformed {
        what: "lamp status",
        text: value.to_string(),
    };
    let words: Vec<&str> = value.split_whitespace().collect();
    if words.is_empty() {
        return Err(malformed());
    }
    words
        .chunks(2)
        .map(|pair| match pair {
            &[hours, on] => {
                let hours = hours.parse::<u32>().map_err(|_| malformed())?;
                let on = match on {
                    "0" => false,
                    "1" => true,
                    _ => return Err(malformed()),
                };
                Ok(Lamp { hours, on })
            }
            _ => Err(malformed()),
        })
        .collect()
}

/// Decode the value of a `CLSS ?` reply: the highest PJLink class the projector supports.
pub fn parse_class(value: &str) -> Result<u8, ProjectorError> {
    match value.parse::<u8>() {
        Ok(class) if class >= 1 && value.len() == 1 => Ok(class),
        _ => Err(ProjectorError::Malformed {
            what: "PJLink class",
            text: value.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings() {
        assert_eq!(Greeting::parse("PJLINK 0"), Ok(Greeting::Open));
        assert_eq!(
            Greeting::parse("PJLINK 1 498e4a67"),
            Ok(Greeting::Challenge("498e4a67".into()))
        );
        assert_eq!(
            Greeting::parse("PJLINK ERRA"),
            Err(ProjectorError::AuthenticationFailed)
        );
        for bad in [
            "",
            "PJLINK",
            "PJLINK 1",
            "PJLINK 1 ",
            "PJLINK 2 x",
            "PJLINK 0 x",
            "%1POWR=1",
        ] {
            assert!(
                matches!(Greeting::parse(bad), Err(ProjectorError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn digest_is_md5_of_random_then_password() {
        assert_eq!(
            Greeting::digest("a572f60c", "password"),
            "e3d97429adffa11bce1f7275813d4bde"
        );
    }

    #[test]
    fn command_lines() {
        assert_eq!(Request::query("POWR").line(None), "%1POWR ?\r");
        assert_eq!(Request::set("INPT", "31").line(None), "%1INPT 31\r");
        let digest = "e3d97429adffa11bce1f7275813d4bde";
        assert_eq!(
            Request::query("POWR").line(Some(digest)),
            format!("{digest}%1POWR ?\r")
        );
    }

    #[test]
    fn typed_commands_are_checked() {
        assert_eq!(
            Request::parse("INF1", "?").map(|r| r.line(None)),
            Ok("%1INF1 ?\r".to_string())
        );
        assert!(Request::parse("powr", "?").is_err());
        assert!(Request::parse("POWER", "?").is_err());
        assert!(Request::parse("POWR", "").is_err());
        assert!(Request::parse("POWR", "1\r%1POWR 0").is_err());
        assert!(Request::parse("POWR", &"1".repeat(129)).is_err());
    }

    #[test]
    fn replies_and_their_errors() {
        let power = Request::set("POWR", "1");
        assert_eq!(power.parse_reply("%1POWR=OK"), Ok("OK".into()));
        assert_eq!(
            Request::query("INFO").parse_reply("%1INFO="),
            Ok(String::new())
        );
        assert_eq!(
            power.parse_reply("%1POWR=ERR1"),
            Err(ProjectorError::UndefinedCommand {
                command: "POWR".into()
            })
        );
        assert_eq!(
            power.parse_reply("%1POWR=ERR2"),
            Err(ProjectorError::OutOfParameter {
                command: "POWR".into(),
                param: "1".into()
            })
        );
        assert_eq!(
            power.parse_reply("%1POWR=ERR3"),
            Err(ProjectorError::UnavailableTime {
                command: "POWR".into()
            })
        );
        assert_eq!(
            power.parse_reply("%1POWR=ERR4"),
            Err(ProjectorError::ProjectorFailure {
                command: "POWR".into()
            })
        );
        assert_eq!(
            power.parse_reply("PJLINK ERRA"),
            Err(ProjectorError::AuthenticationFailed)
        );
        assert_eq!(
            power.parse_reply("PJLINK ERR1"),
            Err(ProjectorError::UndefinedCommand {
                command: "POWR".into()
            })
        );
        // A reply to another command, or of another class, is not this command's reply.
        for other in ["%1INPT=31", "%2POWR=1", "%1POWR1", "POWR=1", ""] {
            assert!(
                matches!(
                    power.parse_reply(other),
                    Err(ProjectorError::Malformed { .. })
                ),
                "{other:?}"
            );
        }
    }

    #[test]
    fn error_messages_name_the_pjlink_code() {
        let errors = [
            (
                ProjectorError::UndefinedCommand {
                    command: "LAMP".into(),
                },
                "ERR1",
            ),
            (
                ProjectorError::OutOfParameter {
                    command: "INPT".into(),
                    param: "59".into(),
                },
                "ERR2",
            ),
            (
                ProjectorError::UnavailableTime {
                    command: "INPT".into(),
                },
                "ERR3",
            ),
            (
                ProjectorError::ProjectorFailure {
                    command: "POWR".into(),
                },
                "ERR4",
            ),
            (ProjectorError::AuthenticationFailed, "ERRA"),
        ];
        for (error, code) in errors {
            assert!(error.to_string().contains(code), "{error}");
        }
        assert!(
            ProjectorError::OutOfParameter {
                command: "INPT".into(),
                param: "59".into()
            }
            .to_string()
            .contains("`59`")
        );
    }

    #[test]
    fn power_states() {
        assert_eq!(PowerState::parse("0"), Ok(PowerState::Off));
        assert_eq!(PowerState::parse("1"), Ok(PowerState::On));
        assert_eq!(PowerState::parse("2"), Ok(PowerState::Cooling));
        assert_eq!(PowerState::parse("3"), Ok(PowerState::Warming));
        assert!(PowerState::parse("4").is_err());
        assert!(PowerState::Warming.is_on() && !PowerState::Cooling.is_on());
    }

    #[test]
    fn input_codes_from_people() {
        let code = |text: &str| InputCode::from_request(text).map(|c| c.to_string());
        assert_eq!(code("31"), Ok("31".into()));
        assert_eq!(code("11"), Ok("11".into()));
        assert_eq!(code("59"), Ok("59".into()));
        assert_eq!(code("digital1"), Ok("31".into()));
        assert_eq!(code("Digital 2"), Ok("32".into()));
        assert_eq!(code(" network1 "), Ok("51".into()));
        for bad in [
            "",
            "3",
            "30",
            "61",
            "71",
            "3A",
            "311",
            "hdmi1",
            "digital",
            "digital0",
            "internal1",
            "1",
            "é1",
            "1é",
        ] {
            let error = code(bad).unwrap_err();
            assert!(error.contains("not a PJLink input"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn input_codes_from_the_projector() {
        let inputs = parse_inputs("11 31 32 51").unwrap();
        assert_eq!(
            inputs.iter().map(|i| i.code.as_str()).collect::<Vec<_>>(),
            ["11", "31", "32", "51"]
        );
        assert_eq!(inputs[0].kind, InputKind::Rgb);
        assert_eq!(inputs[3].kind, InputKind::Network);
        // Class 2 projectors may list these.
        assert_eq!(InputCode::parse("3A").unwrap().to_string(), "3A");
        assert_eq!(InputCode::parse("61").unwrap().kind(), InputKind::Internal);
        assert_eq!(parse_inputs("").unwrap(), Vec::new());
        for bad in ["30", "71", "3a", "1", "311", "ab"] {
            assert!(InputCode::parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse_inputs("11 x").is_err());
    }

    #[test]
    fn mute() {
        assert_eq!(MuteTarget::Video.param(true), "11");
        assert_eq!(MuteTarget::Audio.param(false), "20");
        assert_eq!(MuteTarget::Both.param(true), "31");
        let state = |video, audio| Ok(MuteState { video, audio });
        assert_eq!(MuteState::parse("11"), state(true, false));
        assert_eq!(MuteState::parse("21"), state(false, true));
        assert_eq!(MuteState::parse("31"), state(true, true));
        assert_eq!(MuteState::parse("30"), state(false, false));
        assert_eq!(MuteState::parse("10"), state(false, false));
        assert!(MuteState::parse("41").is_err());
        assert!(MuteState::parse("1").is_err());
    }

    #[test]
    fn error_status() {
        assert_eq!(
            ErrorReport::parse("000000"),
            Ok(ErrorReport {
                fan: ErrorLevel::Ok,
                lamp: ErrorLevel::Ok,
                temperature: ErrorLevel::Ok,
                cover: ErrorLevel::Ok,
                filter: ErrorLevel::Ok,
                other: ErrorLevel::Ok,
            })
        );
        let report = ErrorReport::parse("012021").unwrap();
        assert_eq!(report.lamp, ErrorLevel::Warning);
        assert_eq!(report.temperature, ErrorLevel::Error);
        assert_eq!(report.filter, ErrorLevel::Error);
        assert_eq!(report.other, ErrorLevel::Warning);
        for bad in ["00000", "0000000", "000003", "abcdef", ""] {
            assert!(ErrorReport::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lamps() {
        assert_eq!(
            parse_lamps("1200 1"),
            Ok(vec![Lamp {
                hours: 1200,
                on: true
            }])
        );
        assert_eq!(
            parse_lamps("10 0 99999 1"),
            Ok(vec![
                Lamp {
                    hours: 10,
                    on: false
                },
                Lamp {
                    hours: 99999,
                    on: true
                }
            ])
        );
        for bad in ["", "1200", "1200 2", "x 1", "1200 1 5", "-1 0"] {
            assert!(parse_lamps(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn class() {
        assert_eq!(parse_class("1"), Ok(1));
        assert_eq!(parse_class("2"), Ok(2));
        for bad in ["0", "", "x", "12"] {
            assert!(parse_class(bad).is_err(), "{bad:?}");
        }
    }
}
