//! Finding and loading plugin libraries, with one clear error per way it can fail.

use super::consumer::PluginConsumer;
use super::executable::Executable;
use super::private_copy::{DiskIdentity, LibraryWatch, PrivateCopy};
use crate::config::{HermesPlugin, PluginCommand};
use abi_stable::std_types::RStr;
use buslink_plugin_api::ffi::{HandlerBox, PluginModuleRef, RClassKind, API_VERSION_SYMBOL};
use buslink_plugin_api::log::{HostLog, Level};
use buslink_plugin_api::subprocess::{self, SubprocessConsumer};
use buslink_plugin_api::{PluginError, API_VERSION};
use std::ffi::CStr;
use std::os::raw::c_char;
use std::path::{Path, PathBuf};

/// Why a plugin library could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin '{name}' not found; tried: {}", list_paths(.tried))]
    NotFound { name: String, tried: Vec<PathBuf> },
    #[error("plugin library {}: no such file", .path.display())]
    MissingFile { path: PathBuf },
    #[error("plugin library {}: is a directory, not a library", .path.display())]
    Directory { path: PathBuf },
    #[error("plugin library {}: not a loadable library ({reason})", .path.display())]
    NotALibrary { path: PathBuf, reason: String },
    #[error("plugin library {}: not a buslink plugin (it exports no buslink plugin module)", .path.display())]
    NotAPlugin { path: PathBuf },
    #[error(
        "plugin library {}: built against plugin-api {found}, but this buslink uses plugin-api \
         {expected}; rebuild the plugin against plugin-api {expected}",
        .path.display()
    )]
    IncompatibleApi {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("plugin library {}: its types do not match this buslink's plugin-api {expected} \
             ({summary}); rebuild the plugin against plugin-api {expected}", .path.display())]
    LayoutMismatch {
        path: PathBuf,
        expected: String,
        summary: String,
    },
    #[error("plugin library {}: {message}", .path.display())]
    Failed { path: PathBuf, message: String },
    #[error("plugin executable {}: cannot be run: {reason}", .path.display())]
    NotAnExecutable { path: PathBuf, reason: String },
    #[error("plugin executable {}: {error}", .path.display())]
    Process { path: PathBuf, error: PluginError },
    #[error(
        "plugin {}: not loaded: {reason}. Loading a plugin runs its code as buslink: make \
         it and its directory writable only by their owner, root or buslink's user (chmod \
         go-w, chown), or set allow_insecure_plugins = true at the top of the config",
        .path.display()
    )]
    Insecure { path: PathBuf, reason: String },
    #[error("plugin '{plugin}' ({}): {error}", .path.display())]
    Plugin {
        plugin: String,
        path: PathBuf,
        error: PluginError,
    },
}

fn list_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing (no plugin_dirs configured)".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One class of a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassInfo {
    pub name: String,
    pub description: String,
    pub settings_doc: String,
    /// Operator commands: name, usage, help.
    pub commands: Vec<(String, String, String)>,
}

/// Where plugin log lines go: the host's tracing, tagged with the plugin.
extern "C" fn plugin_log(level: Level, message: RStr<'_>) {
    let message = message.as_str();
    match level {
        Level::Error => tracing::error!(target: "plugin", "{message}"),
        Level::Warn => tracing::warn!(target: "plugin", "{message}"),
        Level::Info => tracing::info!(target: "plugin", "{message}"),
        Level::Debug => tracing::debug!(target: "plugin", "{message}"),
    }
}

/// What a plugin says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    /// A library's plugin-api version (`0.5.0`), or an executable's protocol version (`1`).
    pub api_version: String,
    /// Whether it is a plugin executable (run as a child process), not a library.
    pub executable: bool,
    pub consumer_classes: Vec<ClassInfo>,
    pub handler_classes: Vec<ClassInfo>,
}

impl PluginInfo {
    /// How the plugin speaks to buslink, for people: `plugin-api 0.5.0` or `subprocess
    /// protocol 1`.
    pub fn speaks(&self) -> String {
        if self.executable {
            format!("subprocess protocol {}", self.api_version)
        } else {
            format!("plugin-api {}", self.api_version)
        }
    }

