//! Plugins: finding a library, loading it through the stable ABI, and driving its consumer.
//!
//! **Architecture invariant:** this module (and `handlers::plugin`, which drives a handler
//! plugin's trait object) are the only places that see plugin-api's FFI types (`RString`,
//! `RResult`, `*_TO`); everything else gets plain host types.

mod consumer;
mod executable;
mod loader;
mod private_copy;
pub mod python_sdk;
mod trust;

pub use buslink_plugin_api::ffi::HandlerBox;
pub use consumer::{ConsumerError, PluginConsumer};
pub use executable::{find_executable, is_plugin_executable, EXECUTABLE_PREFIX};
pub use loader::{find_library, ClassInfo, LoadError, LoadedPlugin, PluginInfo};
pub use private_copy::{DiskIdentity, LibraryWatch};
