//! Plugins: finding a library, loading it through the stable ABI, and driving its consumer.
//!
//! **Architecture invariant:** this module is the only place that sees plugin-api's FFI types
//! (`RString`, `RResult`, `*_TO`); everything it returns is a plain host type.

mod consumer;
mod loader;

pub use consumer::{ConsumerError, PluginConsumer};
pub use loader::{find_library, ClassInfo, LoadError, LoadedPlugin, PluginInfo};
