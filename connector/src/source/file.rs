//! Debezium messages from a file or stdin, one per line.
//!
//! Two line formats: `value` (the message value; an empty line is a tombstone) and
//! `key-value` (`KEY<TAB>VALUE`, as `kcat -f '%k\t%s\n'` prints a topic). A record's offset
//! is its line number, counted from 0.

use super::SourceRecord;
use anyhow::{bail, Context, Result};
use std::io::BufRead;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LineFormat {
    Value,
    KeyValue,
}

/// Splits one line into a record. A `key-value` line without a tab is refused with its
/// line number: a silently keyless record would lose its primary key.
pub fn parse_line(line: &[u8], offset: i64, format: LineFormat) -> Result<SourceRecord> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (key, value) = match format {
        LineFormat::Value => (None, line),
        LineFormat::KeyValue => match line.iter().position(|&b| b == b'\t') {
            Some(tab) => {
                let key = &line[..tab];
                ((!key.is_empty()).then(|| key.to_vec()), &line[tab + 1..])
            }
            None => bail!("line {}: no TAB between key and value", offset + 1),
        },
    };
    Ok(SourceRecord {
        offset,
        key,
        value: value.to_vec(),
    })
}

/// Reads every line of `input`, starting after `skip` lines.
pub fn read_all(input: impl BufRead, format: LineFormat, skip: i64) -> Result<Vec<SourceRecord>> {
    let mut out = Vec::new();
    for (n, line) in input.split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        let offset = n as i64;
        if offset < skip {
            continue;
        }
        out.push(parse_line(&line, offset, format)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_lines() {
        let recs = read_all(&b"{\"a\":1}\n\n{\"b\":2}\r\n"[..], LineFormat::Value, 0).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(
            recs[1],
            SourceRecord {
                offset: 1,
                key: None,
                value: vec![]
            }
        );
        assert_eq!(recs[2].value, b"{\"b\":2}");
    }

    #[test]
    fn key_value_lines() {
        let recs = read_all(
            &b"{\"id\":1}\t{\"op\":\"c\"}\n{\"id\":1}\t\n\t{}\n"[..],
            LineFormat::KeyValue,
            1,
        )
        .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].offset, 1);
        assert_eq!(recs[0].key.as_deref(), Some(&b"{\"id\":1}"[..]));
        assert!(recs[0].value.is_empty(), "tombstone");
        assert_eq!(recs[1].key, None);
        let err = read_all(&b"{\"id\":1} {}\n"[..], LineFormat::KeyValue, 0).unwrap_err();
        assert!(err.to_string().contains("line 1: no TAB"), "{err}");
    }
}
