//! Where records that cannot be applied go: the SmartModule's error records and changes the
//! sink cannot write, each with its partition, offset, reason and original bytes. Written and
//! flushed before the commit that moves past them, so nothing is lost; a file destination
//! also remembers what it holds, so a restart that reads the same records again (after a
//! crash, or while a table is paused) writes each of them once.

use crate::config::DeadLetterSection;
use crate::metrics::Metrics;
use crate::source::Partition;
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

/// Why a record went to the dead-letter destination, as the `reason` label says it (the
/// dead letter itself carries the whole text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The source could not make a message of the bytes.
    Unreadable,
    /// The SmartModule refused the Debezium message (its error record).
    Refused,
    /// The transform's output is not a CDC record, or names no table we can route to.
    Unroutable,
    /// The table cannot take the change (a type it cannot hold, creating it failed).
    Rejected,
    /// The change's table is paused.
    Paused,
}

impl DeadLetterReason {
    pub fn label(self) -> &'static str {
        match self {
            DeadLetterReason::Unreadable => "unreadable",
            DeadLetterReason::Refused => "refused",
            DeadLetterReason::Unroutable => "unroutable",
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::Paused => "paused",
        }
    }
}

pub struct DeadLetter {
    to: Destination,
    metrics: Metrics,
    pub count: u64,
}

enum Destination {
    File {
        path: PathBuf,
        file: std::fs::File,
        /// (partition, offset) of the entries the file already holds.
        written: HashSet<(String, i64)>,
    },
    Topic {
        name: String,
        producer: fluvio::TopicProducerPool,
    },
}

impl DeadLetter {
    /// The destination the config names (a topic or a file); each dead letter is counted in
    /// `metrics` by its reason.
    pub async fn open(section: &DeadLetterSection, metrics: Metrics) -> Result<DeadLetter> {
        let to = match (&section.topic, &section.file) {
            (Some(topic), _) => Destination::topic(topic).await?,
            (None, Some(file)) => Destination::file(file.clone())?,
            (None, None) => anyhow::bail!("iceberg.dead-letter names neither a file nor a topic"),
        };
        Ok(DeadLetter {
            to,
            metrics,
            count: 0,
        })
    }

    /// Records one dead letter: `why` is its class (the `reason` label of the metric),
    /// `reason` the whole text.
    pub async fn send(
        &mut self,
        partition: &Partition,
        offset: i64,
        why: DeadLetterReason,
        reason: &str,
        record: &[u8],
    ) -> Result<()> {
        if let Destination::File { written, .. } = &mut self.to {
            if !written.insert((partition.as_str().to_owned(), offset)) {
                // written by an earlier run
                return Ok(());
            }
        }
        self.count += 1;
        self.metrics.dead_letter(why);
        let line = entry(partition, offset, reason, record);
        match &mut self.to {
            Destination::File { path, file, .. } => {
                // one write of the whole line: members of a consumer group may share the
                // file, and appends of whole lines do not interleave
                let mut bytes = line.to_string().into_bytes();
                bytes.push(b'\n');
                file.write_all(&bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Destination::Topic { name, producer } => {
                producer
                    .send(fluvio::RecordKey::NULL, line.to_string())
                    .await
                    .with_context(|| format!("sending to dead-letter topic `{name}`"))?;
            }
        }
        Ok(())
    }

    /// Makes what was sent durable.
    pub async fn flush(&mut self) -> Result<()> {
        match &mut self.to {
            Destination::File { path, file, .. } => {
                file.flush()
                    .with_context(|| format!("flushing {}", path.display()))?;
                file.sync_data()
                    .with_context(|| format!("syncing {}", path.display()))?;
            }
            Destination::Topic { name, producer } => {
                producer
                    .flush()
                    .await
                    .with_context(|| format!("flushing dead-letter topic `{name}`"))?;
            }
        }
        Ok(())
    }
}

impl Destination {
    /// A Fluvio topic (created beforehand, like any topic).
    async fn topic(topic: &str) -> Result<Destination> {
        let fluvio = fluvio::Fluvio::connect()
            .await
            .context("connecting to Fluvio for the dead-letter topic")?;
        let producer = fluvio
            .topic_producer(topic.to_owned())
            .await
            .with_context(|| format!("dead-letter topic `{topic}`"))?;
        Ok(Destination::Topic {
            name: topic.to_owned(),
            producer,
        })
    }

    /// A JSON-lines file, and what it already holds.
    fn file(path: PathBuf) -> Result<Destination> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .with_context(|| format!("opening dead-letter file {}", path.display()))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text)
            .with_context(|| format!("reading dead-letter file {}", path.display()))?;
        if !text.is_empty() && !text.ends_with('\n') {
            // a line cut short by a crash: the next one starts on a line of its own
            file.write_all(b"\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Destination::File {
            written: entries(&text),
            path,
            file,
        })
    }
}

