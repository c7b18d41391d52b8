//! What a bench run measured: the [`Recorder`] each load task fills, the serialisable
//! [`BenchReport`] built from them, and [`render`], the human table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::{Done, Failure};
use super::{LoadError, Workload};

/// Highest latency the histograms resolve (one hour, in microseconds); longer ones are recorded as
/// this value.
pub const MAX_TRACKABLE_US: u64 = 3_600_000_000;

/// Significant decimal digits the histograms keep (0.1 % relative error).
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Upper bounds (us) of the text histogram's buckets: 1-2-5 steps per decade, 1 us to 1000 s.
const BUCKET_STEPS: [u64; 3] = [1, 2, 5];
const BUCKET_DECADES: u32 = 10;

/// Width of the text histogram's bars, in characters.
const BAR_WIDTH: usize = 40;

/// The whole run: the settings it ran with and one report per workload, in the order run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The server, as given to `--addr`.
    pub addr: String,
    /// `closed` (`--concurrency` tasks back to back) or `open` (`--rate` per second).
    pub load_model: &'static str,
    /// Closed loop: tasks issuing requests back to back.
    pub concurrency: Option<usize>,
    /// Open loop: requests scheduled per second.
    pub rate_per_sec: Option<f64>,
    /// HTTP/2 connections the requests were spread over (round robin).
    pub connections: usize,
    /// Measured time per workload (seconds).
    pub duration_secs: f64,
    /// Unrecorded time before each workload's measurement (seconds).
    pub warmup_secs: f64,
    pub task_class: String,
    pub seed: u64,
    pub workloads: Vec<WorkloadReport>,
}

/// One workload's figures.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    pub workload: Workload,
    /// What `requests` counts: `request` (one RPC) or `pair` (Route then Feedback).
    pub unit: &'static str,
    /// Units issued in the measured window (warm-up excluded): `successes + errors`.
    pub requests: u64,
    /// Units whose RPCs were all answered OK.
    pub successes: u64,
    /// Units with a failed RPC (their latencies are not in the histogram).
    pub errors: u64,
    /// Failures by RPC and gRPC code, with the first message seen.
    pub errors_by_code: Vec<ErrorCount>,
    /// `pair` only: successful pairs whose Feedback reported outcome ERROR (`--error-rate`).
    pub error_outcomes_reported: u64,
    /// From the start of the measured window until its last unit completed.
    pub elapsed_secs: f64,
    /// Successful units per second: `successes / elapsed_secs`.
    pub throughput_per_sec: f64,
    /// Latency of successful units in microseconds (open loop: from the scheduled send time);
    /// absent when nothing succeeded.
    pub latency_us: Option<LatencySummary>,
    /// Successful units' latencies in log-spaced buckets, from the first to the last non-empty.
    pub histogram: Vec<HistogramBucket>,
    /// Open loop only: how late each unit actually started after its scheduled time.
    pub schedule_lag_us: Option<LatencySummary>,
    /// `throughput_per_sec` over the floor workload's (absent without a floor workload).
    pub ratio_to_floor: Option<f64>,
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// Successful units with a latency in `(low_us, high_us]`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HistogramBucket {
    pub low_us: u64,
    pub high_us: u64,
    pub count: u64,
}

/// Failures of one RPC with one gRPC code.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    /// `Route`, `Feedback` or `Health/Check`.
    pub rpc: &'static str,
    /// The gRPC code, as in the spec (`UNAVAILABLE`, `NOT_FOUND`, ...).
    pub code: &'static str,
    pub count: u64,
    pub first_message: String,
}

/// What one load task (or the open-loop collector) saw; merged per workload.
pub(crate) struct Recorder {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    requests: u64,
    error_outcomes: u64,
    errors: BTreeMap<(&'static str, &'static str), (u64, String)>,
}

fn histogram() -> Result<Histogram<u64>, LoadError> {
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, SIGNIFICANT_DIGITS)
        .map_err(|e| LoadError::Internal(format!("latency histogram: {e:?}")))
}

/// Whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Recorder {
    pub fn new() -> Result<Recorder, LoadError> {
        Ok(Recorder {
            latency: histogram()?,
            lag: histogram()?,
            requests: 0,
            error_outcomes: 0,
            errors: BTreeMap::new(),
        })
    }

    /// Counts one unit; only a success's latency goes into the histogram.
    pub fn record(&mut self, result: &Result<Done, Failure>, latency: Duration) {
        self.requests += 1;
        match result {
            Ok(done) => {
                self.latency.saturating_record(micros(latency));
                if done.error_outcome {
                    self.error_outcomes += 1;
                }
            }
            Err(f) => {
                let entry = self
                    .errors
                    .entry((f.rpc, code_name(f.status.code())))
                    .or_insert_with(|| (0, f.status.message().to_string()));
                entry.0 += 1;
            }
        }
    }

    /// Records how late a unit started after its scheduled time (open loop).
    pub fn record_lag(&mut self, lag: Duration) {
        self.lag.saturating_record(micros(lag));
    }

    pub fn merge(&mut self, other: Recorder) -> Result<(), LoadError> {
        self.latency
            .add(&other.latency)
            .map_err(|e| LoadError::Internal(format!("merging histograms: {e:?}")))?;
        self.lag
            .add(&other.lag)
            .map_err(|e| LoadError::Internal(format!("merging histograms: {e:?}")))?;
        self.requests += other.requests;
        self.error_outcomes += other.error_outcomes;
        for (key, (count, message)) in other.errors {
            self.errors.entry(key).or_insert((0, message)).0 += count;
        }
        Ok(())
    }

    /// The workload's report; `ratio_to_floor` is filled in once every workload has run.
    pub fn into_report(self, workload: Workload, elapsed: Duration) -> WorkloadReport {
        let successes = self.latency.len();
        let errors = self.requests.saturating_sub(successes);
        let elapsed_secs = elapsed.as_secs_f64();
        let throughput_per_sec = if elapsed_secs > 0.0 {
            successes as f64 / elapsed_secs
        } else {
            0.0
        };
        WorkloadReport {
            workload,
            unit: workload.unit(),
            requests: self.requests,
            successes,
            errors,
            errors_by_code: self
                .errors
                .into_iter()
                .map(|((rpc, code), (count, first_message))| ErrorCount {
                    rpc,
                    code,
                    count,
                    first_message,
                })
                .collect(),
            error_outcomes_reported: self.error_outcomes,
            elapsed_secs,
            throughput_per_sec,
            latency_us: summary(&self.latency),
            histogram: buckets(&self.latency),
            schedule_lag_us: summary(&self.lag),
            ratio_to_floor: None,
        }
    }
}

