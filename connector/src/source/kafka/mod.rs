//! Kafka directly (librdkafka through `rdkafka`): every partition of the matching topics,
//! each starting at the offset the tables hold for it, the SmartModule applied in-process.
//!
//! A thread of its own polls the consumer and hands over chunks of one partition each (so
//! per-key order holds) over the same bounded channel as the other sources. Two ways to get
//! partitions:
//! - `manual` (the default): this connector takes every partition of every matching topic
//!   itself, and looks for new topics and partitions every few seconds (Debezium creates a
//!   topic per new table). No group membership: a restart after a crash reads at once,
//!   with no rebalance and no wait for the broker to forget the dead member.
//! - `group`: a consumer-group subscription, to spread the topics over several connectors.
//!   Before partitions are revoked in a rebalance, the sink commits every open batch, so
//!   whoever gets them next starts where the tables are.
//!
//! Either way a partition starts where the tables say, checked against the offsets the
//! broker still has (an offset it no longer has, after retention or a recreated topic, is an
//! error naming the partition and both offsets, and the partition is not read: never a silent
//! reset); a partition the tables know nothing of starts by `auto-offset-reset` if it
//! existed at the very first start, else at its beginning (a topic Debezium creates for a new
//! table loses nothing). The group's committed offsets are never read back; they are
//! committed only after the table commits that make them durable, for lag monitoring.

mod discovery;
mod pending;
mod rebalance;

use super::{Chunks, Partition, Revocation, Source, SourceRecord};
use crate::config::{client_config, KafkaAssignment, KafkaSection};
use anyhow::{anyhow, Context as _, Result};
use discovery::Discovery;
use futures::future::BoxFuture;
use pending::{PartitionNames, Pending, Revoked};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rebalance::CdcContext;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a partition's records wait to fill a chunk.
const LINGER: Duration = Duration::from_millis(50);
/// How long one poll of the consumer waits for a message.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How long a revocation waits for the sink's commits before letting go anyway.
const REVOKE_WAIT: Duration = Duration::from_secs(120);

/// The Kafka source as the pipeline runs it: the polling thread, and what the sink tells it.
pub struct KafkaHandle {
    chunks: Option<Chunks>,
    /// Until the sink's transform stage takes them (it hands them on in order with the
    /// chunks).
    revocations: Option<mpsc::Receiver<Revocation>>,
    /// Per partition, the next offset to read (the tables' positions, then the sink's
    /// progress): where an assigned partition starts.
    positions: Arc<Mutex<BTreeMap<Partition, i64>>>,
    /// Per partition, the offset below which everything is durable: the group commits it.
    durable: Arc<Mutex<BTreeMap<Partition, i64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Says when the polling thread is done (its consumer closed).
    finished: std::sync::mpsc::Receiver<()>,
}

impl KafkaHandle {
    /// After a table commit: positions for later assignments, offsets for the group.
    pub fn durable(&self, watermarks: &BTreeMap<Partition, i64>) {
        raise(&self.durable, watermarks);
        raise(&self.positions, watermarks);
    }

    /// Where the tables are for partitions this member may be assigned later (other members'
    /// progress included): positions only, never the group's offsets.
    pub fn tables_at(&self, positions: &BTreeMap<Partition, i64>) {
        raise(&self.positions, positions);
    }

    /// Commits the last durable offsets to the group and closes the consumer (leaving the
    /// group revokes every partition: the sink committed everything before this).
    pub fn shut_down(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.revocations.as_mut() {
            r.close();
        }
        // a consumer whose requests a broker left hanging can take librdkafka's socket
        // timeout to close: the stop does not wait for it (group offsets are monitoring only)
        match self.finished.recv_timeout(CLOSE_WAIT) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    "the Kafka consumer did not close within {CLOSE_WAIT:?}; leaving it"
                );
            }
            _ => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

impl Source for KafkaHandle {
    fn chunks(&mut self) -> Option<Chunks> {
        self.chunks.take()
    }

    fn revocations(&mut self) -> Option<mpsc::Receiver<Revocation>> {
        self.revocations.take()
    }

    fn acknowledge(&self, durable: &BTreeMap<Partition, i64>) {
        self.durable(durable);
    }

