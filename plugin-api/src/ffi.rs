//! The stable-ABI layer: the root module every plugin library exports, the FFI-safe mirror
//! types, and the shim that turns a plain [`Consumer`] into an FFI trait object.
//!
//! Plugin authors never use this module directly: [`export_plugin!`](crate::export_plugin)
//! generates everything. The host uses it through its loader only.
#![allow(missing_docs)]

use crate::consumer::{Consumer, ConsumerClass, Context, PollStatus};
use crate::error::{ErrorKind, PluginError, PluginResult};
use crate::event::EventBatch;
use crate::event::{Body, Event};
use crate::handler::{EventHandler, HandlerClass};
use crate::offset::Offset;
use crate::offset::OffsetRef;
use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec, Tuple2};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::Duration;

/// [`ErrorKind`] across the boundary.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RErrorKind {
    Config,
    Connect,
    OffsetNotFound,
    Timeout,
    Protocol,
    Internal,
    Data,
}

/// [`PluginError`] across the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct RPluginError {
    pub kind: RErrorKind,
    pub message: RString,
    pub key: ROption<RString>,
}

impl From<PluginError> for RPluginError {
    fn from(error: PluginError) -> Self {
        let kind = match error.kind() {
            ErrorKind::Config => RErrorKind::Config,
            ErrorKind::Connect => RErrorKind::Connect,
            ErrorKind::OffsetNotFound => RErrorKind::OffsetNotFound,
            ErrorKind::Timeout => RErrorKind::Timeout,
            ErrorKind::Protocol => RErrorKind::Protocol,
            ErrorKind::Internal => RErrorKind::Internal,
            ErrorKind::Data => RErrorKind::Data,
        };
        RPluginError {
            kind,
            message: error.message().into(),
            key: error.key().map(RString::from).into(),
        }
    }
}

impl From<RPluginError> for PluginError {
    fn from(error: RPluginError) -> Self {
        let kind = match error.kind {
            RErrorKind::Config => ErrorKind::Config,
            RErrorKind::Connect => ErrorKind::Connect,
            RErrorKind::OffsetNotFound => ErrorKind::OffsetNotFound,
            RErrorKind::Timeout => ErrorKind::Timeout,
            RErrorKind::Protocol => ErrorKind::Protocol,
            RErrorKind::Internal => ErrorKind::Internal,
            RErrorKind::Data => ErrorKind::Data,
        };
        let plain = PluginError::new(kind, error.message.into_string());
        match error.key.into_option() {
            Some(key) => plain.with_key(key.into_string()),
            None => plain,
        }
    }
}

/// [`Offset`] across the boundary.
#[repr(u8)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub enum ROffset {
    Int(i64),
    Float(f64),
    String(RString),
    Bytes(RVec<u8>),
}

impl From<&Offset> for ROffset {
    fn from(offset: &Offset) -> Self {
        match offset {
            Offset::Int(i) => ROffset::Int(*i),
            Offset::Float(x) => ROffset::Float(*x),
            Offset::String(s) => ROffset::String(s.as_str().into()),
            Offset::Bytes(b) => ROffset::Bytes(b.as_slice().into()),
        }
    }
}

impl From<&ROffset> for Offset {
    fn from(offset: &ROffset) -> Self {
        match offset {
            ROffset::Int(i) => Offset::Int(*i),
            ROffset::Float(x) => Offset::Float(*x),
            ROffset::String(s) => Offset::String(s.as_str().to_owned()),
            ROffset::Bytes(b) => Offset::Bytes(b.as_slice().to_vec()),
        }
    }
}

/// What kind of object a class builds.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RClassKind {
    Consumer,
    Handler,
}

/// An operator command of a class.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct RCommandInfo {
    pub name: RString,
    pub usage: RString,
    pub help: RString,
}

/// One class of a plugin, as `describe` reports it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct RClassInfo {
    pub name: RString,
    pub kind: RClassKind,
    pub description: RString,
    pub settings_doc: RString,
    pub commands: RVec<RCommandInfo>,
}

