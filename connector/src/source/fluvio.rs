//! A Fluvio topic: one consumer stream per partition, each starting at the offset the tables
//! hold for it, with the `transforms:` SmartModules run by the SPU. Records arrive in chunks
//! over the same bounded channel as the file source.
//!
//! Consumer offsets (Manual strategy) only mirror progress for monitoring: a partition's
//! offset is committed and flushed once every record it has yielded is durable in the tables.

use super::SourceRecord;
use crate::config::{ConnectorConfig, OffsetStart};
use anyhow::{anyhow, Context, Result};
use fluvio::consumer::{ConsumerConfigExtBuilder, ConsumerStream, OffsetManagementStrategy};
use fluvio::metadata::topic::TopicSpec;
use fluvio::{
    Fluvio, Offset, SmartModuleExtraParams, SmartModuleInvocation, SmartModuleInvocationWasm,
    SmartModuleKind,
};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long a partition waits to fill a chunk before handing over what it has.
const LINGER: Duration = Duration::from_millis(50);

/// Per partition, the offset below which everything is durable; the streams commit their
/// consumer offsets from it.
pub struct OffsetMirror {
    durable: BTreeMap<u32, watch::Sender<i64>>,
}

impl OffsetMirror {
    pub fn durable(&self, watermarks: &BTreeMap<u32, i64>) {
        for (p, w) in watermarks {
            if let Some(tx) = self.durable.get(p) {
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
                params: SmartModuleExtraParams::from(t.params()?),
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
    resume: &BTreeMap<u32, i64>,
    chunk: usize,
) -> Result<(mpsc::Receiver<Result<Vec<SourceRecord>>>, OffsetMirror)> {
    let fluvio = Fluvio::connect()
        .await
        .context("connecting to the Fluvio cluster")?;
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
    let mut mirror = OffsetMirror {
        durable: BTreeMap::new(),
    };
    for p in partitions {
        let mut builder = ConsumerConfigExtBuilder::default();
        builder
            .topic(topic.clone())
            .partition(p)
            .offset_start(start_offset(config, resume.get(&p).copied())?)
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
        tokio::spawn(read_partition(p, stream, chunk, tx.clone(), durable_rx));
    }
    Ok((rx, mirror))
}

async fn read_partition<S>(
    partition: u32,
    mut stream: S,
    chunk: usize,
    tx: mpsc::Sender<Result<Vec<SourceRecord>>>,
    mut durable: watch::Receiver<i64>,
) where
    S: ConsumerStream<Item = Result<fluvio::consumer::Record, fluvio::dataplane::link::ErrorCode>>,
{
    let mut last_yielded: Option<i64> = None;
    let mut committed: Option<i64> = None;
    let mut buffer: Vec<SourceRecord> = Vec::new();
    loop {
        let linger = tokio::time::sleep(LINGER);
        tokio::select! {
            next = stream.next() => match next {
                Some(Ok(record)) => {
                    last_yielded = Some(record.offset());
                    buffer.push(SourceRecord {
                        partition,
                        offset: record.offset(),
                        key: record.key().map(<[u8]>::to_vec),
                        value: record.value().to_vec(),
                    });
                    if buffer.len() < chunk {
                        continue;
                    }
                }
                Some(Err(code)) => {
                    let _ = tx.send(Err(anyhow!("partition {partition}: {code:?}"))).await;
                    return;
                }
                None => {
                    let _ = tx.send(Err(anyhow!("partition {partition}: the stream ended"))).await;
                    return;
                }
            },
            _ = durable.changed() => {
                // mirror progress once all this stream yielded is durable
                let w = *durable.borrow_and_update();
                if let Some(last) = last_yielded {
                    if w > last && committed != Some(last) {
                        let ok = stream.offset_commit().await.is_ok() && stream.offset_flush().await.is_ok();
                        if ok {
                            committed = Some(last);
                        } else {
                            tracing::warn!(partition, "could not flush the consumer offset (monitoring only)");
                        }
                    }
                }
                continue;
            }
            _ = linger => {}
        }
        if !buffer.is_empty() && tx.send(Ok(std::mem::take(&mut buffer))).await.is_err() {
            return;
        }
    }
}