/// One dead letter's line: where it was read, why it is here, and the record (as JSON when it
/// is JSON, as text, or base64 with a field that says so).
fn entry(partition: &Partition, offset: i64, reason: &str, record: &[u8]) -> serde_json::Value {
    let mut line = json!({"offset": offset, "reason": reason});
    match std::str::from_utf8(record) {
        Ok(text) => {
            line["record"] = serde_json::from_str(text).unwrap_or_else(|_| json!(text));
        }
        Err(_) => {
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
    line
}

/// The (partition, offset) of each whole entry of a dead-letter file's text, the partition
/// named as the sources name it (`3`, `topic/2`).
fn entries(text: &str) -> HashSet<(String, i64)> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let offset = v["offset"].as_i64()?;
            let partition = match (&v["topic"], &v["partition"]) {
                (serde_json::Value::String(t), p) => format!("{t}/{}", p.as_i64()?),
                (_, serde_json::Value::String(p)) => p.clone(),
                (_, p) => p.as_i64()?.to_string(),
            };
            Some((partition, offset))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_restart_writes_each_dead_letter_once_and_bytes_as_base64() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let kafka = Partition::kafka("shop.public.items", 2);
        let section = DeadLetterSection {
            file: Some(path.clone()),
            topic: None,
        };
        let metrics = Metrics::new();
        let bad = DeadLetterReason::Refused;
        let mut dead = DeadLetter::open(&section, metrics.clone()).await.unwrap();
        dead.send(&Partition::fluvio(0), 7, bad, "bad", b"{\"x\":1}")
            .await
            .unwrap();
        dead.send(&kafka, 9, bad, "bad", &[0xff, 0x00])
            .await
            .unwrap();
        dead.flush().await.unwrap();
        drop(dead);
        // a crash cut the next line short
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"offset\": 11, \"reas").unwrap();
        drop(f);
        let mut dead = DeadLetter::open(&section, metrics.clone()).await.unwrap();
        dead.send(&Partition::fluvio(0), 7, bad, "bad", b"{\"x\":1}")
            .await
            .unwrap();
        dead.send(&kafka, 9, bad, "bad", &[0xff, 0x00])
            .await
            .unwrap();
        dead.send(
            &Partition::fluvio(0),
            11,
            DeadLetterReason::Paused,
            "bad",
            b"again",
        )
        .await
        .unwrap();
        dead.flush().await.unwrap();
        assert_eq!(dead.count, 1);
        // each dead letter counted once, by its reason
        let text = metrics.encode();
        assert!(text.contains("iceberg_cdc_dead_letters_total{reason=\"refused\"} 2\n"));
        assert!(text.contains("iceberg_cdc_dead_letters_total{reason=\"paused\"} 1\n"));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let at: Vec<i64> = lines
            .iter()
            .map(|l| l["offset"].as_i64().unwrap())
            .collect();
        assert_eq!(at, [7, 9, 11], "{text}");
        assert_eq!(lines[1]["topic"], "shop.public.items");
        assert_eq!(lines[1]["record"], "/wA=");
        assert_eq!(lines[1]["record_encoding"], "base64");
        assert_eq!(lines[0]["record"]["x"], 1);
    }
}
