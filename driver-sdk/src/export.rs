//! The driver trait and the glue between it and the WIT exports.

use std::any::Any;
use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::schema::{Node, Schema};
use crate::system::Subscription;
use crate::{DriverInfo, Error, Result};

/// A device driver. Every method has a default, so implement only the hooks you need.
///
/// The host calls these one at a time: a driver never runs two calls at once, and a call
/// that waits on the device (through [`crate::transport::request`]) holds back the others.
pub trait Driver: Default + 'static {
    /// The driver's settings. The host merges them from every level they are configured
    /// at and hands them to [`Driver::init`]; their schema is part of the metadata.
    type Settings: DeserializeOwned + Schema;

    /// Name, generic name, transport and the other facts of the metadata.
    const INFO: DriverInfo;

    /// The module started, or its settings changed. An error is logged by the host and
    /// leaves the module running.
    fn init(&mut self, settings: Self::Settings) -> Result<()> {
        let _ = settings;
        Ok(())
    }

    /// The host opened the connection to the device.
    fn connected(&mut self) {}

    /// The connection to the device closed or failed.
    fn disconnected(&mut self) {}

    /// A message arrived that no call was waiting for.
    fn received(&mut self, data: &[u8]) {
        crate::log::debug(&format!("ignored {} unsolicited bytes", data.len()));
    }

    /// A timer set with [`crate::timers`] fired.
    fn timer(&mut self, tag: &str) {
        let _ = tag;
    }

    /// A watched status value of another module changed.
    fn notify(&mut self, subscription: Subscription, value: Value) {
        let _ = (subscription, value);
    }
}

/// The functions of a driver, implemented by `#[functions]` on an `impl` block.
pub trait Functions {
    /// JSON array describing every function: name, description, level, parameter and
    /// result schemas.
    const FUNCTIONS: Node;

    /// Run `function` with `args` (a JSON array or object) and return the result as JSON.
    fn call(&mut self, function: &str, args: &str) -> Result<String>;
}

thread_local! {
    /// The one driver instance of this component, created on first use.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    /// Whether `init` has run once.
    static INITIALISED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn with_driver<D: Driver, R>(f: impl FnOnce(&mut D) -> R) -> R {
    INSTANCE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let boxed = slot.get_or_insert_with(|| Box::new(D::default()));
        match boxed.downcast_mut::<D>() {
            Some(driver) => f(driver),
            None => {
                // Only one driver type is ever exported per component.
                let mut fresh = D::default();
                let result = f(&mut fresh);
                *boxed = Box::new(fresh);
                result
            }
        }
    })
}

/// The export functions, generic over the driver; `export_driver!` wires them up.
pub mod glue {
    use super::*;
    use crate::wit::types::Error as WitError;

    /// `init` export. Settings the driver cannot read are refused; if the driver has not
    /// been initialised yet, it is initialised with its own default settings first, so
    /// its tokenizer, timers and subscriptions are in place all the same.
    pub fn init<D: Driver>(settings: String) -> Result<(), WitError> {
        let refused = match serde_json::from_str::<D::Settings>(&settings) {
            Ok(settings) => {
                INITIALISED.with(|done| done.set(true));
                return with_driver::<D, _>(|driver| driver.init(settings)).map_err(Into::into);
            }
            Err(e) => Error::InvalidArguments(format!("settings: {e}")),
        };
        if !INITIALISED.with(|done| done.replace(true))
            && let Ok(defaults) = serde_json::from_str::<D::Settings>(D::INFO.default_settings)
        {
            let _ = with_driver::<D, _>(|driver| driver.init(defaults));
        }
        Err(refused.into())
    }

    /// `exec` export.
    pub fn exec<D: Driver + Functions>(function: String, args: String) -> Result<String, WitError> {
        with_driver::<D, _>(|driver| driver.call(&function, &args)).map_err(Into::into)
    }

    /// `connected` export.
    pub fn connected<D: Driver>() {
        with_driver::<D, _>(|driver| driver.connected());
    }

    /// `disconnected` export.
    pub fn disconnected<D: Driver>() {
        with_driver::<D, _>(|driver| driver.disconnected());
    }

    /// `received` export.
    pub fn received<D: Driver>(data: Vec<u8>) {
        with_driver::<D, _>(|driver| driver.received(&data));
    }

    /// `timer` export.
    pub fn timer<D: Driver>(_id: u64, tag: String) {
        with_driver::<D, _>(|driver| driver.timer(&tag));
    }