    fn tables_at(&self, positions: &BTreeMap<Partition, i64>) {
        KafkaHandle::tables_at(self, positions);
    }

    fn close(self: Box<Self>, read: BTreeMap<Partition, i64>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.durable(&read);
            let _ = tokio::task::spawn_blocking(move || self.shut_down()).await;
        })
    }
}

/// Each partition of `to` at least at its offset in `at`.
fn raise(to: &Mutex<BTreeMap<Partition, i64>>, at: &BTreeMap<Partition, i64>) {
    if let Ok(mut to) = to.lock() {
        for (p, w) in at {
            let cur = to.entry(p.clone()).or_insert(*w);
            *cur = (*cur).max(*w);
        }
    }
}

struct Shared {
    tx: mpsc::Sender<Result<Vec<SourceRecord>>>,
    revocations: mpsc::Sender<Revocation>,
    positions: Arc<Mutex<BTreeMap<Partition, i64>>>,
    /// Records read and not yet handed over, by partition.
    pending: Mutex<Pending>,
    /// Partitions taken away and not given back: messages of them that librdkafka still
    /// delivers after the revocation belong to their new owner, which reads them from the
    /// tables' positions; this member drops them.
    revoked: Revoked,
    /// Where partitions that exist at the very first start begin.
    reset: Offset,
    /// No table held a position when the run started: the partitions of the first
    /// assignment start by `reset`; every later one at its beginning.
    first_start: bool,
    /// Set once the first partitions were taken.
    started: AtomicBool,
    /// Partitions to read again from the broker's earliest offset when their position is
    /// gone.
    reset_partitions: HashSet<Partition>,
    /// Partitions whose position the broker no longer has (said once each).
    lost: Mutex<HashSet<Partition>>,
    /// Set when the run ends: revocations then need no commit round.
    stop: Arc<AtomicBool>,
}

impl Shared {
    /// Where `partition` starts, or `None` when its position is gone from the broker (said
    /// at ERROR, once).
    fn start_of(
        &self,
        consumer: &BaseConsumer<CdcContext>,
        partition: &Partition,
    ) -> Option<Offset> {
        let position = self
            .positions
            .lock()
            .ok()
            .and_then(|p| p.get(partition).copied());
        let Some(at) = position else {
            return Some(
                if self.first_start && !self.started.load(Ordering::SeqCst) {
                    self.reset
                } else {
                    Offset::Beginning
                },
            );
        };
        let (topic, n) = partition.kafka_parts()?;
        let (low, high) = match consumer.fetch_watermarks(topic, n, Duration::from_secs(10)) {
            Ok(w) => w,
            Err(e) => {
                // not known now: position as the tables say; librdkafka reports an offset
                // out of range as an error (auto.offset.reset is `error`)
                tracing::warn!(%partition, error = %e, "the broker's offsets are not known");
                return Some(Offset::Offset(at));
            }
        };
        if (low..=high).contains(&at) {
            return Some(Offset::Offset(at));
        }
        if self.reset_partitions.contains(partition) {
            tracing::warn!(%partition, at, low, high, "reading again from the broker's earliest offset (reset-partitions)");
            return Some(Offset::Beginning);
        }
        let first = self
            .lost
            .lock()
            .is_ok_and(|mut l| l.insert(partition.clone()));
        if first {
            tracing::error!(
                "kafka: {partition}: the tables hold offset {at} but the broker has offsets \
                 {low}..{high} (retention, or a recreated topic): the partition is not read. \
                 After checking what was lost, list it under \
                 iceberg.source.kafka.reset-partitions to read it from offset {low}"
            );
        }
        None
    }

    /// Hands over the pending records of `which` (all when `None`) that waited `waited`;
    /// `false` when the sink is gone.
    fn flush(&self, which: Option<&[Partition]>, waited: Duration, now: Instant) -> bool {
        match self.pending.lock() {
            Ok(mut pending) => {
                let ready = pending.due(which, waited, now);
                drop(pending);
                self.hand_over(ready)
            }
            Err(_) => false,
        }
    }

    /// Adds `record` (read at `now`) to the pending records and hands over what is ready:
    /// its partition's chunk when full, any that waited [`LINGER`]. `false` when the sink is
    /// gone.
    fn read(&self, record: SourceRecord, chunk: usize, now: Instant) -> bool {
        match self.pending.lock() {
            Ok(mut pending) => {
                let full = pending.push(record, chunk, now);
                let mut ready = pending.due(None, LINGER, now);
                drop(pending);
                ready.extend(full);
                self.hand_over(ready)
            }
            Err(_) => false,
        }
    }

