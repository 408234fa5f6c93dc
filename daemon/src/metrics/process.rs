//! The daemon process's own series, read from `/proc/self` at each scrape (the `procfs`
//! crate), under the names every Prometheus client library uses for them
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), so that the usual
//! dashboards and alerts for a process work on buslink unchanged. Off Linux, or when
//! `/proc` cannot be read, a series is left out (never shown as 0).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Collects the process series at each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One series: name, help text, value, whether it is a counter.
type Series = (&'static str, &'static str, f64, bool);

/// The process's series as `/proc/self` tells them now (fewer when some cannot be read).
fn read() -> Vec<Series> {
    let mut series = Vec::new();
    let Ok(me) = procfs::process::Process::myself() else {
        return series;
    };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        series.push((
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            (stat.utime + stat.stime) as f64 / ticks,
            true,
        ));
        series.push((
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            (stat.rss * procfs::page_size()) as f64,
            false,
        ));
        series.push((
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            stat.vsize as f64,
            false,
        ));
        series.push((
            "process_threads",
            "Number of OS threads in the process",
            stat.num_threads as f64,
            false,
        ));
        if let Ok(boot) = procfs::boot_time_secs() {
            series.push((
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                boot as f64 + stat.starttime as f64 / ticks,
                false,
            ));
        }
    }
    if let Ok(open) = me.fd_count() {
        series.push((
            "process_open_fds",
            "Number of open file descriptors",
            open as f64,
            false,
        ));
    }
    if let Ok(limits) = me.limits() {
        if let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit {
            series.push((
                "process_max_fds",
                "Maximum number of open file descriptors",
                max as f64,
                false,
            ));
        }
    }
    series
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value, counter) in read() {
            if counter {
                let metric = ConstCounter::new(value);
                let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
                metric.encode(family)?;
            } else {
                let metric = ConstGauge::new(value);
                let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
                metric.encode(family)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_series_are_this_process_s() {
        let series = read();
        let value = |name: &str| {
            series
                .iter()
                .find(|(n, ..)| *n == name)
                .map(|(_, _, v, _)| *v)
                .unwrap_or_else(|| panic!("{name} in {series:?}"))
        };
        let file = std::fs::File::open("/proc/self/stat").expect("a file to hold open");
        assert!(value("process_open_fds") >= 1.0);
        drop(file);
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_threads") >= 1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );
        assert!(value("process_max_fds") >= value("process_open_fds"));
    }
}