    /// `notify` export.
    pub fn notify<D: Driver>(subscription: u64, value: String) {
        let value = serde_json::from_str(&value).unwrap_or(Value::Null);
        with_driver::<D, _>(|driver| driver.notify(Subscription::from_raw(subscription), value));
    }
}

/// Split exec arguments into one JSON value per parameter, in order. Accepts a JSON array
/// of positional arguments, an object of named ones, or nothing.
pub fn parse_args(args: &str, names: &[&str]) -> Result<Vec<Value>> {
    let mut slots = vec![Value::Null; names.len()];
    let trimmed = args.trim();
    if trimmed.is_empty() {
        return Ok(slots);
    }
    let parsed: Value = serde_json::from_str(trimmed)
        .map_err(|e| Error::InvalidArguments(format!("arguments are not JSON: {e}")))?;
    match parsed {
        Value::Null => {}
        Value::Array(values) => {
            if values.len() > names.len() {
                return Err(Error::InvalidArguments(format!(
                    "expected at most {} argument(s), got {}",
                    names.len(),
                    values.len()
                )));
            }
            for (slot, value) in slots.iter_mut().zip(values) {
                *slot = value;
            }
        }
        Value::Object(map) => {
            for (key, value) in map {
                let position = names
                    .iter()
                    .position(|name| *name == key)
                    .ok_or_else(|| Error::InvalidArguments(format!("unknown argument `{key}`")))?;
                if let Some(slot) = slots.get_mut(position) {
                    *slot = value;
                }
            }
        }
        _ => {
            return Err(Error::InvalidArguments(
                "arguments must be a JSON array or object".to_string(),
            ));
        }
    }
    Ok(slots)
}

/// Take argument `index` (named `name`) out of `args` as a `T`.
pub fn take_arg<T: DeserializeOwned>(args: &mut [Value], index: usize, name: &str) -> Result<T> {
    let value = args
        .get_mut(index)
        .map(std::mem::take)
        .unwrap_or(Value::Null);
    let missing = value.is_null();
    serde_json::from_value(value).map_err(|e| {
        if missing {
            Error::InvalidArguments(format!("missing argument `{name}`"))
        } else {
            Error::InvalidArguments(format!("argument `{name}`: {e}"))
        }
    })
}

/// A function's return value as JSON text.
pub fn result_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Failed(format!("result is not JSON: {e}")))
}

/// Whether `commit` may be embedded as a driver's source commit: empty (a developer's
/// build) or a full git object id, 40 (SHA-1) or 64 (SHA-256) lower-case hex digits.
/// Anything else is refused when the driver compiles, so a builder cannot slip text into
/// the provenance that a reviewer would misread as a commit.
pub const fn is_source_commit(commit: &str) -> bool {
    let mut rest = commit.as_bytes();
    if !matches!(rest.len(), 0 | 40 | 64) {
        return false;
    }
    while let [byte, tail @ ..] = rest {
        if !matches!(byte, b'0'..=b'9' | b'a'..=b'f') {
            return false;
        }
        rest = tail;
    }
    true
}

