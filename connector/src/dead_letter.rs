//! Where records that cannot be applied go: the SmartModule's error records and changes the
//! sink cannot write, each with its partition, offset, reason and original bytes. Written and
//! flushed before the commit that moves past them, so nothing is lost.

use crate::source::Partition;
use anyhow::{Context, Result};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

pub struct DeadLetter {
    file: Option<(PathBuf, std::fs::File)>,
    topic: Option<(String, fluvio::TopicProducerPool)>,
    pub count: u64,
}

impl DeadLetter {
    /// Dead letters to a Fluvio topic (created beforehand, like any topic).
    pub async fn to_topic(topic: &str) -> Result<DeadLetter> {
        let fluvio = fluvio::Fluvio::connect()
            .await
            .context("connecting to Fluvio for the dead-letter topic")?;
        let producer = fluvio
            .topic_producer(topic.to_owned())
            .await
            .with_context(|| format!("dead-letter topic `{topic}`"))?;
        Ok(DeadLetter {
            file: None,
            topic: Some((topic.to_owned(), producer)),
            count: 0,
        })
    }

    pub fn to_file(path: Option<PathBuf>) -> Result<DeadLetter> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .with_context(|| format!("opening dead-letter file {}", p.display()))?;
                Some((p, f))
            }
            None => None,
        };
        Ok(DeadLetter {
            file,
            topic: None,
            count: 0,
        })
    }

    /// Records one dead letter. Without a destination it is logged, with its reason.
    pub async fn send(
        &mut self,
        partition: &Partition,
        offset: i64,
        reason: &str,
        record: &[u8],
    ) -> Result<()> {
        self.count += 1;
        let mut line = json!({"offset": offset, "reason": reason});
        match std::str::from_utf8(record) {
            Ok(text) => {
                line["record"] = serde_json::from_str(text).unwrap_or_else(|_| json!(text));
            }
            Err(_) => {
                // bytes that are not text: base64, and a field that says so, for a replay
                use base64::Engine as _;
                line["record"] = json!(base64::engine::general_purpose::STANDARD.encode(record));
                line["record_encoding"] = json!("base64");
            }
        }
        // a Fluvio partition by number, a Kafka one as topic and number
        match (partition.fluvio_number(), partition.kafka_parts()) {
            (Some(n), _) => line["partition"] = json!(n),
            (None, Some((topic, n))) => {
                line["topic"] = json!(topic);
                line["partition"] = json!(n);
            }
            (None, None) => line["partition"] = json!(partition.as_str()),
        }
        match (&mut self.file, &self.topic) {
            (Some((path, f)), _) => {
                // one write of the whole line: members of a consumer group may share the
                // file, and appends of whole lines do not interleave
                let mut bytes = line.to_string().into_bytes();
                bytes.push(b'\n');
                f.write_all(&bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            (None, Some((topic, producer))) => {
                producer
                    .send(fluvio::RecordKey::NULL, line.to_string())
                    .await
                    .with_context(|| format!("sending to dead-letter topic `{topic}`"))?;
            }
            (None, None) => tracing::warn!(
                %partition,
                offset,
                reason,
                "dead letter (no dead-letter destination configured)"
            ),
        }
        Ok(())
    }

    /// Makes what was sent durable.
    pub async fn flush(&mut self) -> Result<()> {
        if let Some((path, f)) = &mut self.file {
            f.flush()
                .with_context(|| format!("flushing {}", path.display()))?;
            f.sync_data()
                .with_context(|| format!("syncing {}", path.display()))?;
        }
        if let Some((topic, producer)) = &self.topic {
            producer
                .flush()
                .await
                .with_context(|| format!("flushing dead-letter topic `{topic}`"))?;
        }
        Ok(())
    }
}
