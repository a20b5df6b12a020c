//! A Fluvio topic: one consumer stream per partition, each starting at the offset the tables
//! hold for it, with the `transforms:` SmartModules run by the SPU. Records arrive in chunks
//! over the same bounded channel as the file source.
//!
//! Consumer offsets (Manual strategy) only mirror progress for monitoring: after each table
//! commit, each partition's consumer offset is committed and flushed at its last durable
//! record.

use super::{Chunks, Partition, Source, SourceRecord};
use crate::config::{ConnectorConfig, OffsetStart};
use anyhow::{anyhow, Context, Result};
use fluvio::consumer::{ConsumerConfigExtBuilder, ConsumerStream, OffsetManagementStrategy};
use fluvio::metadata::topic::TopicSpec;
use fluvio::{
    Fluvio, Offset, SmartModuleExtraParams, SmartModuleInvocation, SmartModuleInvocationWasm,
    SmartModuleKind,
};
use futures::future::BoxFuture;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long a partition waits to fill a chunk before handing over what it has.
const LINGER: Duration = Duration::from_millis(50);

/// Per partition, the offset below which everything is durable. A task of its own publishes
/// it as the consumer offset: the reading streams cannot commit while they wait for records
/// (fluvio's retrying stream holds its lock then), so it opens a short stream at the last
/// durable record, commits and flushes there, and closes it.
pub struct FluvioSource {
    chunks: Option<Chunks>,
    fluvio: std::sync::Arc<Fluvio>,
    topic: String,
    durable: BTreeMap<u32, watch::Sender<i64>>,
    done: Vec<tokio::task::JoinHandle<()>>,
}

impl FluvioSource {
    /// Per partition, the high watermark (the offset after the last committed record).
    pub async fn high_watermarks(&self) -> Result<BTreeMap<Partition, i64>> {
        use fluvio::metadata::partition::PartitionSpec;
        let admin = self.fluvio.admin().await;
        let prefix = format!("{}-", self.topic);
        let partitions = admin.list::<PartitionSpec, String>(vec![]).await?;
        Ok(partitions
            .into_iter()
            .filter_map(|m| {
                let p: u32 = m.name.strip_prefix(&prefix)?.parse().ok()?;
                Some((Partition::fluvio(p), m.status.leader.hw))
            })
            .collect())
    }

    pub fn durable(&self, watermarks: &BTreeMap<Partition, i64>) {
        for (p, w) in watermarks {
            if let Some(tx) = p.fluvio_number().and_then(|n| self.durable.get(&n)) {
                tx.send_if_modified(|cur| {
                    let moved = *w > *cur;
                    if moved {
                        *cur = *w;
                    }
                    moved
                });
            }
        }
    }

    /// Publishes what is pending and stops (at most `limit`): called on the way out.
    pub async fn settle(self, limit: Duration) {
        drop(self.durable);
        let all = futures::future::join_all(self.done);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("consumer offsets not flushed within {limit:?} (monitoring only)");
        }
    }
}

/// Commits `consumer` at the record before `durable` whenever `durable` moves.
async fn publish_offsets(
    fluvio: std::sync::Arc<Fluvio>,
    topic: String,
    partition: u32,
    consumer: String,
    mut durable: watch::Receiver<i64>,
) {
    let mut published = i64::MIN;
    loop {
        let closed = durable.changed().await.is_err();
        let target = *durable.borrow_and_update();
        if target > published && target > 0 {
            match commit_at(&fluvio, &topic, partition, &consumer, target - 1).await {
                Ok(()) => {
                    published = target;
                    tracing::debug!(partition, offset = target - 1, "consumer offset flushed");
                }
                Err(e) => {
                    tracing::warn!(partition, error = %e, "consumer offset not flushed (monitoring only)")
                }
            }
        }
        if closed {
            return;
        }
    }
}

async fn commit_at(
    fluvio: &Fluvio,
    topic: &str,
    partition: u32,
    consumer: &str,
    offset: i64,
) -> Result<()> {
    let config = ConsumerConfigExtBuilder::default()
        .topic(topic.to_owned())
        .partition(partition)
        .offset_start(Offset::absolute(offset)?)
        .offset_consumer(consumer.to_owned())
        .offset_strategy(OffsetManagementStrategy::Manual)
        .disable_continuous(true)
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    let mut stream = fluvio.consumer_with_config(config).await?;
    match stream.next().await {
        Some(Ok(record)) if record.offset() == offset => {
            stream.offset_commit().await.map_err(|e| anyhow!("{e:?}"))?;
            stream.offset_flush().await.map_err(|e| anyhow!("{e:?}"))?;
            Ok(())
        }
        other => Err(anyhow!(
            "record {offset} not found ({:?})",
            other.map(|r| r.map(|r| r.offset()))
        )),
    }
}

