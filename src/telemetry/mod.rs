//! Every Prometheus metric facestream exports, defined in one place.
//!
//! Names follow the Prometheus conventions: `facestream_<what>_<unit>`, `_total` for
//! counters, seconds for durations. Served at `GET /metrics` (text exposition format)
//! by the API server. Stages record through [`metrics()`], a process-wide registry.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `type` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

/// `endpoint` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

/// `endpoint` and `outcome` (`delivered` | `failed`) labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabel {
    pub endpoint: String,
    pub outcome: String,
}

/// The metrics.
pub struct Metrics {
    registry: Registry,
    /// Events accepted into the outbox, by type.
    pub events_published: Family<TypeLabel, Counter>,
    /// Delivery attempts by endpoint and outcome (a failed attempt is retried).
    pub event_deliveries: Family<DeliveryLabel, Counter>,
    /// Events moved to the dead letters, by endpoint.
    pub events_dead_lettered: Family<EndpointLabel, Counter>,
    /// Pending outbox rows, by endpoint.
    pub outbox_depth: Family<EndpointLabel, Gauge>,
    /// Enqueue → acknowledged, by endpoint.
    pub event_delivery_latency: Family<EndpointLabel, Histogram>,
    /// Templates in the search index.
    pub gallery_templates: Gauge,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("facestream");
        let events_published = Family::<TypeLabel, Counter>::default();
        let event_deliveries = Family::<DeliveryLabel, Counter>::default();
        let events_dead_lettered = Family::<EndpointLabel, Counter>::default();
        let outbox_depth = Family::<EndpointLabel, Gauge>::default();
        let event_delivery_latency = Family::<EndpointLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let gallery_templates = Gauge::default();
        registry.register(
            "events_published",
            "Events accepted into the outbox",
            events_published.clone(),
        );
        registry.register(
            "event_deliveries",
            "Event delivery attempts by endpoint and outcome",
            event_deliveries.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Events moved to the dead letters",
            events_dead_lettered.clone(),
        );
        registry.register(
            "outbox_depth",
            "Pending outbox rows per endpoint",
            outbox_depth.clone(),
        );
        registry.register_with_unit(
            "event_delivery_latency",
            "Time from enqueue to acknowledgement by the endpoint",
            prometheus_client::registry::Unit::Seconds,
            event_delivery_latency.clone(),
        );
        registry.register(
            "gallery_templates",
            "Templates in the search index",
            gallery_templates.clone(),
        );
        Metrics {
            registry,
            events_published,
            event_deliveries,
            events_dead_lettered,
            outbox_depth,
            event_delivery_latency,
            gallery_templates,
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn endpoint(name: &str) -> EndpointLabel {
        EndpointLabel {
            endpoint: name.to_string(),
        }
    }

    pub fn delivery(name: &str, delivered: bool) -> DeliveryLabel {
        DeliveryLabel {
            endpoint: name.to_string(),
            outcome: if delivered { "delivered" } else { "failed" }.to_string(),
        }
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = metrics();
        m.events_published
            .get_or_create(&TypeLabel {
                r#type: "test".into(),
            })
            .inc();
        m.event_delivery_latency
            .get_or_create(&Metrics::endpoint("a"))
            .observe(0.01);
        m.event_deliveries
            .get_or_create(&Metrics::delivery("a", true))
            .inc();
        m.outbox_depth.get_or_create(&Metrics::endpoint("a")).set(3);
        let text = m.encode();
        for name in [
            "facestream_events_published_total{type=\"test\"}",
            "facestream_event_deliveries_total{endpoint=\"a\",outcome=\"delivered\"}",
            "facestream_event_delivery_latency_seconds_bucket",
            "# TYPE facestream_outbox_depth gauge",
            "facestream_outbox_depth{endpoint=\"a\"} 3",
            "# UNIT facestream_event_delivery_latency_seconds seconds",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
