//! `GET /metrics`: Prometheus (OpenMetrics text) figures of the service — operations by state, records and
//! bytes moved, and request latencies by route — through the `prometheus-client` crate.

use std::collections::HashMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::operation::{OpState, Operation};

type Labels = Vec<(&'static str, String)>;

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    active: Family<Labels, Gauge>,
    finished: Family<Labels, Counter>,
    records: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ferry");
        let active = Family::<Labels, Gauge>::default();
        let finished = Family::<Labels, Counter>::default();
        let records = Family::<Labels, Counter>::default();
        let bytes = Family::<Labels, Counter>::default();
        let latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "operations",
            "Operations not over, by state (queued, running, cancelling)",
            active.clone(),
        );
        registry.register(
            "operations_finished",
            "Operations over since the server started, by type and state",
            finished.clone(),
        );
        registry.register(
            "records",
            "Records moved by finished operations, by type and where they went (read, written, rejected, filtered, skipped)",
            records.clone(),
        );
        registry.register(
            "bytes",
            "Bytes moved by finished operations, by type and direction",
            bytes.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request, by method, route and status",
            latency.clone(),
        );
        for state in [OpState::Queued, OpState::Running, OpState::Cancelling] {
            active
                .get_or_create(&vec![("state", state.name().to_owned())])
                .set(0);
        }
        Metrics {
            registry,
            active,
            finished,
            records,
            bytes,
            latency,
        }
    }

    /// Sets the gauges of operations not over.
    pub fn set_active(&self, counts: &HashMap<OpState, u64>) {
        for state in [OpState::Queued, OpState::Running, OpState::Cancelling] {
            let n = counts.get(&state).copied().unwrap_or(0);
            self.active
                .get_or_create(&vec![("state", state.name().to_owned())])
                .set(n as i64);
        }
    }

    /// Counts a finished operation.
    pub fn finished(&self, op: &Operation) {
        let kind = op.kind.name().to_owned();
        self.finished
            .get_or_create(&vec![
                ("type", kind.clone()),
                ("state", op.status.name().to_owned()),
            ])
            .inc();
        let c = op.counts;
        for (outcome, n) in [
            ("read", c.read),
            ("written", c.written),
            ("rejected", c.rejected),
            ("filtered", c.filtered),
            ("skipped", c.skipped),
        ] {
            self.records
                .get_or_create(&vec![
                    ("type", kind.clone()),
                    ("outcome", outcome.to_owned()),
                ])
                .inc_by(n);
        }
        for (direction, n) in [("read", op.bytes.read), ("written", op.bytes.written)] {
            self.bytes
                .get_or_create(&vec![
                    ("type", kind.clone()),
                    ("direction", direction.to_owned()),
                ])
                .inc_by(n);
        }
    }

    /// Records one request's latency.
    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.latency
            .get_or_create(&vec![
                ("method", method.to_owned()),
                ("route", route.to_owned()),
                ("status", status.to_string()),
            ])
            .observe(seconds);
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::operation::{Counts, OpKind};

    #[test]
    fn finished_operations_show_in_the_text() {
        let m = Metrics::new();
        let mut op = Operation::new("op-1".into(), OpKind::Import, "contexts", "t", None);
        op.status = OpState::Succeeded;
        op.set_counts(Counts {
            read: 5,
            written: 4,
            rejected: 1,
            ..Counts::default()
        });
        m.finished(&op);
        m.request("GET", "/healthz", 200, 0.001);
        let text = m.render();
        assert!(
            text.contains(r#"ferry_records_total{type="import",outcome="written"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferry_operations{state="running"} 0"#),
            "{text}"
        );
        assert!(
            text.contains("ferry_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