    fn hand_over(&self, chunks: Vec<Vec<SourceRecord>>) -> bool {
        chunks
            .into_iter()
            .all(|chunk| self.tx.blocking_send(Ok(chunk)).is_ok())
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| Partition::kafka(e.topic(), e.partition()))
        .collect()
}

/// Subscribes and starts the polling thread.
pub fn spawn(
    section: &KafkaSection,
    group: &str,
    resume: &BTreeMap<Partition, i64>,
    chunk: usize,
) -> Result<KafkaHandle> {
    let (tx, rx) = mpsc::channel(4);
    let stop = Arc::new(AtomicBool::new(false));
    let (rev_tx, rev_rx) = mpsc::channel(1);
    let positions = Arc::new(Mutex::new(resume.clone()));
    let shared = Arc::new(Shared {
        tx,
        revocations: rev_tx,
        positions: positions.clone(),
        pending: Mutex::new(Pending::default()),
        revoked: Revoked::default(),
        reset: match section.auto_offset_reset.as_str() {
            "earliest" => Offset::Beginning,
            _ => Offset::End,
        },
        first_start: resume.is_empty(),
        started: AtomicBool::new(false),
        reset_partitions: section
            .reset_partitions
            .iter()
            .map(|p| Partition::named(p))
            .collect(),
        lost: Mutex::new(HashSet::new()),
        stop: stop.clone(),
    });
    let consumer: BaseConsumer<CdcContext> = client_config(section, group)?
        .create_with_context(CdcContext(shared.clone()))
        .context("creating the Kafka consumer")?;
    let discovery = match section.assignment {
        KafkaAssignment::Group => {
            let topics: Vec<String> = section.subscription();
            let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&topic_refs)
                .with_context(|| format!("subscribing to {topics:?}"))?;
            None
        }
        KafkaAssignment::Manual => {
            let mut discovery = Discovery::new(section)?;
            discovery.run(&consumer, &shared)?;
            Some(discovery)
        }
    };
    let durable = Arc::new(Mutex::new(BTreeMap::new()));
    let (finished_tx, finished) = std::sync::mpsc::sync_channel(1);
    let thread = {
        let durable = durable.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("kafka-source".into())
            .spawn(move || {
                poll_loop(consumer, shared, chunk, durable, stop, discovery);
                let _ = finished_tx.send(());
            })
            .context("starting the Kafka thread")?
    };
    Ok(KafkaHandle {
        chunks: Some(rx),
        revocations: Some(rev_rx),
        positions,
        durable,
        stop,
        thread: Some(thread),
        finished,
    })
}

