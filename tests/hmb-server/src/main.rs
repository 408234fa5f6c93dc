//! `buslink-hmb-server`: runs the test HMB server until SIGINT, SIGTERM or
//! `POST /_admin/shutdown`. The first line on stdout is
//! `listening on ADDR`.

mod cli;

use std::io::Write as _;
use std::process::ExitCode;

use buslink_hmb_server::Server;
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let server = match Server::start(cli.settings()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("buslink-hmb-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.addr());
    let _ = std::io::stdout().flush();

    let waiter = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("buslink-hmb-server: cannot wait for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    waiter.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let sigterm = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let max_seconds = cli.max_seconds;
        let lifetime = async move {
            match max_seconds {
                0 => std::future::pending().await,
                seconds => tokio::time::sleep(std::time::Duration::from_secs(seconds)).await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm => {}
            _ = lifetime => {}
            _ = server.stop_requested() => {}
        }
    });
    server.shutdown();
    ExitCode::SUCCESS
}