/// The `transforms:` steps as SPU invocations.
pub fn invocations(config: &ConnectorConfig) -> Result<Vec<SmartModuleInvocation>> {
    config
        .transforms
        .iter()
        .map(|t| {
            Ok(SmartModuleInvocation {
                wasm: SmartModuleInvocationWasm::Predefined(t.uses.clone()),
                kind: SmartModuleKind::Generic(Default::default()),
                params: SmartModuleExtraParams::new(
                    t.params()?,
                    t.lookback()?.map(|last| {
                        fluvio_smartmodule::dataplane::smartmodule::Lookback { last, age: None }
                    }),
                ),
                name: Some(t.uses.clone()),
            })
        })
        .collect()
}

fn start_offset(config: &ConnectorConfig, resume: Option<i64>) -> Result<Offset> {
    Ok(match resume {
        Some(at) => Offset::absolute(at)?,
        None => match config.start() {
            OffsetStart::Beginning => Offset::beginning(),
            OffsetStart::End => Offset::end(),
            OffsetStart::Absolute(n) => Offset::absolute(n)?,
        },
    })
}

/// Connects, and starts one reading task per partition.
pub async fn spawn(
    config: &ConnectorConfig,
    resume: &BTreeMap<Partition, i64>,
    chunk: usize,
) -> Result<FluvioSource> {
    let fluvio = std::sync::Arc::new(
        Fluvio::connect()
            .await
            .context("connecting to the Fluvio cluster")?,
    );
    let topic = config.meta.topic.name().to_owned();
    let consumer = config.meta.consumer.as_ref();
    let partitions = match consumer
        .and_then(|c| c.partition.as_ref())
        .map(|p| p.list())
        .transpose()?
        .flatten()
    {
        Some(list) => list,
        None => {
            let admin = fluvio.admin().await;
            let topics = admin
                .list::<TopicSpec, _>(vec![topic.clone()])
                .await
                .with_context(|| format!("looking up topic `{topic}`"))?;
            let spec = topics
                .into_iter()
                .find(|t| t.name == topic)
                .ok_or_else(|| anyhow!("topic `{topic}` does not exist"))?;
            (0..spec.spec.replicas().partitions()).collect()
        }
    };
    let consumer_id = consumer
        .and_then(|c| c.id.clone())
        .unwrap_or_else(|| config.meta.name.clone());
    let invocations = invocations(config)?;
    let (tx, rx) = mpsc::channel(2 * partitions.len().max(1));
    let mut mirror = FluvioSource {
        chunks: Some(rx),
        fluvio: fluvio.clone(),
        topic: topic.clone(),
        durable: BTreeMap::new(),
        done: Vec::new(),
    };
    for p in partitions {
        let mut builder = ConsumerConfigExtBuilder::default();
        builder
            .topic(topic.clone())
            .partition(p)
            .offset_start(start_offset(
                config,
                resume.get(&Partition::fluvio(p)).copied(),
            )?)
            .offset_consumer(format!("{consumer_id}-{p}"))
            .offset_strategy(OffsetManagementStrategy::Manual)
            .smartmodule(invocations.clone());
        if let Some(max) = consumer.and_then(|c| c.max_bytes) {
            builder.max_bytes(i32::try_from(max.0).unwrap_or(i32::MAX));
        }
        let stream_config = builder
            .build()
            .map_err(|e| anyhow!("consumer config: {e}"))?;
        let stream = fluvio
            .consumer_with_config(stream_config)
            .await
            .with_context(|| format!("opening partition {p} of `{topic}`"))?;
        let (durable_tx, durable_rx) = watch::channel(i64::MIN);
        mirror.durable.insert(p, durable_tx);
        mirror.done.push(tokio::spawn(publish_offsets(
            fluvio.clone(),
            topic.clone(),
            p,
            format!("{consumer_id}-{p}"),
            durable_rx,
        )));
        tokio::spawn(read_partition(p, stream, chunk, tx.clone()));
    }
    Ok(mirror)
}

impl Source for FluvioSource {
    fn chunks(&mut self) -> Option<Chunks> {
        self.chunks.take()
    }

    /// The SPU runs the `transforms:` chain.
    fn transforms_here(&self) -> bool {
        false
    }

    fn acknowledge(&self, durable: &BTreeMap<Partition, i64>) {
        self.durable(durable);
    }