fn poll_loop(
    consumer: BaseConsumer<CdcContext>,
    shared: Arc<Shared>,
    chunk: usize,
    durable: Arc<Mutex<BTreeMap<Partition, i64>>>,
    stop: Arc<AtomicBool>,
    mut discovery: Option<Discovery>,
) {
    let mut committed: BTreeMap<Partition, i64> = BTreeMap::new();
    let mut last_error: Option<(String, Instant)> = None;
    let mut names = PartitionNames::default();
    let mut housekeeping = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let polled = consumer
            .poll(POLL_WAIT)
            .map(|r| r.map(|m| (names.of(m.topic(), m.partition(), &shared.revoked), m)));
        // the one look at the clock per message
        let now = Instant::now();
        let going = match polled {
            Some(Ok(((partition, false), m))) => {
                let record = SourceRecord {
                    partition,
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    // a tombstone: no payload, as the Fluvio Kafka source presents it
                    value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    defect: None,
                };
                shared.read(record, chunk, now)
            }
            // a message of a partition taken away: its new owner's
            Some(Ok(((_, true), _))) | None => shared.flush(None, LINGER, now),
            Some(Err(e)) => {
                if is_fatal(&e) {
                    let _ = shared.tx.blocking_send(Err(anyhow!("kafka: {e}")));
                    break;
                }
                let text = e.to_string();
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AutoOffsetReset)
                {
                    // that partition stops; the others go on
                    tracing::error!(error = %text, "kafka: an offset being read is gone from the broker (retention overtook the reader): that partition is not read further");
                    last_error = Some((text.clone(), now));
                }
                // brokers going away and coming back: librdkafka reconnects by itself
                let repeat = last_error.as_ref().is_some_and(|(t, at)| {
                    *t == text && now.saturating_duration_since(*at) < Duration::from_secs(10)
                });
                if !repeat {
                    tracing::warn!(error = %text, "kafka (retrying)");
                    last_error = Some((text, now));
                }
                shared.flush(None, LINGER, now)
            }
        };
        if !going {
            break;
        }
        // a look at the durable offsets asks librdkafka's main thread for the assignment:
        // not once per message (that thread was as busy as this one), a few times a second;
        // new topics and partitions are looked for at the same beat
        if now.saturating_duration_since(housekeeping) >= COMMIT_EVERY {
            commit_durable(&consumer, &durable, &mut committed, CommitMode::Async);
            if let Some(d) = discovery.as_mut().filter(|d| d.due()) {
                if let Err(e) = d.run(&consumer, &shared) {
                    tracing::warn!(error = %e, "looking for new Kafka topics and partitions (retrying)");
                }
            }
            housekeeping = now;
        }
    }
    // the group's offsets are for monitoring: their last commit goes out without holding up
    // the stop (a synchronous commit waits as long as a broker that lost its group
    // coordinator keeps it, past the stop deadline)
    commit_durable(&consumer, &durable, &mut committed, CommitMode::Async);
    let until = Instant::now() + FINAL_COMMIT_WAIT;
    while Instant::now() < until {
        let _ = consumer.poll(Duration::from_millis(100));
    }
}

/// How often the polling thread commits the durable offsets that moved to the group.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// How long a stopping source waits for its polling thread and consumer to finish.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// How long a stopping source waits for its last group-offset commit to go out.
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(1);

/// Commits the durable offsets that moved, for the partitions this member holds.
fn commit_durable(
    consumer: &BaseConsumer<CdcContext>,
    durable: &Mutex<BTreeMap<Partition, i64>>,
    committed: &mut BTreeMap<Partition, i64>,
    mode: CommitMode,
) {
    // what moved since the last commit; the assignment is asked for only then
    let Ok(changed) = durable.lock().map(|d| {
        d.iter()
            .filter(|(p, w)| committed.get(*p) != Some(*w))
            .map(|(p, w)| (p.clone(), *w))
            .collect::<Vec<_>>()
    }) else {
        return;
    };
    if changed.is_empty() {
        return;
    }
    let assigned: Vec<Partition> = consumer
        .assignment()
        .map(|tpl| partitions_of(&tpl))
        .unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    let mut moved = Vec::new();
    for (p, w) in changed {
        if !assigned.contains(&p) {
            continue;
        }
        if let Some((topic, n)) = p.kafka_parts() {
            if tpl
                .add_partition_offset(topic, n, Offset::Offset(w))
                .is_ok()
            {
                moved.push((p.clone(), w));
            }
        }
    }
    if moved.is_empty() {
        return;
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => committed.extend(moved),
        Err(e) => tracing::warn!(error = %e, "group offsets not committed (monitoring only)"),
    }
}

/// Errors that end the run: configuration and authentication problems. Transport errors
/// are not among them: librdkafka retries those itself.
fn is_fatal(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::Fatal
                | C::Authentication
                | C::SaslAuthenticationFailed
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidConfig
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_assignment_matches_names_and_patterns() {
        let section = KafkaSection {
            topics: vec!["inventory.public.products".into()],
            topic_pattern: Some(r"shop\.public\..*".into()),
            ..Default::default()
        };
        let d = Discovery::new(&section).unwrap();
        assert!(d.matches("inventory.public.products"));
        assert!(d.matches("shop.public.orders"));
        assert!(
            !d.matches("old.shop.public.orders"),
            "anchored at the start"
        );
        assert!(!d.matches("inventory.public.products2"), "names are exact");
        assert!(!d.matches("__consumer_offsets"));
        let bad = KafkaSection {
            topic_pattern: Some("shop(".into()),
            ..Default::default()
        };
        assert!(Discovery::new(&bad).is_err());
    }
}
