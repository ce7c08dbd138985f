//! How the server is doing, for `GET /metrics` (Prometheus's text format,
//! written by the `prometheus-client` crate) and `GET /healthz`.
//!
//! One set of metrics per process ([`metrics`]); the places that do the work
//! count it as they go (a relaxed atomic add each: nothing on the hot path
//! waits). Values read from elsewhere at the moment of a scrape (the index's
//! lag, the cluster's) are filled in by the sources given to
//! [`Metrics::on_scrape`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label of a connection's kind: `tcp`, `tls` or `web`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Transport {
    /// The kind.
    pub transport: String,
}

/// Something read at each scrape.
type Source = Box<dyn Fn(&Metrics) + Send + Sync>;

/// Every metric the server keeps.
pub struct Metrics {
    /// Connections open now, by transport.
    pub connections: Family<Transport, Gauge>,
    /// Connections accepted since start, by transport.
    pub connections_total: Family<Transport, Counter>,
    /// Logins (a name taken, by password, token or as a guest).
    pub logins: Counter,
    /// Failed logins (wrong name or password, a token not valid).
    pub failed_logins: Counter,
    /// Room messages and whispers written.
    pub messages: Counter,
    /// Messages queued to their recipients (one per recipient).
    pub deliveries: Counter,
    /// Times a client was slowed down by flood control (once an episode).
    pub slowed: Counter,
    /// Clients dropped for not reading.
    pub slow_readers_dropped: Counter,
    /// Messages per store batch.
    pub store_batch: Histogram,
    /// Seconds a batch's write to `messages.csv` took.
    pub store_write: Histogram,
    /// Seconds a batch's fsync took.
    pub store_sync: Histogram,
    /// Messages written to `messages.csv` and not yet in the search index.
    pub index_lag: Gauge,
    /// Messages in the cluster's log not yet written here (clustered only).
    pub cluster_lag: Gauge,
    /// 1 while this node of a cluster is fenced (its lease could not be
    /// renewed, or the log cannot be followed): it takes no logins or
    /// messages, so `/healthz` says unhealthy and a balancer sends people
    /// elsewhere.
    pub cluster_fenced: Gauge,
    /// 1 while `messages.csv` cannot be written and messages are refused.
    pub store_refusing: Gauge,
    sources: Mutex<Vec<Source>>,
    clustered: AtomicBool,
    /// When the accept loop last went round, in milliseconds since `born`.
    beat: AtomicU64,
    born: Instant,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The metrics of this process.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// A connection counted as open until dropped.
pub struct Open {
    labels: Transport,
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics().connections.get_or_create(&self.labels).dec();
    }
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            connections: Family::default(),
            connections_total: Family::default(),
            logins: Counter::default(),
            failed_logins: Counter::default(),
            messages: Counter::default(),
            deliveries: Counter::default(),
            slowed: Counter::default(),
            slow_readers_dropped: Counter::default(),
            store_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            store_write: Histogram::new(exponential_buckets(0.000_01, 4.0, 10)),
            store_sync: Histogram::new(exponential_buckets(0.000_01, 4.0, 10)),
            index_lag: Gauge::default(),
            cluster_lag: Gauge::default(),
            cluster_fenced: Gauge::default(),
            store_refusing: Gauge::default(),
            sources: Mutex::new(Vec::new()),
            clustered: AtomicBool::new(false),
            beat: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    /// The accept loop goes round (a watchdog asks how long ago it did).
    pub fn beat(&self) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.beat.store(now, Ordering::Relaxed);
    }

    /// How long ago the accept loop last went round.
    pub fn beat_age(&self) -> Duration {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.beat.load(Ordering::Relaxed)))
    }

    /// Counts a connection of `transport` as open until the guard drops.
    pub fn open(&self, transport: &str) -> Open {
        let labels = Transport {
            transport: transport.to_string(),
        };
        self.connections.get_or_create(&labels).inc();
        self.connections_total.get_or_create(&labels).inc();
        Open { labels }
    }

    /// Records how long a write took.
    pub fn observe(histogram: &Histogram, took: Duration) {
        histogram.observe(took.as_secs_f64());
    }

    /// Reads `source` at each scrape (the index's lag, say).
    pub fn on_scrape(&self, source: impl Fn(&Metrics) + Send + Sync + 'static) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(source));
    }

    /// From now on the cluster's lag is reported too.
    pub fn set_clustered(&self) {
        self.clustered.store(true, Ordering::Relaxed);
    }

    /// Why the server takes no messages now, in words, if it does not.
    pub fn unhealthy(&self) -> Option<&'static str> {
        if self.store_refusing.get() != 0 {
            Some("messages.csv cannot be written: messages are refused")
        } else if self.cluster_fenced.get() != 0 {
            Some(
                "this node cannot reach the cluster's Redis: it takes no logins or messages; use another node",
            )
        } else {
            None
        }
    }

    /// Everything, in Prometheus's text format.
    pub fn render(&self) -> String {
        for source in self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            source(self);
        }
        let mut registry = Registry::with_prefix("chatroom");
        registry.register(
            "connections",
            "Connections open now, by transport",
            self.connections.clone(),
        );
        registry.register(
            "connections_accepted",
            "Connections accepted since start, by transport",
            self.connections_total.clone(),
        );
        registry.register("logins", "Logins", self.logins.clone());
        registry.register(
            "failed_logins",
            "Failed logins: a wrong name or password, a token not valid",
            self.failed_logins.clone(),
        );
        registry.register(
            "messages",
            "Room messages and whispers written",
            self.messages.clone(),
        );
        registry.register(
            "deliveries",
            "Messages queued to a recipient, one per recipient",
            self.deliveries.clone(),
        );
        registry.register(
            "flood_slowed",
            "Times a client was slowed down by flood control",
            self.slowed.clone(),
        );
        registry.register(
            "slow_readers_dropped",
            "Clients dropped for not reading",
            self.slow_readers_dropped.clone(),
        );
        registry.register(
            "store_batch_messages",
            "Messages per store batch",
            self.store_batch.clone(),
        );
        registry.register(
            "store_write_seconds",
            "Time to write a batch to messages.csv",
            self.store_write.clone(),
        );
        registry.register(
            "store_fsync_seconds",
            "Time to fsync a batch of messages.csv",
            self.store_sync.clone(),
        );
        registry.register(
            "index_lag_messages",
            "Messages written and not yet in the search index",
            self.index_lag.clone(),
        );
        registry.register(
            "store_refusing",
            "1 while messages.csv cannot be written and messages are refused",
            self.store_refusing.clone(),
        );
        if self.clustered.load(Ordering::Relaxed) {
            registry.register(
                "cluster_lag_messages",
                "Messages in the cluster's log not yet written here",
                self.cluster_lag.clone(),
            );
            registry.register(
                "cluster_fenced",
                "1 while this node is fenced: it takes no logins or messages",
                self.cluster_fenced.clone(),
            );
        }
        let mut out = String::new();
        if encode(&mut out, &registry).is_err() {
            out = "# the metrics could not be written\n".into();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_text_format() {
        let m = Metrics::new();
        m.logins.inc();
        m.messages.inc_by(3);
        let open = m.open("tcp");
        m.on_scrape(|m| {
            m.index_lag.set(7);
        });
        let text = m.render();
        assert!(text.contains("chatroom_logins_total 1"), "{text}");
        assert!(text.contains("chatroom_messages_total 3"), "{text}");
        assert!(text.contains("chatroom_index_lag_messages 7"), "{text}");
        assert!(
            text.contains("chatroom_connections{transport=\"tcp\"} 1"),
            "{text}"
        );
        assert!(!text.contains("cluster"));
        drop(open);
    }
}