    /// Why class `name` cannot serve as a consumer (`consumer`) or handler class of this
    /// plugin (at `path`): the classes it has of that kind, and whether `name` is one of the
    /// other kind.
    pub fn missing_class(&self, path: &Path, consumer: bool, name: &str) -> String {
        let (kind, other, wanted, others) = if consumer {
            (
                "consumer",
                "handler",
                &self.consumer_classes,
                &self.handler_classes,
            )
        } else {
            (
                "handler",
                "consumer",
                &self.handler_classes,
                &self.consumer_classes,
            )
        };
        let known: Vec<_> = wanted.iter().map(|c| c.name.as_str()).collect();
        let mut message = format!(
            "plugin '{}' ({}) has no {kind} class '{name}'; its {kind} classes: {}",
            self.name,
            path.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
        if others.iter().any(|c| c.name == name) {
            message.push_str(&format!(
                " ('{name}' is a {other} class: {})",
                if consumer {
                    "use it in a [[handlers]] entry with type = \"plugin\""
                } else {
                    "use it as [consumer] class"
                }
            ));
        }
        message
    }
}

/// A plugin ready to build consumers: a loaded library, or a plugin executable that answered
/// the handshake. Libraries are never unloaded (abi_stable keeps them for the life of the
/// process); an executable runs as one child per consumer.
pub struct LoadedPlugin {
    path: PathBuf,
    code: Code,
    info: PluginInfo,
    /// The file's identity when it was read.
    on_disk: Option<DiskIdentity>,
}

/// Where a plugin's code runs.
enum Code {
    /// In the daemon: the library's root module.
    Library {
        module: PluginModuleRef,
        /// Where the code was loaded from (kept open for the life of the library).
        _copy: Option<PrivateCopy>,
    },
    /// In a child process per consumer.
    Executable(Executable),
}

/// Finds a plugin library: `plugin` is a path (it contains a `/` or ends in `.so`, relative to
/// `base_dir`) or a name looked up in `plugin_dirs` as `libbuslink_NAME.so`, `libNAME.so`,
/// `NAME.so` or `NAME`.
pub fn find_library(
    plugin: &str,
    base_dir: &Path,
    plugin_dirs: &[PathBuf],
) -> Result<PathBuf, LoadError> {
    let as_path = Path::new(plugin);
    let is_path = plugin.contains('/')
        || (plugin.ends_with(std::env::consts::DLL_SUFFIX) && plugin_dirs.is_empty());
    if is_path {
        return Ok(if as_path.is_absolute() {
            as_path.to_path_buf()
        } else {
            base_dir.join(as_path)
        });
    }
    let stem = plugin.replace('-', "_");
    let (prefix, suffix) = (std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let mut names = vec![
        format!("{prefix}buslink_{stem}{suffix}"),
        format!("{prefix}{stem}{suffix}"),
        format!("{plugin}{suffix}"),
        plugin.to_owned(),
    ];
    names.dedup();
    let mut tried = Vec::new();
    for dir in plugin_dirs {
        for name in &names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(candidate);
        }
    }
    Err(LoadError::NotFound {
        name: plugin.to_owned(),
        tried,
    })
}

/// Whether a plugin built against plugin-api `found` may be loaded by this host: same major
/// version, and for 0.x versions the same minor one.
fn api_compatible(found: &str, expected: &str) -> bool {
    let parts = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parts(found), parts(expected)) {
        (Some((0, a)), Some((0, b))) => a == b,
        (Some((a, _)), Some((b, _))) => a == b,
        _ => false,
    }
}

