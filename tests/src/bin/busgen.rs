//! `buslink-busgen`: writes a Hermes sqlite bus of realistic events (the demo bus, big buses for
//! benchmarks, buses for manual tests).
//!
//! `buslink-busgen --out bus.sqlite --events 100000` creates or appends.

use anyhow::Context;
use buslink_testkit::{hermes_events, HermesBusWriter};
use clap::Parser;
use std::path::PathBuf;

/// Write a Hermes sqlite bus of realistic events.
#[derive(Parser)]
struct Args {
    /// The bus file to create or append to.
    #[arg(long)]
    out: PathBuf,
    /// How many events to write.
    #[arg(long, default_value_t = 1000)]
    events: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut writer = HermesBusWriter::open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    writer
        .append_all(hermes_events(args.events))
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {} events to {}", args.events, args.out.display());
    Ok(())
}
