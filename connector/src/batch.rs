//! Open batches, one per table, and when each is due: by record count, bytes or age (the
//! commit interval), whichever comes first; and, across every table, when the memory held by
//! all open batches passes the global cap, the largest batches first. Each change keeps its
//! source position beside it. Pure bookkeeping; the commit stage does the I/O.

use crate::source::Partition;
use debezium_cdc::record::ChangeRecord;
use iceberg::TableIdent;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_records: usize,
    /// A batch's bytes as they came in (the source records' keys and values).
    pub max_bytes: u64,
    pub interval: Duration,
    /// The memory all open batches together may hold ([`held_bytes`] of their records):
    /// past it, the largest are committed.
    pub max_total_bytes: u64,
}

/// The memory a decoded change holds, estimated: the record itself, and per entry of its key
/// and row images a map slot (the map's hash, the name and the value inline, its index) with
/// the name's and the value's heap. A decoded record holds two to three times its JSON (a
/// counting allocator: ~2.1 KB for a `products` change of 757 bytes, this estimate ~1.9 KB),
/// so the global cap counts this, not the bytes that came in.
pub fn held_bytes(record: &ChangeRecord) -> u64 {
    /// A map's own allocation beyond its entries (hash table, spare capacity).
    const MAP: usize = 128;
    /// One entry: hash, name and value inline, and its index.
    const SLOT: usize = 96;
    /// A heap string's smallest allocation.
    const STRING: usize = 16;
    fn text(s: &str) -> usize {
        s.len().max(STRING)
    }
    fn value(v: &Value) -> usize {
        match v {
            Value::String(s) => text(s),
            Value::Array(items) => items.iter().map(|i| 32 + value(i)).sum(),
            Value::Object(m) => map(m),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
    }
    fn map(m: &Map<String, Value>) -> usize {
        MAP + m
            .iter()
            .map(|(k, v)| SLOT + text(k) + value(v))
            .sum::<usize>()
    }
    let images = [
        Some(&record.key),
        record.before.as_ref(),
        record.after.as_ref(),
    ];
    let source = &record.source;
    let names = [
        &source.connector,
        &source.name,
        &source.db,
        &source.schema,
        &source.table,
    ];
    let held = std::mem::size_of::<ChangeRecord>()
        + images.into_iter().flatten().map(map).sum::<usize>()
        + record.unchanged.iter().map(|c| 24 + text(c)).sum::<usize>()
        + names.into_iter().flatten().map(|n| text(n)).sum::<usize>();
    held as u64
}

/// Frees committed batches on a thread of its own: a batch is tens of thousands of decoded
/// records, and freeing them took the run loop a twentieth of its time, time it now spends
/// taking the next batch. One batch may wait to be freed; past that the caller frees its
/// own, so what is held stays bounded.
pub struct Release<T: Send + 'static> {
    waiting: Option<SyncSender<T>>,
}

impl<T: Send + 'static> Release<T> {
    pub fn spawn() -> Release<T> {
        let (waiting, freed) = sync_channel::<T>(1);
        let thread = std::thread::Builder::new()
            .name("batch-release".into())
            .spawn(move || freed.into_iter().for_each(drop));
        if let Err(e) = &thread {
            tracing::warn!("no thread to free batches on ({e}): the run loop frees them");
        }
        Release {
            waiting: thread.ok().map(|_| waiting),
        }
    }

    pub fn release(&self, batch: T) {
        // when the thread is busy (or gone), the batch comes back and is freed here
        if let Some(waiting) = &self.waiting {
            let _ = waiting.try_send(batch);
        }
    }
}