fn summary(h: &Histogram<u64>) -> Option<LatencySummary> {
    (!h.is_empty()).then(|| LatencySummary {
        count: h.len(),
        mean: h.mean(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    })
}

/// Bucket upper bounds: 1, 2, 5, 10, 20, 50, ... us.
fn bucket_bounds() -> Vec<u64> {
    (0..BUCKET_DECADES)
        .flat_map(|d| BUCKET_STEPS.iter().map(move |s| s * 10u64.pow(d)))
        .collect()
}

fn buckets(h: &Histogram<u64>) -> Vec<HistogramBucket> {
    let bounds = bucket_bounds();
    // Bucket 0 is (0, 1] (and holds 0); the last one is open-ended.
    let mut counts = vec![0u64; bounds.len() + 1];
    for v in h.iter_recorded() {
        let value = h.lowest_equivalent(v.value_iterated_to());
        let index = bounds.partition_point(|&b| b < value);
        if let Some(c) = counts.get_mut(index) {
            *c += v.count_since_last_iteration();
        }
    }
    let Some(first) = counts.iter().position(|&c| c > 0) else {
        return Vec::new();
    };
    let last = counts.iter().rposition(|&c| c > 0).unwrap_or(first);
    (first..=last)
        .map(|i| HistogramBucket {
            low_us: if i == 0 { 0 } else { bounds[i - 1] },
            high_us: bounds.get(i).copied().unwrap_or(MAX_TRACKABLE_US),
            count: counts[i],
        })
        .collect()
}

pub use crate::grpc_code::code_name;

fn fmt_secs(secs: f64) -> String {
    format!("{secs} s")
}

/// The human report: the settings, one table row per workload, each workload's text histogram and
/// errors, then each workload's throughput ratio to the floor.
pub fn render(report: &BenchReport) -> String {
    let mut out = String::new();
    let load = match (report.concurrency, report.rate_per_sec) {
        (_, Some(rate)) => format!("open loop at {rate} req/s"),
        (Some(c), None) => format!("closed loop, concurrency {c}"),
        (None, None) => report.load_model.to_string(),
    };
    let _ = writeln!(
        out,
        "switchyard bench {}: {load}, {} connection(s), {} measured after {} warm-up per workload, \
         task class {:?}, seed {}",
        report.addr,
        report.connections,
        fmt_secs(report.duration_secs),
        fmt_secs(report.warmup_secs),
        report.task_class,
        report.seed
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<8} {:>10} {:>8} {:>16} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "workload",
        "requests",
        "errors",
        "throughput/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "max us"
    );
    for w in &report.workloads {
        let cell = |f: fn(&LatencySummary) -> u64| {
            w.latency_us
                .as_ref()
                .map_or_else(|| "-".to_string(), |l| f(l).to_string())
        };
        let _ = writeln!(
            out,
            "{:<8} {:>10} {:>8} {:>16} {:>10} {:>10} {:>10} {:>10} {:>10}",
            w.workload.name(),
            w.requests,
            w.errors,
            format!("{:.1} {}", w.throughput_per_sec, w.workload.rate_unit()),
            cell(|l| l.p50),
            cell(|l| l.p90),
            cell(|l| l.p99),
            cell(|l| l.p999),
            cell(|l| l.max),
        );
    }
    for w in &report.workloads {
        let _ = writeln!(out);
        let what = match w.workload {
            Workload::Pair => "Route+Feedback round trip",
            Workload::Route => "Route",
            Workload::Floor => "Health/Check",
        };
        let _ = writeln!(
            out,
            "{}: {what} latency of {} successful {}s (us)",
            w.workload.name(),
            w.successes,
            w.unit
        );
        out.push_str(&render_histogram(&w.histogram));
        if let Some(lag) = &w.schedule_lag_us {
            let _ = writeln!(
                out,
                "  schedule lag (actual start after scheduled time, included above): p50 {} us, \
                 p99 {} us, max {} us",
                lag.p50, lag.p99, lag.max
            );
        }
        if w.workload == Workload::Pair {
            let _ = writeln!(
                out,
                "  outcome ERROR reported in {} of {} pairs",
                w.error_outcomes_reported, w.successes
            );
        }
        for e in &w.errors_by_code {
            let _ = writeln!(
                out,
                "  error: {} {} x {} (first: {:?})",
                e.rpc, e.code, e.count, e.first_message
            );
        }
    }
    let _ = writeln!(out);
    if report.workloads.iter().all(|w| w.ratio_to_floor.is_none()) {
        let _ = writeln!(
            out,
            "ratio to floor: none (run the floor workload, or it had no successes)"
        );
    } else {
        let _ = writeln!(out, "ratio to floor (throughput / floor throughput):");
        for w in &report.workloads {
            let ratio = w
                .ratio_to_floor
                .map_or_else(|| "-".to_string(), |r| format!("{r:.3}"));
            let note = if w.workload == Workload::Pair {
                "  (pairs/s over Health checks/s)"
            } else {
                ""
            };
            let _ = writeln!(out, "  {:<8} {ratio}{note}", w.workload.name());
        }
    }
    out
}

