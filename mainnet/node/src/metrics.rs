//! The node's counters and latency histograms, served in the Prometheus text format at
//! `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latencies in 1 ms buckets up to 10 s (one overflow bucket past that).
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

const BUCKETS: usize = 10_001;

/// The bounds, in milliseconds, of the buckets a histogram shows Prometheus (at most
/// `BUCKETS - 1`: past it lies the overflow bucket).
const BOUNDS_MS: [usize; 13] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000];

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one latency.
    pub fn record(&self, d: Duration) {
        let ms = (d.as_millis() as usize).min(BUCKETS - 1);
        self.buckets[ms].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (per mille: 500 is the median) in milliseconds, rounded up to the
    /// bucket; `None` before any record.
    pub fn quantile_ms(&self, per_mille: u64) -> Option<u64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (total * per_mille).div_ceil(1000).max(1);
        let mut acc = 0;
        for (ms, c) in counts.iter().enumerate() {
            acc += c;
            if acc >= want {
                return Some(ms as u64 + 1);
            }
        }
        Some(BUCKETS as u64)
    }

    /// The longest latency recorded, in milliseconds rounded up to the bucket; `None` before
    /// any record.
    pub fn max_ms(&self) -> Option<u64> {
        let last = self.buckets.iter().rposition(|b| b.load(Ordering::Relaxed) > 0)?;
        Some(last as u64 + 1)
    }

    /// How many latencies of `ms` milliseconds or more were recorded.
    pub fn count_from_ms(&self, ms: u64) -> u64 {
        let from = usize::try_from(ms).unwrap_or(usize::MAX).min(BUCKETS - 1);
        self.buckets[from..].iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Forgets every record.
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.sum_micros.store(0, Ordering::Relaxed);
    }

    /// Appends it to a Prometheus text exposition as histogram `name`: the latencies below
    /// each of [`BOUNDS_MS`] (cumulative, to the millisecond), `_sum` and `_count`. Since stop
    /// 52; before, a summary, whose quantiles covered the process's whole life and could not
    /// be combined across nodes (`histogram_quantile` over a `rate` of the buckets can).
    pub(crate) fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let (mut below, mut next) = (0u64, 0usize);
        for bound in BOUNDS_MS {
            // Bucket `ms` holds latencies from `ms` up to the next millisecond.
            while next < bound {
                below += counts[next];
                next += 1;
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {below}", bound as f64 / 1000.0);
        }
        let total: u64 = counts.iter().sum();
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {}\n{name}_count {total}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
    }
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Blocks stored since start.
    pub blocks: AtomicU64,
    /// Transactions stored since start.
    pub transactions: AtomicU64,
    /// The newest stored block.
    pub head: AtomicU64,
    /// When it was stored (Unix milliseconds; at a start, the start).
    pub head_stored_ms: AtomicU64,
    /// The newest executed block.
    pub executed: AtomicU64,
    /// The newest block-final block.
    pub finalized: AtomicU64,
    /// The newest consensus commit height seen.
    pub ordered_height: AtomicU64,
    /// Executed blocks waiting to be stored.
    pub store_queue: AtomicU64,
    /// Commits waiting to be executed.
    pub execute_queue: AtomicU64,
    /// Ordered payloads that did not decode as transactions.
    pub undecodable: AtomicU64,
    /// Ordered transactions execution dropped.
    pub dropped: AtomicU64,
    /// Ordered transactions whose sender this node's mempool had recovered already.
    pub senders_reused: AtomicU64,
    /// Time spent executing (µs).
    pub exec_micros: AtomicU64,
    /// Time spent merklizing and persisting state and blocks (µs).
    pub store_micros: AtomicU64,
    /// Of which merklizing and persisting state (µs).
    pub merkle_micros: AtomicU64,
    /// Sum over blocks of ordering to receipt (µs).
    pub order_to_receipt_micros: AtomicU64,
    /// Sum over blocks of execution done to receipt (µs).
    pub execute_to_receipt_micros: AtomicU64,
    /// Transactions in the mempool.
    pub mempool: AtomicU64,
    /// Validators whose block-finality votes came in the last 5 s (0 on a full node).
    pub peers: AtomicU64,
    /// The newest block-final block block sync learned of.
    pub sync_target: AtomicU64,
    /// The head when block sync last started catching up.
    pub sync_start: AtomicU64,
    /// Block sync rounds that failed (a peer unreachable or answering wrongly).
    pub sync_failures: AtomicU64,
    /// Submission to ordering finality, per transaction submitted here.
    pub ordered_latency: Histogram,
    /// Submission to receipt (transaction finality).
    pub receipt_latency: Histogram,
    /// Submission to block finality.
    pub final_latency: Histogram,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let g = |out: &mut String, name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP farol_{name} {help}\n# TYPE farol_{name} {kind}\nfarol_{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        let secs = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP farol_{name} {help}\n# TYPE farol_{name} counter\nfarol_{name} {}",
                v.load(Ordering::Relaxed) as f64 / 1e6
            );
        };
        g(&mut out, "blocks_total", "counter", "Blocks stored since start.", &self.blocks);
        g(
            &mut out,
            "transactions_total",
            "counter",
            "Transactions stored since start.",
            &self.transactions,
        );
        g(&mut out, "head_block", "gauge", "Newest stored block.", &self.head);
        let _ = writeln!(
            out,
            "# HELP farol_head_stored_timestamp_seconds When the newest block was stored (or \
             the node started), Unix time.\n# TYPE farol_head_stored_timestamp_seconds gauge\n\
             farol_head_stored_timestamp_seconds {}",
            self.head_stored_ms.load(Ordering::Relaxed) as f64 / 1e3
        );
        g(&mut out, "executed_block", "gauge", "Newest executed block.", &self.executed);
        g(&mut out, "finalized_block", "gauge", "Newest block-final block.", &self.finalized);
        g(
            &mut out,
            "ordered_height",
            "gauge",
            "Newest consensus commit height.",
            &self.ordered_height,
        );
        g(
            &mut out,
            "store_queue",
            "gauge",
            "Executed blocks waiting to be stored.",
            &self.store_queue,
        );
        g(
            &mut out,
            "execute_queue",
            "gauge",
            "Commits waiting to be executed.",
            &self.execute_queue,
        );
        g(
            &mut out,
            "senders_reused_total",
            "counter",
            "Ordered transactions whose sender the mempool had recovered already.",
            &self.senders_reused,
        );
        g(
            &mut out,
            "undecodable_total",
            "counter",
            "Ordered payloads that were not transactions.",
            &self.undecodable,
        );
        g(
            &mut out,
            "dropped_total",
            "counter",
            "Ordered transactions execution dropped.",
            &self.dropped,
        );
        g(&mut out, "mempool_transactions", "gauge", "Transactions in the mempool.", &self.mempool);
        g(
            &mut out,
            "peers",
            "gauge",
            "Validators whose block-finality votes came in the last 5 s (0 on a full node).",
            &self.peers,
        );
        g(
            &mut out,
            "sync_target_block",
            "gauge",
            "The newest block-final block block sync learned of.",
            &self.sync_target,
        );
        g(
            &mut out,
            "sync_failures_total",
            "counter",
            "Block sync rounds that failed.",
            &self.sync_failures,
        );
        secs(&mut out, "execute_seconds_total", "Time spent executing blocks.", &self.exec_micros);
        secs(
            &mut out,
            "store_seconds_total",
            "Time spent merklizing and persisting blocks.",
            &self.store_micros,
        );
        secs(
            &mut out,
            "merkle_seconds_total",
            "Time spent merklizing and persisting state.",
            &self.merkle_micros,
        );
        secs(
            &mut out,
            "order_to_receipt_seconds_total",
            "Sum over blocks of ordering to receipt.",
            &self.order_to_receipt_micros,
        );
        secs(
            &mut out,
            "execute_to_receipt_seconds_total",
            "Sum over blocks of execution to receipt.",
            &self.execute_to_receipt_micros,
        );
        self.ordered_latency.write(
            &mut out,
            "farol_ordered_latency_seconds",
            "Submission to ordering finality.",
        );
        self.receipt_latency.write(
            &mut out,
            "farol_receipt_latency_seconds",
            "Submission to receipt (transaction finality).",
        );
        self.final_latency.write(
            &mut out,
            "farol_final_latency_seconds",
            "Submission to block finality.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantiles, the longest record and the count from a bound, all rounded to 1 ms buckets.
    #[test]
    fn a_histogram_answers_from_its_buckets() {
        let h = Histogram::default();
        assert_eq!((h.quantile_ms(500), h.max_ms(), h.count_from_ms(0)), (None, None, 0));
        for ms in [1u64, 2, 2, 3, 25, 140] {
            h.record(Duration::from_micros(ms * 1000 + 400));
        }
        h.record(Duration::from_secs(60));
        assert_eq!(h.count(), 7);
        assert_eq!(h.quantile_ms(500), Some(4));
        assert_eq!(h.max_ms(), Some(BUCKETS as u64));
        assert_eq!(h.count_from_ms(20), 3);
        assert_eq!(h.count_from_ms(141), 1);
        assert_eq!(h.count_from_ms(u64::MAX), 1);
        let mut out = String::new();
        h.write(&mut out, "x_seconds", "What it is.");
        assert!(out.contains("# TYPE x_seconds histogram\n"), "{out}");
        for (le, n) in [("0.001", 0), ("0.002", 1), ("0.005", 4), ("0.02", 4), ("0.05", 5)] {
            assert!(out.contains(&format!("x_seconds_bucket{{le=\"{le}\"}} {n}\n")), "{le}: {out}");
        }
        for (le, n) in [("0.2", 6), ("10", 6), ("+Inf", 7)] {
            assert!(out.contains(&format!("x_seconds_bucket{{le=\"{le}\"}} {n}\n")), "{le}: {out}");
        }
        assert!(out.contains("x_seconds_count 7\n"), "{out}");
        assert_eq!(out.matches("_bucket{").count(), 14, "{out}");
        h.reset();
        assert_eq!((h.max_ms(), h.count()), (None, 0));
    }
}