/// Opens a library (`path` must be a file), for its private copy.
fn open_library(path: &Path) -> Result<std::fs::File, LoadError> {
    let metadata = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            LoadError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            LoadError::NotALibrary {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        }
    })?;
    if metadata.is_dir() {
        return Err(LoadError::Directory {
            path: path.to_path_buf(),
        });
    }
    std::fs::File::open(path).map_err(|e| LoadError::NotALibrary {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads the plugin-api version a library (the file at `path`, loaded from `load_path`, its
/// private copy) was built against, without using abi_stable (which prints pages of layout
/// diffs for an incompatible library). Gives back the loaded library too: held open while
/// abi_stable loads the same path, that load finds it loaded instead of mapping and relocating
/// it a second time.
fn probe_api_version(
    path: &Path,
    load_path: &Path,
) -> Result<(String, libloading::Library), LoadError> {
    // SAFETY: loading a library runs its initialisers: plugin_dirs hold trusted code, as the
    // operator's documentation says.
    let library =
        unsafe { libloading::Library::new(load_path) }.map_err(|e| LoadError::NotALibrary {
            path: path.to_path_buf(),
            reason: short_dl_error(&e.to_string(), load_path),
        })?;
    // SAFETY: the symbol is the `extern "C" fn() -> *const c_char` that export_plugin!
    // generates; it returns a pointer to a static NUL-terminated string.
    let version = unsafe {
        let symbol: libloading::Symbol<'_, extern "C" fn() -> *const c_char> = library
            .get(API_VERSION_SYMBOL.as_bytes())
            .map_err(|_| LoadError::NotAPlugin {
                path: path.to_path_buf(),
            })?;
        let pointer = symbol();
        if pointer.is_null() {
            return Err(LoadError::NotAPlugin {
                path: path.to_path_buf(),
            });
        }
        CStr::from_ptr(pointer).to_string_lossy().into_owned()
    };
    Ok((version, library))
}

/// dlopen errors repeat the path; keep the reason.
fn short_dl_error(message: &str, path: &Path) -> String {
    let path_text = path.display().to_string();
    let reason = message.rsplit(": ").next().unwrap_or(message);
    if reason.contains(&path_text) || reason.is_empty() {
        message.to_owned()
    } else {
        reason.to_owned()
    }
}

/// The useful lines of abi_stable's (very long) layout report.
fn summarise_abi_report(report: &str) -> String {
    let mut found: Vec<String> = report
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Error:"))
        .map(|line| line.trim().to_owned())
        .collect();
    found.dedup();
    if found.is_empty() {
        report
            .lines()
            .next()
            .unwrap_or("layout mismatch")
            .to_owned()
    } else {
        found.truncate(3);
        found.join("; ")
    }
}

/// The libraries this process loaded, by path, with the file's identity then.
type LoadedLibraries = Vec<(PathBuf, DiskIdentity, std::sync::Arc<LoadedPlugin>)>;
static LOADED: std::sync::Mutex<LoadedLibraries> = std::sync::Mutex::new(Vec::new());

impl LoadedPlugin {
    /// [`load`](Self::load), once per library file: consumers of one library in one process
    /// share its code (and its private copy). A file changed since (an upgraded plugin) is
    /// loaded anew; the older code stays loaded for the consumers that run it.
    pub fn shared(
        path: &Path,
        allow_insecure: bool,
    ) -> Result<std::sync::Arc<LoadedPlugin>, LoadError> {
        let identity = DiskIdentity::of(path);
        let mut loaded = LOADED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(identity) = &identity {
            if let Some((_, _, plugin)) = loaded
                .iter()
                .find(|(known, same, _)| known == path && same == identity)
            {
                // The trust check holds for every use, not only the first.
                if !allow_insecure {
                    if let Some(reason) = super::trust::insecure(path) {
                        return Err(LoadError::Insecure {
                            path: path.to_path_buf(),
                            reason,
                        });
                    }
                }
                return Ok(plugin.clone());
            }
        }
        let plugin = std::sync::Arc::new(LoadedPlugin::load(path, allow_insecure)?);
        if let Some(identity) = plugin.on_disk.clone() {
            loaded.push((path.to_path_buf(), identity, plugin.clone()));
        }
        Ok(plugin)
    }

    /// Loads a plugin library and asks it to describe itself. A library that another user could
    /// change is refused unless `allow_insecure` ([`LoadError::Insecure`]).
    ///
    /// The library is read once and loaded from a sealed private copy ([`PrivateCopy`]), so
    /// that writing over its file while the daemon runs cannot touch the loaded code; where
    /// memory files are not available it is loaded from its file, with a warning.
    pub fn load(path: &Path, allow_insecure: bool) -> Result<LoadedPlugin, LoadError> {
        if let Some(reason) = super::trust::insecure(path) {
            if !allow_insecure {
                return Err(LoadError::Insecure {
                    path: path.to_path_buf(),
                    reason,
                });
            }
            tracing::warn!(
                "plugin library {}: {reason}; loaded anyway (allow_insecure_plugins = true)",
                path.display()
            );
        }
        let on_disk = DiskIdentity::of(path);
        let mut file = open_library(path)?;
        let name = path
            .file_name()
            .map_or_else(|| "plugin".into(), |n| n.to_string_lossy());
        let copy = match PrivateCopy::new(&name, &mut file) {
            Ok(copy) => Some(copy),
            Err(e) => {
                tracing::warn!(
                    "plugin library {}: cannot make a private copy ({e}); loading the file \
                     itself: do not write over it while buslink runs",
                    path.display()
                );
                None
            }
        };
        drop(file);
        let load_path = copy.as_ref().map_or(path, PrivateCopy::load_path);
        let (found, probed) = probe_api_version(path, load_path)?;
        if !api_compatible(&found, API_VERSION) {
            return Err(LoadError::IncompatibleApi {
                path: path.to_path_buf(),
                found,
                expected: API_VERSION.to_owned(),
            });
        }
        let header = abi_stable::library::lib_header_from_path(load_path).map_err(|e| {
            LoadError::Failed {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        // abi_stable keeps its own handle for the life of the process.
        drop(probed);
        let module = header
            .init_root_module::<PluginModuleRef>()
            .map_err(|e| match e {
                abi_stable::library::LibraryError::AbiInstability(report) => {
                    LoadError::LayoutMismatch {
                        path: path.to_path_buf(),
                        expected: API_VERSION.to_owned(),
                        summary: summarise_abi_report(&report.to_string()),
                    }
                }
                other => LoadError::Failed {
                    path: path.to_path_buf(),
                    message: summarise_abi_report(&other.to_string()),
                },
            })?;
        module.set_host_log()(HostLog { log: plugin_log });
        let info = module.describe()()
            .into_result()
            .map_err(|e| LoadError::Plugin {
                plugin: path.display().to_string(),
                path: path.to_path_buf(),
                error: e.into(),
            })?;
        let (consumers, handlers): (Vec<_>, Vec<_>) = info
            .classes
            .into_iter()
            .partition(|class| class.kind == RClassKind::Consumer);
        let classes = |list: Vec<buslink_plugin_api::ffi::RClassInfo>| -> Vec<ClassInfo> {
            list.into_iter()
                .map(|class| ClassInfo {
                    name: class.name.into_string(),
                    description: class.description.into_string(),
                    settings_doc: class.settings_doc.into_string(),
                    commands: class
                        .commands
                        .into_iter()
                        .map(|c| {
                            (
                                c.name.into_string(),
                                c.usage.into_string(),
                                c.help.into_string(),
                            )
                        })
                        .collect(),
                })
                .collect()
        };
        let info = PluginInfo {
            name: info.name.into_string(),
            version: info.version.into_string(),
            api_version: info.api_version.into_string(),
            executable: false,
            consumer_classes: classes(consumers),
            handler_classes: classes(handlers),
        };
        Ok(LoadedPlugin {
            path: path.to_path_buf(),
            code: Code::Library {
                module,
                _copy: copy,
            },
            info,
            on_disk,
        })
    }

    /// A plugin executable (found at `program`; `config`: its arguments, environment and
    /// trace switch, `None` for the program alone): the same trust rule as a library's, then
    /// it is started once to shake hands and say what it is (the child ends at once; every
    /// consumer gets its own). `config_dir` is the child's working directory.
    pub fn executable(
        program: &Path,
        config: Option<&PluginCommand>,
        allow_insecure: bool,
        config_dir: &Path,
    ) -> Result<LoadedPlugin, LoadError> {
        if let Some(reason) = super::trust::insecure(program) {
            if !allow_insecure {
                return Err(LoadError::Insecure {
                    path: program.to_path_buf(),
                    reason,
                });
            }
            tracing::warn!(
                "plugin executable {}: {reason}; run anyway (allow_insecure_plugins = true)",
                program.display()
            );
        }
        let executable = match config {
            Some(config) => Executable::new(program, config),
            None => Executable::bare(program),
        };
        Self::start_executable(program, executable, config_dir)
    }

    /// An unchanged Hermes messagebus consumer plugin (`plugin = { hermes_plugin = "DIR" }`):
    /// the Python side of buslink, carried in the binary, serves it in a child run by
    /// `python` (found in `PATH` when it has no `/`). The trust rule holds for the plugin's
    /// module and directory and for `hermes_root`. Its path is the module (`DIR/NAME.py`): a
    /// reload restarts the consumer when it was replaced. The plugin's class is served under
    /// the name `class` (the consumer's `class`).
    pub fn hermes(
        config: &HermesPlugin,
        class: &str,
        base_dir: &Path,
        allow_insecure: bool,
    ) -> Result<LoadedPlugin, LoadError> {
        let dir = base_dir.join(&config.dir);
        let name = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let module = dir.join(format!("{name}.py"));
        if !module.is_file() {
            return Err(LoadError::MissingFile { path: module });
        }
        let root = config.hermes_root.as_ref().map(|root| base_dir.join(root));
        for path in std::iter::once(&module).chain(root.as_ref()) {
            if let Some(reason) = super::trust::insecure(path) {
                if !allow_insecure {
                    return Err(LoadError::Insecure {
                        path: path.clone(),
                        reason,
                    });
                }
                tracing::warn!(
                    "Hermes plugin {}: {reason}; run anyway (allow_insecure_plugins = true)",
                    path.display()
                );
            }
        }
        let python = super::executable::find_executable(&config.python, base_dir, &[])?;
        let sdk = super::python_sdk::package_parent().map_err(|e| LoadError::NotAnExecutable {
            path: python.clone(),
            reason: format!("cannot write the Python side of buslink: {e}"),
        })?;
        let executable = Executable::hermes(&python, &sdk, &dir, root.as_deref(), config, class);
        Self::start_executable(&module, executable, base_dir)
    }

    /// Starts `executable` once to shake hands; `path` is the file whose identity a reload
    /// compares.
    fn start_executable(
        path: &Path,
        executable: Executable,
        config_dir: &Path,
    ) -> Result<LoadedPlugin, LoadError> {
        let on_disk = DiskIdentity::of(path);
        let spec = executable.spec("", serde_json::Value::Null, config_dir);
        let hello = subprocess::describe(&spec).map_err(|error| LoadError::Process {
            path: path.to_path_buf(),
            error,
        })?;
        let info = PluginInfo {
            name: hello.plugin.name.clone(),
            version: hello.plugin.version.clone(),
            api_version: hello.chosen.to_string(),
            executable: true,
            consumer_classes: hello
                .classes
                .iter()
                .map(|class| ClassInfo {
                    name: class.name.clone(),
                    description: class.description.clone(),
                    settings_doc: class.settings_doc.clone(),
                    commands: Vec::new(),
                })
                .collect(),
            handler_classes: Vec::new(),
        };
        Ok(LoadedPlugin {
            path: path.to_path_buf(),
            code: Code::Executable(executable),
            info,
            on_disk,
        })
    }

    /// Whether the plugin runs as a child process (an executable) rather than in the daemon.
    pub fn is_executable(&self) -> bool {
        matches!(self.code, Code::Executable(_))
    }

    /// What the plugin says about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The library's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the library's file changed since it was read (an upgraded plugin): a reload
    /// restarts its consumers on the new code.
    pub fn changed_on_disk(&self) -> bool {
        self.on_disk.is_some() && DiskIdentity::of(&self.path) != self.on_disk
    }

    /// A watch that tells when the file at [`path`](Self::path) is no longer the one that was
    /// loaded (written over, replaced or deleted since).
    pub fn watch(&self) -> LibraryWatch {
        if self.is_executable() {
            LibraryWatch::executable(&self.path, self.on_disk.clone())
        } else {
            LibraryWatch::new(&self.path, self.on_disk.clone())
        }
    }

    /// Lets the plugin check settings (JSON text) for a class, without connecting (an
    /// executable builds its consumer in a child that ends at once).
    pub fn validate_settings(
        &self,
        class: &str,
        settings_json: &str,
        config_dir: &Path,
    ) -> Result<(), PluginError> {
        match &self.code {
            Code::Library { module, .. } => {
                module.validate_settings()(class.into(), settings_json.into())
                    .into_result()
                    .map_err(PluginError::from)
            }
            Code::Executable(_) => self
                .new_consumer(class, settings_json, config_dir)
                .map(drop),
        }
    }

    /// Builds a consumer of `class` with its settings (JSON text); relative paths in the
    /// settings resolve against `config_dir`.
    pub fn new_consumer(
        &self,
        class: &str,
        settings_json: &str,
        config_dir: &Path,
    ) -> Result<PluginConsumer, PluginError> {
        let module = match &self.code {
            Code::Library { module, .. } => module,
            Code::Executable(executable) => {
                let settings = serde_json::from_str(settings_json)
                    .map_err(|e| PluginError::config(format!("the settings are not JSON: {e}")))?;
                let spec = executable.spec(class, settings, config_dir);
                let consumer = SubprocessConsumer::start(spec)?;
                return Ok(PluginConsumer::process(consumer, &self.info.name, class));
            }
        };
        let config_dir = config_dir.to_string_lossy();
        let inner = module.new_consumer()(
            class.into(),
            settings_json.into(),
            config_dir.as_ref().into(),
        )
        .into_result()
        .map_err(PluginError::from)?;
        Ok(PluginConsumer::new(inner, &self.info.name, class))
    }

    /// Builds a handler of `class` with its settings (JSON text).
    pub fn new_handler(
        &self,
        class: &str,
        settings_json: &str,
        config_dir: &Path,
    ) -> Result<HandlerBox, PluginError> {
        let Code::Library { module, .. } = &self.code else {
            return Err(PluginError::config(format!(
                "plugin executable {} has no handler classes: handler plugins are libraries",
                self.path.display()
            )));
        };
        let config_dir = config_dir.to_string_lossy();
        module.new_handler()(
            class.into(),
            settings_json.into(),
            config_dir.as_ref().into(),
        )
        .into_result()
        .map_err(PluginError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_follow_semver_for_zero_versions() {
        assert!(api_compatible("0.1.0", "0.1.3"));
        assert!(!api_compatible("0.2.0", "0.1.0"));
        assert!(api_compatible("1.4.0", "1.0.0"));
        assert!(!api_compatible("2.0.0", "1.0.0"));
        assert!(!api_compatible("garbage", "0.1.0"));
    }

    #[test]
    fn abi_report_keeps_error_lines() {
        let report = "lots\nof text\nError:incompatible type size Expected: 112 Found: 120\nmore";
        assert_eq!(
            summarise_abi_report(report),
            "incompatible type size Expected: 112 Found: 120"
        );
    }

    #[test]
    fn names_are_looked_up_in_plugin_dirs_and_tried_paths_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libbuslink_sqlite.so"), b"x").unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        assert_eq!(
            find_library("sqlite", Path::new("/"), &dirs).unwrap(),
            dir.path().join("libbuslink_sqlite.so")
        );
        assert_eq!(
            find_library("libbuslink_sqlite.so", Path::new("/"), &dirs).unwrap(),
            dir.path().join("libbuslink_sqlite.so")
        );
        let error = find_library("hmb", Path::new("/"), &dirs)
            .unwrap_err()
            .to_string();
        assert!(error.contains("libbuslink_hmb.so"), "{error}");
        assert!(error.contains("plugin 'hmb' not found"), "{error}");
    }
}