/// Changes waiting for one table, and the source positions they cover.
#[derive(Debug)]
pub struct OpenBatch {
    /// Boxed as decoded: a record is ~660 bytes inline, and a batch grows by doubling (the
    /// spare capacity of a `Vec` of inline records was 20 MB at one moment of the soak).
    #[allow(
        clippy::vec_box,
        reason = "a record is 664 bytes: the box keeps a doubling Vec's spare capacity small"
    )]
    pub records: Vec<Box<ChangeRecord>>,
    /// The records' bytes as they came.
    pub bytes: u64,
    /// The memory they hold ([`held_bytes`]).
    pub held: u64,
    pub opened: Instant,
    /// partition -> (first offset, last offset) of the records in this batch.
    pub span: BTreeMap<Partition, (i64, i64)>,
    /// Where each record came from, in `records` order.
    pub positions: Vec<(Partition, i64)>,
}

impl OpenBatch {
    fn new(now: Instant) -> OpenBatch {
        OpenBatch {
            records: Vec::new(),
            bytes: 0,
            held: 0,
            opened: now,
            span: BTreeMap::new(),
            positions: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Batches {
    open: HashMap<TableIdent, OpenBatch>,
    /// Per paused table, the first offset per partition it has not applied: nothing at or
    /// after it counts as durable while the table is paused.
    held: HashMap<TableIdent, BTreeMap<Partition, i64>>,
    /// The memory every open batch holds, together (kept as records come and batches go:
    /// the global cap is checked on every record).
    total: u64,
}

impl Batches {
    /// Adds a change of `bytes` as it came to its table's batch; returns what it holds.
    pub fn push(
        &mut self,
        table: TableIdent,
        record: Box<ChangeRecord>,
        partition: &Partition,
        offset: i64,
        bytes: u64,
        now: Instant,
    ) -> u64 {
        let batch = self
            .open
            .entry(table)
            .or_insert_with(|| OpenBatch::new(now));
        let held = held_bytes(&record);
        batch.records.push(record);
        batch.positions.push((partition.clone(), offset));
        batch.bytes += bytes;
        batch.held += held;
        self.total += held;
        let span = batch
            .span
            .entry(partition.clone())
            .or_insert((offset, offset));
        span.1 = span.1.max(offset);
        span.0 = span.0.min(offset);
        held
    }

    /// Tables whose batch is due at `now`.
    pub fn due(&self, limits: &Limits, now: Instant) -> Vec<TableIdent> {
        let mut due: Vec<TableIdent> = self
            .open
            .iter()
            .filter(|(_, b)| {
                b.records.len() >= limits.max_records
                    || b.bytes >= limits.max_bytes
                    || now.duration_since(b.opened) >= limits.interval
            })
            .map(|(t, _)| t.clone())
            .collect();
        due.sort_by_key(|t| t.to_string());
        due
    }

    /// Whether a table's batch reached its record or byte limit.
    pub fn full(&self, table: &TableIdent, limits: &Limits) -> bool {
        self.open
            .get(table)
            .is_some_and(|b| b.records.len() >= limits.max_records || b.bytes >= limits.max_bytes)
    }

    pub fn tables(&self) -> Vec<TableIdent> {
        let mut t: Vec<TableIdent> = self.open.keys().cloned().collect();
        t.sort_by_key(|t| t.to_string());
        t
    }

    /// Holds `offset` of `partition` back for a paused table: a low watermark never passes
    /// it.
    pub fn hold(&mut self, table: &TableIdent, partition: &Partition, offset: i64) {
        let at = self
            .held
            .entry(table.clone())
            .or_default()
            .entry(partition.clone())
            .or_insert(offset);
        *at = (*at).min(offset);
    }

    pub fn take(&mut self, table: &TableIdent) -> Option<OpenBatch> {
        let batch = self.open.remove(table)?;
        self.total -= batch.held;
        Some(batch)
    }

    pub fn records(&self) -> usize {
        self.open.values().map(|b| b.records.len()).sum()
    }

    /// The memory every open batch holds, together.
    pub fn held(&self) -> u64 {
        self.total
    }

    /// When the open batches hold more memory than the global cap: the largest of them, largest
    /// first, that committing brings the rest to half the cap or under (half, so that 50
    /// tables filling at once do not commit one batch per record once at the cap). Empty
    /// under the cap.
    pub fn over_cap(&self, limits: &Limits) -> Vec<TableIdent> {
        let mut total = self.total;
        if total <= limits.max_total_bytes {
            return Vec::new();
        }
        let mut by_size: Vec<(&TableIdent, u64)> =
            self.open.iter().map(|(t, b)| (t, b.held)).collect();
        // largest first; a tie by name, so the choice does not depend on hashing
        by_size.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
        });
        let mut out = Vec::new();
        for (table, held) in by_size {
            if total <= limits.max_total_bytes / 2 {
                break;
            }
            total -= held;
            out.push(table.clone());
        }
        out
    }

    /// Per partition, the first offset not yet durable once `committing` (if any) is
    /// committed: the first offset of any other open batch, or one a paused table holds
    /// back. The ledger lowers its read positions to these for the checkpoint.
    pub fn waiting(&self, committing: Option<&TableIdent>) -> BTreeMap<Partition, i64> {
        let mut out: BTreeMap<Partition, i64> = BTreeMap::new();
        let open = self
            .open
            .iter()
            .filter(|(table, _)| Some(*table) != committing)
            .flat_map(|(_, batch)| batch.span.iter().map(|(p, (first, _))| (p, *first)));
        let held = self.held.values().flatten().map(|(p, first)| (p, *first));
        for (partition, first) in open.chain(held) {
            let w = out.entry(partition.clone()).or_insert(first);
            *w = (*w).min(first);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p0() -> Partition {
        Partition::fluvio(0)
    }
    use debezium_cdc::record::{Op, Position, SourceTable, CONTRACT_VERSION};

    fn rec() -> Box<ChangeRecord> {
        Box::new(ChangeRecord {
            v: CONTRACT_VERSION,
            op: Op::Create,
            source: SourceTable::default(),
            key: Default::default(),
            before: None,
            after: None,
            unchanged: Vec::new(),
            position: Position::default(),
            columns: None,
            message: None,
            dropped: Default::default(),
        })
    }

    fn t(name: &str) -> TableIdent {
        TableIdent::from_strs(["ns", name]).unwrap()
    }

    #[test]
    fn due_by_count_bytes_and_age() {
        let now = Instant::now();
        let limits = Limits {
            max_records: 2,
            max_bytes: 100,
            interval: Duration::from_secs(1),
            max_total_bytes: u64::MAX,
        };
        let mut b = Batches::default();
        b.push(t("a"), rec(), &p0(), 1, 10, now);
        b.push(t("b"), rec(), &p0(), 2, 200, now);
        assert_eq!(b.due(&limits, now), vec![t("b")]);
        b.push(t("a"), rec(), &p0(), 3, 10, now);
        assert_eq!(b.due(&limits, now), vec![t("a"), t("b")]);
        b.push(t("c"), rec(), &p0(), 4, 1, now);
        assert!(b
            .due(&limits, now + Duration::from_secs(2))
            .contains(&t("c")));
        assert_eq!(b.records(), 4);
    }

    #[test]
    fn past_the_global_cap_the_largest_batches_go_until_half_the_cap_is_left() {
        let now = Instant::now();
        let unit = held_bytes(&rec());
        let limits = Limits {
            max_records: usize::MAX,
            max_bytes: u64::MAX,
            interval: Duration::from_secs(3600),
            max_total_bytes: 50 * unit,
        };
        let mut b = Batches::default();
        // 50 tables, a record each: at the cap, nothing goes
        for n in 0..50 {
            b.push(t(&format!("t{n:02}")), rec(), &p0(), n, 20, now);
        }
        assert_eq!(b.held(), 50 * unit);
        assert!(b.over_cap(&limits).is_empty());
        // one grows by 15 records: it goes first, then the largest of the rest (by name on a
        // tie) until half the cap or less is left
        for n in 50..65 {
            b.push(t("t07"), rec(), &p0(), n, 20, now);
        }
        let over = b.over_cap(&limits);
        assert_eq!(over[0], t("t07"));
        let left: u64 = b.held() - over.iter().map(|t| b.open[t].held).sum::<u64>();
        assert_eq!(left, 25 * unit);
        assert_eq!(over.len(), 1 + 24);
        assert_eq!(over[1], t("t00"));
        for table in over {
            b.take(&table);
        }
        assert_eq!(b.held(), b.open.values().map(|o| o.held).sum::<u64>());
        assert!(b.over_cap(&limits).is_empty());
        // a table taken that has no batch changes nothing
        assert!(b.take(&t("t07")).is_none());
        assert_eq!(b.held(), left);
    }

    /// The estimate follows what a record holds: never below its JSON, and a long value
    /// counts at its length; per-batch `bytes` stay the bytes that came in.
    #[test]
    fn held_bytes_follow_the_row_images() {
        let empty = held_bytes(&rec());
        let mut r = rec();
        r.key.insert("id".into(), Value::from(7));
        let mut after = Map::new();
        for (k, v) in [
            ("id", Value::from(7)),
            ("name", Value::from("products-7-v0")),
            (
                "description",
                Value::from("a product of line 76 in colour 8"),
            ),
            ("price", Value::from(21435)),
            ("on_offer", Value::from(false)),
            ("listed_on", Value::from("2024-01-05")),
        ] {
            after.insert(k.into(), v);
        }
        r.after = Some(after);
        let row = held_bytes(&r);
        let json = serde_json::to_vec(&r).unwrap().len() as u64;
        assert!(row > empty + json, "{row} held, {json} of JSON");
        let mut long = r.clone();
        if let Some(a) = long.after.as_mut() {
            a.insert("description".into(), Value::from("x".repeat(10_000)));
        }
        assert!(held_bytes(&long) >= row + 10_000 - 32);
        let mut b = Batches::default();
        b.push(t("a"), r, &p0(), 1, 757, Instant::now());
        assert_eq!(b.held(), row);
        assert_eq!(b.take(&t("a")).map(|o| o.bytes), Some(757));
    }

    #[test]
    fn waiting_is_the_oldest_other_open_record() {
        let now = Instant::now();
        let mut b = Batches::default();
        b.push(t("a"), rec(), &p0(), 5, 1, now);
        b.push(t("b"), rec(), &p0(), 7, 1, now);
        b.push(t("a"), rec(), &p0(), 9, 1, now);
        assert_eq!(b.waiting(Some(&t("a"))), BTreeMap::from([(p0(), 7)]));
        assert_eq!(b.waiting(Some(&t("b"))), BTreeMap::from([(p0(), 5)]));
        assert_eq!(b.waiting(None), BTreeMap::from([(p0(), 5)]));
        b.take(&t("b"));
        assert_eq!(b.waiting(Some(&t("a"))), BTreeMap::new());
        assert_eq!(b.take(&t("a")).unwrap().span[&p0()], (5, 9));
        // a paused table holds its first unapplied record back, whoever commits
        b.hold(&t("c"), &p0(), 8);
        b.hold(&t("c"), &p0(), 9);
        assert_eq!(b.waiting(Some(&t("c"))), BTreeMap::from([(p0(), 8)]));
        assert_eq!(b.waiting(None), BTreeMap::from([(p0(), 8)]));
    }

    #[test]
    fn released_batches_are_freed_off_the_run_loop() {
        struct Freed(std::sync::mpsc::Sender<Option<String>>);
        impl Drop for Freed {
            fn drop(&mut self) {
                let on = std::thread::current().name().map(str::to_owned);
                let _ = self.0.send(on);
            }
        }
        let release = Release::spawn();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..50 {
            release.release(Freed(tx.clone()));
        }
        drop(tx);
        let on: Vec<Option<String>> = rx.iter().take(50).collect();
        assert_eq!(on.len(), 50, "every batch is freed");
        assert!(
            on.iter().any(|t| t.as_deref() == Some("batch-release")),
            "{on:?}"
        );
    }
}
