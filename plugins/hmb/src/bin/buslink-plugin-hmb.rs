//! The HMB consumer as a plugin executable: the same `HmbConsumer` as the library, served over
//! the subprocess protocol on standard input and output (docs/subprocess-protocol.md).

fn main() -> std::process::ExitCode {
    buslink_plugin_api::serve::serve_stdio::<buslink_hmb::HmbConsumer>(
        "hmb",
        env!("CARGO_PKG_VERSION"),
    )
}