    fn high_watermarks(&self) -> BoxFuture<'_, Option<BTreeMap<Partition, i64>>> {
        Box::pin(async {
            tokio::time::timeout(Duration::from_secs(2), FluvioSource::high_watermarks(self))
                .await
                .ok()
                .and_then(Result::ok)
        })
    }

    fn close(self: Box<Self>, read: BTreeMap<Partition, i64>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.durable(&read);
            self.settle(Duration::from_secs(10)).await;
        })
    }
}

async fn read_partition<S>(
    partition: u32,
    stream: S,
    chunk: usize,
    tx: mpsc::Sender<Result<Vec<SourceRecord>>>,
) where
    S: ConsumerStream<Item = Result<fluvio::consumer::Record, fluvio::dataplane::link::ErrorCode>>,
{
    let records = stream.map(move |next| match next {
        Ok(record) => Ok(SourceRecord {
            partition: Partition::fluvio(partition),
            offset: record.offset(),
            key: record.key().map(<[u8]>::to_vec),
            value: record.value().to_vec(),
            defect: None,
        }),
        Err(code) => Err(anyhow!("partition {partition}: {code:?}")),
    });
    chunks(Box::pin(records), chunk, LINGER, tx).await;
    tracing::debug!(partition, "partition reader stopped");
}

/// Hands records on in chunks: a chunk goes when it holds `chunk` records or when its first
/// record has waited `linger`, whichever comes first: a record that keeps arriving does not
/// hold the ones before it (the deadline is the first record's, not the last's). An error
/// or the end of the stream is handed on after what was read before it.
async fn chunks<S>(
    mut records: S,
    chunk: usize,
    linger: Duration,
    tx: mpsc::Sender<Result<Vec<SourceRecord>>>,
) where
    S: futures::Stream<Item = Result<SourceRecord>> + Unpin,
{
    let mut buffer: Vec<SourceRecord> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let wait = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            next = records.next() => match next {
                Some(Ok(record)) => {
                    buffer.push(record);
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + linger);
                    if buffer.len() < chunk {
                        continue;
                    }
                    None
                }
                Some(Err(e)) => Some(e),
                None => Some(anyhow!("the stream ended")),
            },
            _ = wait => None,
        };
        deadline = None;
        if !buffer.is_empty() && tx.send(Ok(std::mem::take(&mut buffer))).await.is_err() {
            return;
        }
        if let Some(e) = end {
            let _ = tx.send(Err(e)).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64) -> Result<SourceRecord> {
        Ok(SourceRecord {
            partition: Partition::fluvio(0),
            offset,
            key: None,
            value: b"{}".to_vec(),
            defect: None,
        })
    }

    /// A producer sending one record every 40 ms (less than the 50 ms linger): each chunk
    /// leaves 50 ms after its first record, not when 2,000 have piled up (~80 s).
    #[tokio::test(start_paused = true)]
    async fn records_arriving_faster_than_the_linger_still_leave_within_it() {
        let start = tokio::time::Instant::now();
        let stream = futures::stream::unfold(0i64, |n| async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            (n < 100).then(|| (record(n), n + 1))
        });
        let (tx, mut rx) = mpsc::channel(16);
        tokio::spawn(chunks(Box::pin(stream), 2000, LINGER, tx));
        let mut seen = 0;
        while let Some(Ok(chunk)) = rx.recv().await {
            let first = chunk[0].offset;
            let arrived = Duration::from_millis(40 * (first as u64 + 1));
            let waited = start.elapsed() - arrived;
            assert!(waited <= LINGER, "chunk at {first} waited {waited:?}");
            assert_eq!(first, seen, "in order, nothing lost");
            seen += chunk.len() as i64;
        }
        assert_eq!(seen, 100, "every record, then the end");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_chunk_leaves_at_once_and_an_error_after_what_came_before_it() {
        let mut items: Vec<Result<SourceRecord>> = (0..5).map(record).collect();
        items.push(Err(anyhow!("broken")));
        let (tx, mut rx) = mpsc::channel(16);
        tokio::spawn(chunks(futures::stream::iter(items), 2, LINGER, tx));
        let sizes: Vec<usize> = [
            rx.recv().await.unwrap().unwrap().len(),
            rx.recv().await.unwrap().unwrap().len(),
            rx.recv().await.unwrap().unwrap().len(),
        ]
        .to_vec();
        assert_eq!(sizes, [2, 2, 1]);
        assert!(rx.recv().await.unwrap().is_err());
    }
}