fn render_histogram(buckets: &[HistogramBucket]) -> String {
    let mut out = String::new();
    let top = buckets.iter().map(|b| b.count).max().unwrap_or(0);
    if top == 0 {
        out.push_str("  (no successful requests)\n");
        return out;
    }
    for b in buckets {
        let filled = ((b.count as f64 / top as f64) * BAR_WIDTH as f64).ceil() as usize;
        let filled = filled.min(BAR_WIDTH);
        let _ = writeln!(
            out,
            "  {:>10} - {:<10} |{}{}| {}",
            b.low_us,
            b.high_us,
            "#".repeat(filled),
            " ".repeat(BAR_WIDTH - filled),
            b.count
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<Done, Failure> {
        Ok(Done {
            error_outcome: false,
        })
    }

    #[test]
    fn buckets_hold_every_recorded_value_once() {
        let mut r = Recorder::new().unwrap();
        for us in [
            0u64, 1, 2, 3, 10, 11, 150, 150, 999, 1000, 5000, 5010, 123_456,
        ] {
            r.record(&ok(), Duration::from_micros(us));
        }
        r.record(
            &Err(Failure {
                rpc: "Route",
                status: tonic::Status::unavailable("down"),
            }),
            Duration::from_secs(1),
        );
        let report = r.into_report(Workload::Route, Duration::from_secs(1));
        assert_eq!(
            (report.requests, report.successes, report.errors),
            (14, 13, 1)
        );
        let total: u64 = report.histogram.iter().map(|b| b.count).sum();
        assert_eq!(total, 13);
        let find = |high: u64| {
            report
                .histogram
                .iter()
                .find(|b| b.high_us == high)
                .map(|b| b.count)
        };
        assert_eq!(find(1), Some(2)); // 0 and 1
        assert_eq!(find(2), Some(1));
        assert_eq!(find(5), Some(1));
        assert_eq!(find(10), Some(1));
        assert_eq!(find(20), Some(1));
        assert_eq!(find(200), Some(2));
        assert_eq!(find(1000), Some(2)); // 999 and 1000: bounds are inclusive
        assert_eq!(find(5000), Some(1));
        assert_eq!(find(10_000), Some(1));
        assert_eq!(find(200_000), Some(1));
        assert_eq!(report.histogram.first().unwrap().low_us, 0);
        assert_eq!(report.errors_by_code.len(), 1);
        assert_eq!(report.errors_by_code[0].code, "UNAVAILABLE");
        // The histogram keeps 3 significant digits.
        let max = report.latency_us.unwrap().max;
        assert!((123_456..123_580).contains(&max), "{max}");
    }

    #[test]
    fn render_shows_every_workload_and_the_ratio() {
        let mut floor = Recorder::new().unwrap();
        let mut route = Recorder::new().unwrap();
        for _ in 0..10 {
            floor.record(&ok(), Duration::from_micros(100));
            route.record(&ok(), Duration::from_micros(300));
        }
        let mut floor = floor.into_report(Workload::Floor, Duration::from_secs(1));
        floor.ratio_to_floor = Some(1.0);
        let mut route = route.into_report(Workload::Route, Duration::from_secs(2));
        route.ratio_to_floor = Some(0.5);
        let report = BenchReport {
            addr: "127.0.0.1:1".into(),
            load_model: "closed",
            concurrency: Some(2),
            rate_per_sec: None,
            connections: 1,
            duration_secs: 1.0,
            warmup_secs: 0.0,
            task_class: "qa".into(),
            seed: 1,
            workloads: vec![floor, route],
        };
        let text = render(&report);
        assert!(text.contains("floor"), "{text}");
        assert!(text.contains("  route    0.500"), "{text}");
        assert!(text.contains("5.0 req/s"), "{text}");
        assert!(
            text.contains("|########################################| 10"),
            "{text}"
        );
    }
}
