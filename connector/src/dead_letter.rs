//! Where records that cannot be applied go: the SmartModule's error records and changes the
//! sink cannot write, each with its partition, offset, reason and original bytes. Written and
//! flushed before the commit that moves past them, so nothing is lost; a file destination
//! also remembers what it holds, so a restart that reads the same records again (after a
//! crash, or while a table is paused) writes each of them once.

use crate::config::DeadLetterSection;
use crate::source::Partition;
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

pub struct DeadLetter {
    file: Option<(PathBuf, std::fs::File)>,
    topic: Option<(String, fluvio::TopicProducerPool)>,
    /// (partition, offset) of the entries the file already holds.
    written: HashSet<(String, i64)>,
    pub count: u64,
}

impl DeadLetter {
    /// The destination the config names (a topic or a file).
    pub async fn open(section: &DeadLetterSection) -> Result<DeadLetter> {
        match section.topic.as_deref() {
            Some(topic) => DeadLetter::to_topic(topic).await,
            None => DeadLetter::to_file(section.file.clone()),
        }
    }

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
            written: HashSet::new(),
            count: 0,
        })
    }

    pub fn to_file(path: Option<PathBuf>) -> Result<DeadLetter> {
        let mut written = HashSet::new();
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .read(true)
                    .open(&p)
                    .with_context(|| format!("opening dead-letter file {}", p.display()))?;
                let mut text = String::new();
                std::io::Read::read_to_string(&mut f, &mut text)
                    .with_context(|| format!("reading dead-letter file {}", p.display()))?;
                written = entries(&text);
                if !text.is_empty() && !text.ends_with('\n') {
                    // a line cut short by a crash: the next one starts on a line of its own
                    f.write_all(b"\n")
                        .with_context(|| format!("writing {}", p.display()))?;
                }
                Some((p, f))
            }
            None => None,
        };
        Ok(DeadLetter {
            file,
            topic: None,
            written,
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
        if self.file.is_some() && !self.written.insert((partition.as_str().to_owned(), offset)) {
            // written by an earlier run
            return Ok(());
        }
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
        let mut dead = DeadLetter::to_file(Some(path.clone())).unwrap();
        dead.send(&Partition::fluvio(0), 7, "bad", b"{\"x\":1}")
            .await
            .unwrap();
        dead.send(&kafka, 9, "bad", &[0xff, 0x00]).await.unwrap();
        dead.flush().await.unwrap();
        drop(dead);
        // a crash cut the next line short
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"offset\": 11, \"reas").unwrap();
        drop(f);
        let mut dead = DeadLetter::to_file(Some(path.clone())).unwrap();
        dead.send(&Partition::fluvio(0), 7, "bad", b"{\"x\":1}")
            .await
            .unwrap();
        dead.send(&kafka, 9, "bad", &[0xff, 0x00]).await.unwrap();
        dead.send(&Partition::fluvio(0), 11, "bad", b"again")
            .await
            .unwrap();
        dead.flush().await.unwrap();
        assert_eq!(dead.count, 1);
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
