//! A measured run ([`Figure`]): its rate, latencies, client CPU and peak memory, and how
//! phases report pairs of them.

use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

/// One measured run: its rate and latencies.
pub(crate) struct Figure {
    pub(crate) operations: usize,
    pub(crate) seconds: f64,
    pub(crate) latencies: Vec<Duration>,
    pub(crate) peak_rss_kib: u64,
    /// CPU time of the whole process (client side only) during the phase.
    pub(crate) cpu_seconds: f64,
}

impl Figure {
    pub(crate) fn rate(&self) -> f64 {
        self.operations as f64 / self.seconds.max(f64::EPSILON)
    }

    /// The latency below which `permille` thousandths of the operations finished, in ms.
    pub(crate) fn percentile_ms(&self, permille: usize) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let index = (sorted.len() - 1) * permille / 1000;
        Some(sorted[index].as_secs_f64() * 1000.0)
    }

    /// Client CPU time per operation, in µs.
    pub(crate) fn cpu_per_op_us(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.operations.max(1) as f64
    }

    pub(crate) fn json(&self) -> Json {
        json!({
            "operations": self.operations, "seconds": self.seconds, "per_second": self.rate(),
            "p50_ms": self.percentile_ms(500), "p99_ms": self.percentile_ms(990),
            "peak_rss_kib": self.peak_rss_kib, "client_cpu_us_per_op": self.cpu_per_op_us(),
        })
    }

    pub(crate) fn line(&self, name: &str) -> String {
        let latency = match (self.percentile_ms(500), self.percentile_ms(990)) {
            (Some(p50), Some(p99)) => format!("p50 {p50:.2} ms  p99 {p99:.2} ms"),
            _ => String::new(),
        };
        format!(
            "  {name:<9} {:>9.0}/s  {:>8} ops in {:>6.2} s  {latency:<28} peak RSS {:>3} MiB  \
             cpu {:>5.1} us/op",
            self.rate(),
            self.operations,
            self.seconds,
            self.peak_rss_kib / 1024,
            self.cpu_per_op_us()
        )
    }
}

/// When a phase started: its clock and the process's CPU time then.
#[derive(Clone, Copy)]
pub(crate) struct Started {
    pub(crate) at: Instant,
    pub(crate) cpu_seconds: f64,
}

/// Starts a phase: resets the process's peak resident size (Linux), so the phase reports its
/// own peak, and notes the CPU time used so far.
pub(crate) fn phase_start() -> Started {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    Started {
        at: Instant::now(),
        cpu_seconds: cpu_seconds(),
    }
}

/// The CPU time (user and system, every thread) this process has used, in seconds; 0 where
/// `/proc` cannot tell.
fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, counted after the command name (which may hold
    // spaces, but ends at the last ')'), in clock ticks of 1/100 s on Linux.
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        });
    ticks.map_or(0.0, |ticks| ticks as f64 / 100.0)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

pub(crate) fn finish(started: Started, operations: usize, latencies: Vec<Duration>) -> Figure {
    Figure {
        operations,
        seconds: started.at.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds() - started.cpu_seconds,
        latencies,
        peak_rss_kib: peak_rss_kib(),
    }
}

pub(crate) fn ratio(of: &Figure, to: &Figure) -> f64 {
    of.rate() / to.rate().max(f64::EPSILON)
}

/// The faster of two runs.
pub(crate) fn best(a: Figure, b: Figure) -> Figure {
    if a.rate() >= b.rate() { a } else { b }
}

/// Records one phase's figures: printed lines and a JSON entry.
pub(crate) struct Reporter<'a> {
    pub(crate) report: &'a mut serde_json::Map<String, Json>,
    pub(crate) lines: &'a mut Vec<String>,
}

impl Reporter<'_> {
    pub(crate) fn pair(
        &mut self,
        key: &str,
        title: String,
        names: [&str; 2],
        ours: &Figure,
        raw: &Figure,
    ) {
        self.lines.push(title);
        self.lines.push(ours.line(names[0]));
        self.lines.push(raw.line(names[1]));
        self.lines.push(format!(
            "  ratio     {:.2} (target >= 0.90)",
            ratio(ours, raw)
        ));
        self.report.insert(
            key.into(),
            json!({"wfstate": ours.json(), "raw": raw.json(), "ratio": ratio(ours, raw)}),
        );
    }
}
