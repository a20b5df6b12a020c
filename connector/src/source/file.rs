//! Debezium messages from a file or stdin, one per line: one partition (0) whose offsets are
//! line numbers, counted from 0.
//!
//! Two line formats: `value` (the message value; an empty line is a tombstone) and
//! `key-value` (`KEY<TAB>VALUE`, as `kcat -f '%k\t%s\n'` prints a topic).

use super::{Chunks, Partition, Source, SourceRecord};
use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::io::BufRead;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LineFormat {
    Value,
    KeyValue,
}

impl LineFormat {
    pub fn parse(text: &str) -> Result<LineFormat> {
        match text {
            "value" => Ok(LineFormat::Value),
            "key-value" => Ok(LineFormat::KeyValue),
            other => bail!("line format `{other}` is not value or key-value"),
        }
    }
}

/// Splits one line into a record. A `key-value` line without a tab is a defect (the whole
/// line goes to the dead letters): a silently keyless record would lose its primary key.
pub fn parse_line(
    line: &[u8],
    partition: &Partition,
    offset: i64,
    format: LineFormat,
) -> SourceRecord {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (key, value, defect) = match format {
        LineFormat::Value => (None, line, None),
        LineFormat::KeyValue => match line.iter().position(|&b| b == b'\t') {
            Some(tab) => {
                let key = &line[..tab];
                (
                    (!key.is_empty()).then(|| key.to_vec()),
                    &line[tab + 1..],
                    None,
                )
            }
            None => (
                None,
                line,
                Some(format!("line {}: no TAB between key and value", offset + 1)),
            ),
        },
    };
    SourceRecord {
        partition: partition.clone(),
        offset,
        key,
        value: value.to_vec(),
        defect,
    }
}

/// Reads lines on demand.
pub struct FileSource {
    input: Box<dyn BufRead + Send>,
    /// What every record's partition is (one, shared).
    partition: Partition,
    format: LineFormat,
    next: i64,
    done: bool,
}

impl FileSource {
    /// `path` (or `-` for stdin), skipping the lines before `start`.
    pub fn open(path: &str, format: LineFormat, start: i64) -> Result<FileSource> {
        let input: Box<dyn BufRead + Send> = if path == "-" {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
            Box::new(std::io::BufReader::with_capacity(1 << 20, f))
        };
        let mut source = FileSource {
            input,
            partition: Partition::fluvio(0),
            format,
            next: 0,
            done: false,
        };
        let mut skip = Vec::new();
        while source.next < start {
            skip.clear();
            if source.input.read_until(b'\n', &mut skip)? == 0 {
                source.done = true;
                break;
            }
            source.next += 1;
        }
        Ok(source)
    }

    /// Up to `max` records; empty at the end of the input.
    pub fn next_chunk(&mut self, max: usize) -> Result<Vec<SourceRecord>> {
        let mut out = Vec::new();
        let mut line = Vec::new();
        while out.len() < max && !self.done {
            line.clear();
            let n = self
                .input
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading line {}", self.next + 1))?;
            if n == 0 {
                self.done = true;
                break;
            }
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            out.push(parse_line(body, &self.partition, self.next, self.format));
            self.next += 1;
        }
        Ok(out)
    }
}

/// Reads on a thread of its own and hands chunks over a bounded channel, so the run loop can
/// wait on the source, a stop request and the commit interval at once, and a slow table
/// stops the reading (back-pressure) instead of growing memory.
pub fn spawn(
    mut source: FileSource,
    chunk: usize,
) -> tokio::sync::mpsc::Receiver<Result<Vec<SourceRecord>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    std::thread::spawn(move || loop {
        let next = source.next_chunk(chunk);
        let end = matches!(&next, Ok(c) if c.is_empty()) || next.is_err();
        if tx.blocking_send(next).is_err() || end {
            break;
        }
    });
    rx
}

/// The file source as the pipeline runs it.
pub struct FileRun {
    chunks: Option<Chunks>,
    start: i64,
}

impl FileRun {
    pub fn open(path: &str, format: LineFormat, start: i64, chunk: usize) -> Result<FileRun> {
        let source = FileSource::open(path, format, start)?;
        Ok(FileRun {
            chunks: Some(spawn(source, chunk)),
            start,
        })
    }
}

impl Source for FileRun {
    fn chunks(&mut self) -> Option<Chunks> {
        self.chunks.take()
    }

    fn starts(&self) -> BTreeMap<Partition, i64> {
        BTreeMap::from([(Partition::fluvio(0), self.start)])
    }

    /// A file has no consumer offsets: the tables' summaries are its only record.
    fn close(self: Box<Self>, _read: BTreeMap<Partition, i64>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &[u8], format: LineFormat, start: i64) -> Result<Vec<SourceRecord>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("in");
        std::fs::write(&path, text)?;
        let mut s = FileSource::open(path.to_str().unwrap_or_default(), format, start)?;
        let mut out = Vec::new();
        loop {
            let chunk = s.next_chunk(2)?;
            if chunk.is_empty() {
                return Ok(out);
            }
            out.extend(chunk);
        }
    }

    #[test]
    fn value_lines() {
        let recs = all(b"{\"a\":1}\n\n{\"b\":2}\r\n", LineFormat::Value, 0).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(
            recs[1],
            SourceRecord {
                partition: Partition::fluvio(0),
                offset: 1,
                key: None,
                value: vec![],
                defect: None,
            }
        );
        assert_eq!(recs[2].value, b"{\"b\":2}");
    }

    #[test]
    fn key_value_lines_and_resuming() {
        let text = b"{\"id\":1}\t{\"op\":\"c\"}\n{\"id\":1}\t\n\t{}\n";
        let recs = all(text, LineFormat::KeyValue, 1).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].offset, 1);
        assert_eq!(recs[0].key.as_deref(), Some(&b"{\"id\":1}"[..]));
        assert!(recs[0].value.is_empty(), "tombstone");
        assert_eq!(recs[1].key, None);
        // a line without a TAB is handed on as a defect, with the lines after it
        let recs = all(b"{\"id\":1} {}\nk\tv\n", LineFormat::KeyValue, 0).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[0].defect.as_deref(),
            Some("line 1: no TAB between key and value")
        );
        assert_eq!(recs[0].value, b"{\"id\":1} {}");
        assert_eq!(
            (recs[1].defect.as_deref(), &recs[1].value[..]),
            (None, &b"v"[..])
        );
        assert!(all(text, LineFormat::KeyValue, 10).unwrap().is_empty());
    }
}