/// The commit a builder passed in `WARDEN_SOURCE_COMMIT`, or `""`; compiling fails when it
/// is not a full commit id.
pub const fn source_commit(from_env: Option<&'static str>) -> &'static str {
    let commit = match from_env {
        Some(commit) => commit,
        None => "",
    };
    assert!(
        is_source_commit(commit),
        "WARDEN_SOURCE_COMMIT must be empty or a full commit id (40 or 64 lower-case hex digits)"
    );
    commit
}

/// The provenance document of the crate this expands in, as a constant
/// [`Node`](crate::schema::Node): `{"format":1,"package":…,"version":…,"repository":…,
/// "commit":…,"sdk":…,"wit":…}`.
///
/// It is a macro, not a constant of the SDK, so that `env!` and `option_env!` read the
/// *driver's* package name, version and repository, and the `WARDEN_SOURCE_COMMIT` its
/// build was given; rustc records that variable as an input of the driver crate, so a
/// build with another commit recompiles it.
#[doc(hidden)]
#[macro_export]
macro_rules! __provenance {
    () => {
        $crate::schema::Node::Seq(&[
            $crate::schema::Node::Raw(r#"{"format":1,"package":"#),
            $crate::schema::Node::Str(env!("CARGO_PKG_NAME")),
            $crate::schema::Node::Raw(r#","version":"#),
            $crate::schema::Node::Str(env!("CARGO_PKG_VERSION")),
            $crate::schema::Node::Raw(r#","repository":"#),
            $crate::schema::Node::Str(env!("CARGO_PKG_REPOSITORY")),
            $crate::schema::Node::Raw(r#","commit":"#),
            $crate::schema::Node::Str($crate::__private::source_commit(option_env!(
                "WARDEN_SOURCE_COMMIT"
            ))),
            $crate::schema::Node::Raw(r#","sdk":"#),
            $crate::schema::Node::Str($crate::SDK_VERSION),
            $crate::schema::Node::Raw(r#","wit":"#),
            $crate::schema::Node::Str($crate::WIT_VERSION),
            $crate::schema::Node::Raw("}"),
        ])
    };
}

/// Export a driver type: its metadata and provenance sections and the WIT `driver`
/// interface.
///
/// Use it once per driver crate, at the top level: `export_driver!(MyDriver);`. The type
/// must implement [`Driver`] and have a `#[functions]` impl block.
#[macro_export]
macro_rules! export_driver {
    ($driver:ty) => {
        const _: () = {
            const __PROVENANCE: $crate::schema::Node = $crate::__provenance!();
            const __PROVENANCE_LEN: usize = $crate::schema::json_len(&__PROVENANCE);
            #[cfg_attr(
                target_family = "wasm",
                unsafe(link_section = "warden:driver/provenance")
            )]
            #[used]
            static __PROVENANCE_BYTES: [u8; __PROVENANCE_LEN] =
                $crate::schema::to_json::<__PROVENANCE_LEN>(&__PROVENANCE);

            const __METADATA_LEN: usize =
                $crate::schema::json_len(&<$driver as $crate::__private::Metadata>::METADATA);
            #[cfg_attr(
                target_family = "wasm",
                unsafe(link_section = "warden:driver/metadata")
            )]
            #[used]
            static __METADATA: [u8; __METADATA_LEN] = $crate::schema::to_json::<__METADATA_LEN>(
                &<$driver as $crate::__private::Metadata>::METADATA,
            );

            struct __WardenDriverExport;

            impl $crate::__private::Guest for __WardenDriverExport {
                fn init(
                    settings: String,
                ) -> Result<(), $crate::__private::bindings::warden::driver::types::Error> {
                    $crate::__private::glue::init::<$driver>(settings)
                }
                fn exec(
                    function: String,
                    args: String,
                ) -> Result<String, $crate::__private::bindings::warden::driver::types::Error>
                {
                    $crate::__private::glue::exec::<$driver>(function, args)
                }
                fn connected() {
                    $crate::__private::glue::connected::<$driver>()
                }
                fn disconnected() {
                    $crate::__private::glue::disconnected::<$driver>()
                }
                fn received(data: Vec<u8>) {
                    $crate::__private::glue::received::<$driver>(data)
                }
                fn timer(id: u64, tag: String) {
                    $crate::__private::glue::timer::<$driver>(id, tag)
                }
                fn notify(subscription: u64, value: String) {
                    $crate::__private::glue::notify::<$driver>(subscription, value)
                }
            }

            $crate::__private::bindings::__export_driver_world_impl!(
                __WardenDriverExport with_types_in $crate::__private::bindings
            );
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_named_and_empty_arguments() {
        assert_eq!(
            parse_args("[1, true]", &["a", "b"]).unwrap(),
            vec![Value::from(1), Value::from(true)]
        );
        assert_eq!(
            parse_args(r#"{"b": 2}"#, &["a", "b"]).unwrap(),
            vec![Value::Null, Value::from(2)]
        );
        assert_eq!(parse_args("", &["a"]).unwrap(), vec![Value::Null]);
        assert!(matches!(
            parse_args("[1,2]", &["a"]),
            Err(Error::InvalidArguments(_))
        ));
        assert!(
            matches!(parse_args(r#"{"c":1}"#, &["a"]), Err(Error::InvalidArguments(m)) if m.contains("`c`"))
        );
        assert!(matches!(
            parse_args("3", &["a"]),
            Err(Error::InvalidArguments(_))
        ));
    }

    #[test]
    fn missing_and_mistyped_arguments_are_named() {
        let mut args = vec![Value::Null, Value::from("x")];
        let missing = take_arg::<bool>(&mut args, 0, "state").unwrap_err();
        assert_eq!(
            missing,
            Error::InvalidArguments("missing argument `state`".into())
        );
        let optional: Option<bool> = take_arg(&mut args, 0, "state").unwrap();
        assert_eq!(optional, None);
        let wrong = take_arg::<u8>(&mut args, 1, "level").unwrap_err();
        assert!(wrong.message().starts_with("argument `level`"));
    }
}