/// What a plugin library says about itself.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct RPluginInfo {
    pub name: RString,
    pub version: RString,
    pub api_version: RString,
    pub classes: RVec<RClassInfo>,
}

/// The consumer object as the host sees it across the boundary.
#[sabi_trait]
pub trait ConsumerFfi: Send {
    fn open(&mut self) -> RResult<(), RPluginError>;
    fn close(&mut self) -> RResult<(), RPluginError>;
    fn seek_to_beginning(&mut self) -> RResult<(), RPluginError>;
    fn seek_to_end(&mut self) -> RResult<(), RPluginError>;
    fn seek(&mut self, offset: &ROffset) -> RResult<(), RPluginError>;
    fn seek_after(&mut self, offset: &ROffset) -> RResult<(), RPluginError>;
    fn next_offset(&self, offset: &ROffset) -> ROption<ROffset>;
    fn set_timeout(&mut self, timeout_ms: ROption<u64>) -> RResult<(), RPluginError>;
    fn poll(&mut self, batch: &mut EventBatch) -> RResult<PollStatus, RPluginError>;
    fn counters(&self) -> RVec<Tuple2<RString, u64>>;
    fn query(
        &mut self,
        command: RStr<'_>,
        args: RSlice<'_, RString>,
    ) -> RResult<RString, RPluginError>;
    fn find_next_event_of_category(
        &mut self,
        category: RStr<'_>,
        found: &mut EventBatch,
    ) -> RResult<bool, RPluginError>;
    fn check_position(
        &mut self,
        last: &ROffset,
        timestamp_micros: i64,
    ) -> RResult<(), RPluginError>;
    fn set_stop_when_drained(&mut self, stop: bool) -> RResult<(), RPluginError>;
    fn lag(&mut self) -> ROption<u64>;
    fn bus_owns_position(&self) -> bool;
    fn acknowledge(&mut self, offset: &ROffset) -> RResult<(), RPluginError>;
    #[sabi(last_prefix_field)]
    fn serve(&mut self) -> RResult<(), RPluginError>;
    /// Since plugin-api 0.5: a field added to the vtable, which abi_stable's load check
    /// refuses in a library built against an older plugin-api (it accepts only libraries
    /// with at least the host's fields), hence the minor version (breaking before 1.0).
    fn held_up(&mut self) -> ROption<RString> {
        ROption::RNone
    }
}

/// A boxed consumer trait object, owned by the host.
pub type ConsumerBox = ConsumerFfi_TO<'static, RBox<()>>;

/// One event lent to a handler plugin for the length of a call.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct REventRef<'a> {
    /// 0 int, 1 float, 2 string, 3 bytes.
    pub offset_tag: u8,
    /// The int offset, or the float's bits.
    pub offset_number: i64,
    /// The string or bytes offset.
    pub offset_bytes: RSlice<'a, u8>,
    pub timestamp_micros: i64,
    pub category: RStr<'a>,
    pub body_is_json: bool,
    pub body: RSlice<'a, u8>,
}

impl<'a> REventRef<'a> {
    /// Lends an event.
    pub fn new(event: &Event<'a>) -> Self {
        let (offset_tag, offset_number, offset_bytes): (u8, i64, &'a [u8]) = match event.offset {
            OffsetRef::Int(i) => (0, i, &[]),
            OffsetRef::Float(x) => (1, x.to_bits() as i64, &[]),
            OffsetRef::String(s) => (2, 0, s.as_bytes()),
            OffsetRef::Bytes(b) => (3, 0, b),
        };
        let (body_is_json, body) = match event.body {
            Body::Json(text) => (true, text.as_bytes()),
            Body::Bytes(bytes) => (false, bytes),
        };
        REventRef {
            offset_tag,
            offset_number,
            offset_bytes: offset_bytes.into(),
            timestamp_micros: event.timestamp.timestamp_micros(),
            category: event.category.into(),
            body_is_json,
            body: body.into(),
        }
    }

    /// The event again (text that is not UTF-8 becomes empty: the host only lends `&str`s).
    pub fn to_event(self) -> Event<'a> {
        let text = |bytes: &'a [u8]| std::str::from_utf8(bytes).unwrap_or("");
        let bytes = self.offset_bytes.as_slice();
        let offset = match self.offset_tag {
            0 => OffsetRef::Int(self.offset_number),
            1 => OffsetRef::Float(f64::from_bits(self.offset_number as u64)),
            2 => OffsetRef::String(text(bytes)),
            _ => OffsetRef::Bytes(bytes),
        };
        let body = self.body.as_slice();
        Event {
            offset,
            timestamp: chrono::DateTime::from_timestamp_micros(self.timestamp_micros)
                .unwrap_or_default(),
            category: self.category.as_str(),
            body: if self.body_is_json {
                Body::Json(text(body))
            } else {
                Body::Bytes(body)
            },
        }
    }
}

/// The handler object as the host sees it across the boundary.
#[sabi_trait]
pub trait HandlerFfi: Send {
    fn handle(&mut self, event: REventRef<'_>) -> RResult<(), RPluginError>;
    #[sabi(last_prefix_field)]
    fn save(&mut self) -> RResult<(), RPluginError>;
}

/// A boxed handler trait object, owned by the host.
pub type HandlerBox = HandlerFfi_TO<'static, RBox<()>>;

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    pub describe: extern "C" fn() -> RResult<RPluginInfo, RPluginError>,
    pub validate_settings: extern "C" fn(RStr<'_>, RStr<'_>) -> RResult<(), RPluginError>,
    /// The host hands over its log function right after loading.
    pub set_host_log: extern "C" fn(crate::log::HostLog),
    /// Arguments: class name, settings as JSON text, the config file's directory.
    pub new_consumer:
        extern "C" fn(RStr<'_>, RStr<'_>, RStr<'_>) -> RResult<ConsumerBox, RPluginError>,
    /// Arguments: class name, settings as JSON text, the config file's directory.
    #[sabi(last_prefix_field)]
    pub new_handler:
        extern "C" fn(RStr<'_>, RStr<'_>, RStr<'_>) -> RResult<HandlerBox, RPluginError>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "buslink_plugin";
    const NAME: &'static str = "buslink_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The symbol under which [`API_VERSION_NUL`] is exported, read by the host before anything else.
pub const API_VERSION_SYMBOL: &str = "buslink_plugin_api_version";

/// The plugin-api version, NUL-terminated, as exported by every plugin.
pub const API_VERSION_NUL: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// One class entry of a plugin, built by [`export_plugin!`](crate::export_plugin).
pub struct ClassEntry {
    pub name: &'static str,
    pub description: &'static str,
    pub settings_doc: &'static str,
    pub commands: &'static [crate::consumer::CommandInfo],
    pub validate: fn(&str) -> PluginResult<()>,
    pub build: Builder,
}

/// Builds a class's object from its settings (JSON), the context and the plugin's name.
pub type BuildFn<T> = fn(&str, &Context, &'static str) -> PluginResult<T>;

/// How a class builds its object.
pub enum Builder {
    Consumer(BuildFn<ConsumerBox>),
    Handler(BuildFn<HandlerBox>),
}

impl ClassEntry {
    /// The entry of a consumer class.
    pub const fn consumer<C: ConsumerClass>() -> Self {
        ClassEntry {
            name: C::NAME,
            description: C::DESCRIPTION,
            settings_doc: C::SETTINGS_DOC,
            commands: C::COMMANDS,
            validate: validate_class::<C>,
            build: Builder::Consumer(build_consumer::<C>),
        }
    }

    /// The entry of a handler class.
    pub const fn handler<H: HandlerClass>() -> Self {
        ClassEntry {
            name: H::NAME,
            description: H::DESCRIPTION,
            settings_doc: H::SETTINGS_DOC,
            commands: &[],
            validate: validate_handler_class::<H>,
            build: Builder::Handler(build_handler::<H>),
        }
    }
}

/// A whole plugin: its name, version and classes, built by [`export_plugin!`](crate::export_plugin).
pub struct PluginDefinition {
    pub name: &'static str,
    pub version: &'static str,
    pub classes: &'static [ClassEntry],
}

impl PluginDefinition {
    fn class(&self, name: &str) -> PluginResult<&ClassEntry> {
        self.classes
            .iter()
            .find(|class| class.name == name)
            .ok_or_else(|| {
                let known: Vec<_> = self.classes.iter().map(|c| c.name).collect();
                PluginError::config(format!(
                    "plugin '{}' has no class '{name}' (it has: {})",
                    self.name,
                    known.join(", ")
                ))
                .with_key("class")
            })
    }
}

fn parse_settings<C: ConsumerClass>(settings_json: &str) -> PluginResult<C::Settings> {
    crate::settings::from_json(settings_json)
}

fn validate_class<C: ConsumerClass>(settings_json: &str) -> PluginResult<()> {
    C::validate(&parse_settings::<C>(settings_json)?)
}

fn validate_handler_class<H: HandlerClass>(settings_json: &str) -> PluginResult<()> {
    H::validate(&crate::settings::from_json(settings_json)?)
}

fn build_handler<H: HandlerClass>(
    settings_json: &str,
    context: &Context,
    plugin: &'static str,
) -> PluginResult<HandlerBox> {
    let settings = crate::settings::from_json(settings_json)?;
    H::validate(&settings)?;
    let handler = H::new(settings, context)?;
    let shim = HandlerShim {
        inner: handler,
        plugin,
        class: H::NAME,
    };
    Ok(HandlerFfi_TO::from_value(
        shim,
        abi_stable::sabi_trait::TD_Opaque,
    ))
}

fn build_consumer<C: ConsumerClass>(
    settings_json: &str,
    context: &Context,
    plugin: &'static str,
) -> PluginResult<ConsumerBox> {
    let settings = parse_settings::<C>(settings_json)?;
    C::validate(&settings)?;
    let consumer = C::new(settings, context)?;
    let shim = ConsumerShim {
        inner: consumer,
        plugin,
        class: C::NAME,
        poisoned_in: None,
    };
    Ok(ConsumerFfi_TO::from_value(
        shim,
        abi_stable::sabi_trait::TD_Opaque,
    ))
}

thread_local! {
    /// Whether this thread is inside [`contain`], whose caller reports the panic itself.
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
    /// Where the last contained panic happened.
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The plugin has its own copy of std, so its own panic hook: make it quiet for the panics that
/// [`contain`] reports as errors (one clear line in the host's log instead of the default
/// message and backtrace note), and leave it as it was for every other panic.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINING.with(Cell::get) {
                let location = info
                    .location()
                    .map(|at| format!("{}:{}", at.file(), at.line()));
                PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic becomes an [`ErrorKind::Internal`] error naming the place (`Err`), kept
/// apart from the errors `f` returns itself (`Ok(Err(..))`).
fn contain<T>(
    place: impl FnOnce() -> String,
    f: impl FnOnce() -> PluginResult<T>,
) -> Result<PluginResult<T>, PluginError> {
    install_panic_hook();
    let was_containing = CONTAINING.with(|flag| flag.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    CONTAINING.with(|flag| flag.set(was_containing));
    result.map_err(|payload| {
        let location = PANIC_LOCATION
            .with(|slot| slot.borrow_mut().take())
            .map(|at| format!(" at {at}"))
            .unwrap_or_default();
        PluginError::internal(format!(
            "{} panicked{location}: {}",
            place(),
            panic_message(payload.as_ref())
        ))
    })
}

/// Like [`contain`], with a panic reported as an ordinary error.
fn contain_flat<T>(
    place: impl FnOnce() -> String,
    f: impl FnOnce() -> PluginResult<T>,
) -> PluginResult<T> {
    contain(place, f).and_then(|result| result)
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

fn to_ffi<T>(result: PluginResult<T>) -> RResult<T, RPluginError> {
    result.map_err(RPluginError::from).into()
}

/// `describe` for a plugin definition.
pub fn describe(plugin: &'static PluginDefinition) -> RResult<RPluginInfo, RPluginError> {
    to_ffi(contain_flat(
        || format!("plugin '{}' in describe()", plugin.name),
        || {
            Ok(RPluginInfo {
                name: plugin.name.into(),
                version: plugin.version.into(),
                api_version: env!("CARGO_PKG_VERSION").into(),
                classes: plugin
                    .classes
                    .iter()
                    .map(|class| RClassInfo {
                        name: class.name.into(),
                        kind: match class.build {
                            Builder::Consumer(_) => RClassKind::Consumer,
                            Builder::Handler(_) => RClassKind::Handler,
                        },
                        description: class.description.into(),
                        settings_doc: class.settings_doc.into(),
                        commands: class
                            .commands
                            .iter()
                            .map(|command| RCommandInfo {
                                name: command.name.into(),
                                usage: command.usage.into(),
                                help: command.help.into(),
                            })
                            .collect(),
                    })
                    .collect(),
            })
        },
    ))
}

/// `set_host_log` for every plugin.
pub fn set_host_log(log: crate::log::HostLog) {
    crate::log::install(log);
}

/// `validate_settings` for a plugin definition.
pub fn validate_settings(
    plugin: &'static PluginDefinition,
    class: RStr<'_>,
    settings_json: RStr<'_>,
) -> RResult<(), RPluginError> {
    let class = class.as_str();
    to_ffi(contain_flat(
        || format!("plugin '{}' class '{class}' in validate()", plugin.name),
        || (plugin.class(class)?.validate)(settings_json.as_str()),
    ))
}

/// The kind of object a class builds, as named in errors.
fn kind_name(builder: &Builder) -> &'static str {
    match builder {
        Builder::Consumer(_) => "consumer",
        Builder::Handler(_) => "handler",
    }
}

/// What [`new_consumer`] and [`new_handler`] share: find `class`, check that `pick` finds the
/// wanted kind of builder in it (`wanted` names that kind), build with panics contained.
fn build<T>(
    plugin: &'static PluginDefinition,
    class: RStr<'_>,
    settings_json: RStr<'_>,
    config_dir: RStr<'_>,
    wanted: &str,
    pick: fn(&Builder) -> Option<BuildFn<T>>,
) -> RResult<T, RPluginError> {
    let class = class.as_str();
    let context = Context::new(config_dir.as_str());
    to_ffi(contain_flat(
        || format!("plugin '{}' class '{class}' in new()", plugin.name),
        || {
            let builder = &plugin.class(class)?.build;
            match pick(builder) {
                Some(build) => build(settings_json.as_str(), &context, plugin.name),
                None => Err(PluginError::config(format!(
                    "class '{class}' of plugin '{}' is a {} class, not a {wanted} class",
                    plugin.name,
                    kind_name(builder)
                ))
                .with_key("class")),
            }
        },
    ))
}

/// A consumer of class `C` built from its settings (JSON text) exactly as a plugin library's
/// `new_consumer` builds it (settings parsed, `validate`, `new`, the shim; panics contained),
/// without a library: for the conformance kit and for tests of a plugin in its own crate.
/// `plugin` names it in errors.
pub fn class_consumer<C: ConsumerClass>(
    settings_json: &str,
    config_dir: &std::path::Path,
    plugin: &'static str,
) -> PluginResult<ConsumerBox> {
    let context = Context::new(config_dir);
    contain_flat(
        || format!("plugin '{plugin}' class '{}' in new()", C::NAME),
        || build_consumer::<C>(settings_json, &context, plugin),
    )
}

/// A consumer served through the same shim as a plugin library's (its panics caught, its
/// errors and batches crossing the same FFI types), without a library: for a host's tests of
/// its own engine against an in-memory bus, as abi_stable's examples test their plugins.
/// `plugin` and `class` name it in errors.
pub fn consumer_box<C: Consumer>(
    consumer: C,
    plugin: &'static str,
    class: &'static str,
) -> ConsumerBox {
    ConsumerFfi_TO::from_value(
        ConsumerShim {
            inner: consumer,
            plugin,
            class,
            poisoned_in: None,
        },
        abi_stable::sabi_trait::TD_Opaque,
    )
}

/// A consumer behind the stable ABI (a library's [`ConsumerBox`]) as a plain [`Consumer`]:
/// the FFI types converted back, in one place. The host drives a library's consumer through
/// it, and so does the conformance kit.
pub struct FfiConsumer(pub ConsumerBox);

impl Consumer for FfiConsumer {
    fn open(&mut self) -> PluginResult<()> {
        self.0.open().into_result().map_err(Into::into)
    }
    fn close(&mut self) -> PluginResult<()> {
        self.0.close().into_result().map_err(Into::into)
    }
    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.0.seek_to_beginning().into_result().map_err(Into::into)
    }
    fn seek_to_end(&mut self) -> PluginResult<()> {
        self.0.seek_to_end().into_result().map_err(Into::into)
    }
    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        self.0
            .seek(&ROffset::from(offset))
            .into_result()
            .map_err(Into::into)
    }
    fn seek_after(&mut self, offset: &Offset) -> PluginResult<()> {
        self.0
            .seek_after(&ROffset::from(offset))
            .into_result()
            .map_err(Into::into)
    }
    fn next_offset(&self, offset: OffsetRef<'_>) -> Option<Offset> {
        self.0
            .next_offset(&ROffset::from(&offset.to_owned()))
            .into_option()
            .map(|next| Offset::from(&next))
    }
    fn set_timeout(&mut self, timeout: Option<Duration>) -> PluginResult<()> {
        let millis = timeout.map(|t| t.as_millis().min(u64::MAX as u128) as u64);
        self.0
            .set_timeout(millis.into())
            .into_result()
            .map_err(Into::into)
    }
    fn set_stop_when_drained(&mut self, stop: bool) -> PluginResult<()> {
        self.0
            .set_stop_when_drained(stop)
            .into_result()
            .map_err(Into::into)
    }
    fn poll(&mut self, batch: &mut EventBatch) -> PluginResult<PollStatus> {
        self.0.poll(batch).into_result().map_err(Into::into)
    }
    fn counters(&self) -> Vec<(String, u64)> {
        self.0
            .counters()
            .into_iter()
            .map(|pair| (pair.0.into_string(), pair.1))
            .collect()
    }
    fn query(&mut self, command: &str, args: &[String]) -> PluginResult<String> {
        let args: Vec<RString> = args.iter().map(|arg| arg.as_str().into()).collect();
        self.0
            .query(command.into(), args.as_slice().into())
            .into_result()
            .map(|text| text.into_string())
            .map_err(Into::into)
    }
    fn check_position(
        &mut self,
        last: &Offset,
        timestamp: chrono::DateTime<chrono::Utc>,
    ) -> PluginResult<()> {
        self.0
            .check_position(&ROffset::from(last), timestamp.timestamp_micros())
            .into_result()
            .map_err(Into::into)
    }
    fn lag(&mut self) -> Option<u64> {
        self.0.lag().into_option()
    }
    fn held_up(&mut self) -> Option<String> {
        self.0.held_up().into_option().map(RString::into_string)
    }
    fn bus_owns_position(&self) -> bool {
        self.0.bus_owns_position()
    }
    fn serve(&mut self) -> PluginResult<()> {
        self.0.serve().into_result().map_err(Into::into)
    }
    fn acknowledge(&mut self, offset: &Offset) -> PluginResult<()> {
        self.0
            .acknowledge(&ROffset::from(offset))
            .into_result()
            .map_err(Into::into)
    }
    fn find_next_event_of_category(
        &mut self,
        category: &str,
        found: &mut EventBatch,
    ) -> PluginResult<bool> {
        self.0
            .find_next_event_of_category(category.into(), found)
            .into_result()
            .map_err(Into::into)
    }
}

/// `new_consumer` for a plugin definition.
pub fn new_consumer(
    plugin: &'static PluginDefinition,
    class: RStr<'_>,
    settings_json: RStr<'_>,
    config_dir: RStr<'_>,
) -> RResult<ConsumerBox, RPluginError> {
    build(
        plugin,
        class,
        settings_json,
        config_dir,
        "consumer",
        |builder| match builder {
            Builder::Consumer(build) => Some(*build),
            Builder::Handler(_) => None,
        },
    )
}

/// `new_handler` for a plugin definition.
pub fn new_handler(
    plugin: &'static PluginDefinition,
    class: RStr<'_>,
    settings_json: RStr<'_>,
    config_dir: RStr<'_>,
) -> RResult<HandlerBox, RPluginError> {
    build(
        plugin,
        class,
        settings_json,
        config_dir,
        "handler",
        |builder| match builder {
            Builder::Handler(build) => Some(*build),
            Builder::Consumer(_) => None,
        },
    )
}

/// Wraps a plain [`EventHandler`]: converts types and contains panics. Unlike a consumer, a
/// handler stays usable after a panic: the event it panicked on is a failed event (retried,
/// then dead-lettered or queued by the host's policy) and the next events go on.
struct HandlerShim<H> {
    inner: H,
    plugin: &'static str,
    class: &'static str,
}

impl<H: EventHandler> HandlerFfi for HandlerShim<H> {
    fn handle(&mut self, event: REventRef<'_>) -> RResult<(), RPluginError> {
        let (plugin, class, inner) = (self.plugin, self.class, &mut self.inner);
        let event = event.to_event();
        to_ffi(contain_flat(
            || format!("plugin '{plugin}' class '{class}' in handle()"),
            || inner.handle(&event),
        ))
    }

    fn save(&mut self) -> RResult<(), RPluginError> {
        let (plugin, class, inner) = (self.plugin, self.class, &mut self.inner);
        to_ffi(contain_flat(
            || format!("plugin '{plugin}' class '{class}' in on_save()"),
            || inner.on_save(),
        ))
    }
}

/// Wraps a plain [`Consumer`]: converts types, contains panics, and refuses every call after one.
struct ConsumerShim<C> {
    inner: C,
    plugin: &'static str,
    class: &'static str,
    poisoned_in: Option<&'static str>,
}

impl<C: Consumer> ConsumerShim<C> {
    fn guard<T>(
        &mut self,
        method: &'static str,
        call: impl FnOnce(&mut C) -> PluginResult<T>,
    ) -> RResult<T, RPluginError> {
        if let Some(earlier) = self.poisoned_in {
            return to_ffi(Err(PluginError::internal(format!(
                "plugin '{}' class '{}' is unusable after it panicked in {earlier}()",
                self.plugin, self.class
            ))));
        }
        let (plugin, class) = (self.plugin, self.class);
        let inner = &mut self.inner;
        let result = contain(
            || format!("plugin '{plugin}' class '{class}' in {method}()"),
            || call(inner),
        )
        .unwrap_or_else(|panic| {
            self.poisoned_in = Some(method);
            Err(panic)
        });
        to_ffi(result)
    }

    /// A question with no error to give (`lag`, `held_up`): `None` from a consumer that
    /// panicked before, or panics now.
    fn ask<T>(&mut self, question: impl FnOnce(&mut C) -> Option<T>) -> Option<T> {
        if self.poisoned_in.is_some() {
            return None;
        }
        catch_unwind(AssertUnwindSafe(|| question(&mut self.inner)))
            .ok()
            .flatten()
    }
}

impl<C: Consumer> ConsumerFfi for ConsumerShim<C> {
    fn open(&mut self) -> RResult<(), RPluginError> {
        self.guard("open", |c| c.open())
    }

    fn close(&mut self) -> RResult<(), RPluginError> {
        self.guard("close", |c| c.close())
    }

    fn seek_to_beginning(&mut self) -> RResult<(), RPluginError> {
        self.guard("seek_to_beginning", |c| c.seek_to_beginning())
    }

    fn seek_to_end(&mut self) -> RResult<(), RPluginError> {
        self.guard("seek_to_end", |c| c.seek_to_end())
    }

    fn seek(&mut self, offset: &ROffset) -> RResult<(), RPluginError> {
        let offset = Offset::from(offset);
        self.guard("seek", |c| c.seek(&offset))
    }

    fn seek_after(&mut self, offset: &ROffset) -> RResult<(), RPluginError> {
        let offset = Offset::from(offset);
        self.guard("seek_after", |c| c.seek_after(&offset))
    }

    fn next_offset(&self, offset: &ROffset) -> ROption<ROffset> {
        if self.poisoned_in.is_some() {
            return ROption::RNone;
        }
        let offset = Offset::from(offset);
        catch_unwind(AssertUnwindSafe(|| self.inner.next_offset(offset.as_ref())))
            .ok()
            .flatten()
            .map(|next| ROffset::from(&next))
            .into()
    }

    fn counters(&self) -> RVec<Tuple2<RString, u64>> {
        if self.poisoned_in.is_some() {
            return RVec::new();
        }
        catch_unwind(AssertUnwindSafe(|| self.inner.counters()))
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| Tuple2(RString::from(name), value))
            .collect()
    }

    fn query(
        &mut self,
        command: RStr<'_>,
        args: RSlice<'_, RString>,
    ) -> RResult<RString, RPluginError> {
        let args: Vec<String> = args.iter().map(|arg| arg.as_str().to_owned()).collect();
        self.guard("query", |c| {
            c.query(command.as_str(), &args).map(RString::from)
        })
    }

    fn set_timeout(&mut self, timeout_ms: ROption<u64>) -> RResult<(), RPluginError> {
        let timeout = timeout_ms.into_option().map(Duration::from_millis);
        self.guard("set_timeout", |c| c.set_timeout(timeout))
    }

    fn poll(&mut self, batch: &mut EventBatch) -> RResult<PollStatus, RPluginError> {
        self.guard("poll", |c| c.poll(batch))
    }

    fn find_next_event_of_category(
        &mut self,
        category: RStr<'_>,
        found: &mut EventBatch,
    ) -> RResult<bool, RPluginError> {
        self.guard("find_next_event_of_category", |c| {
            c.find_next_event_of_category(category.as_str(), found)
        })
    }

    fn check_position(
        &mut self,
        last: &ROffset,
        timestamp_micros: i64,
    ) -> RResult<(), RPluginError> {
        let last = Offset::from(last);
        let timestamp =
            chrono::DateTime::from_timestamp_micros(timestamp_micros).unwrap_or_default();
        self.guard("check_position", |c| c.check_position(&last, timestamp))
    }

    fn set_stop_when_drained(&mut self, stop: bool) -> RResult<(), RPluginError> {
        self.guard("set_stop_when_drained", |c| c.set_stop_when_drained(stop))
    }

    fn lag(&mut self) -> ROption<u64> {
        self.ask(|c| c.lag()).into()
    }

    fn held_up(&mut self) -> ROption<RString> {
        self.ask(|c| c.held_up()).map(RString::from).into()
    }

    fn bus_owns_position(&self) -> bool {
        if self.poisoned_in.is_some() {
            return false;
        }
        catch_unwind(AssertUnwindSafe(|| self.inner.bus_owns_position())).unwrap_or(false)
    }

    fn acknowledge(&mut self, offset: &ROffset) -> RResult<(), RPluginError> {
        let offset = Offset::from(offset);
        self.guard("acknowledge", |c| c.acknowledge(&offset))
    }

    fn serve(&mut self) -> RResult<(), RPluginError> {
        self.guard("serve", |c| c.serve())
    }
}
