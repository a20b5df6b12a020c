//! The ledger: where every source position stands, and what each table's snapshots say of
//! it. The one owner of offsets, checkpoints and the snapshot-summary properties.
//!
//! Exactly-once into the tables: each commit stores, in its snapshot summary, the source
//! offsets the table holds (`cdc.offsets`, per partition the next offset) and the checkpoint
//! below which every record of every table was durable (`cdc.checkpoint`). On start the
//! ledger reads them back: each partition resumes at the highest checkpoint, and each table
//! skips what it already holds. What the sources keep (Fluvio consumer offsets, Kafka group
//! offsets) only mirrors the checkpoint, for monitoring.
//!
//! A record's position travels with it: the source stamps (partition, offset), the batch
//! keeps it beside the change, the commit writes the batch's span into the summary and hands
//! it back here, and the checkpoint (the read position, less what open batches and paused
//! tables still wait for) goes to the source as its acknowledgement.

use crate::source::Partition;
use iceberg::spec::TableMetadata;
use iceberg::TableIdent;
use iceberg_cdc_merge::history::newest_in_history;
use iceberg_cdc_merge::maintenance::compaction::CarrySummary;
use std::collections::{BTreeMap, HashMap};

/// Summary key: the connector (`meta.name`) that wrote the snapshot.
pub const CONNECTOR_KEY: &str = "cdc.connector";
/// Summary key: per partition, the next offset the table holds.
pub const OFFSETS_KEY: &str = "cdc.offsets";
/// Summary key: per partition, the offset below which every table was durable.
pub const CHECKPOINT_KEY: &str = "cdc.checkpoint";

/// Per partition, an offset.
pub type Positions = BTreeMap<Partition, i64>;

#[derive(Debug, Default)]
pub struct Ledger {
    /// This connector's name: the value of [`CONNECTOR_KEY`] in its snapshots.
    name: String,
    /// Per partition, the next offset to read: everything before it is in a batch, durable,
    /// or filtered out.
    read: Positions,
    /// Per table, the next offset per partition it already holds.
    held: HashMap<TableIdent, Positions>,
    /// Per partition, the highest checkpoint the tables' newest commits record (this
    /// member's and the other group members'): where a partition assigned later starts.
    tables_at: Positions,
}

/// What a commit hands back: the summary of the table's newest snapshot of this connector.
pub type Summary = HashMap<String, String>;

impl Ledger {
    pub fn new(name: &str) -> Ledger {
        Ledger {
            name: name.to_owned(),
            ..Ledger::default()
        }
    }

    /// The summary of this connector's newest snapshot of a table, if it ever committed to
    /// it (a table of another writer, or one this connector never wrote, has none).
    pub fn ours(&self, metadata: &TableMetadata) -> Option<Summary> {
        newest_in_history(metadata, |s| {
            s.summary()
                .additional_properties
                .contains_key(CONNECTOR_KEY)
        })
        .map(|s| s.summary().additional_properties.clone())
        .filter(|summary| summary.get(CONNECTOR_KEY) == Some(&self.name))
    }

    /// A table found at start-up with this connector's `summary`: what it holds, and where
    /// the partitions resume (the highest checkpoint of any table).
    pub fn resume_table(&mut self, ident: &TableIdent, summary: &Summary) {
        for (p, w) in parse_offsets(summary.get(CHECKPOINT_KEY)) {
            raise(&mut self.read, p, w);
        }
        self.held
            .insert(ident.clone(), parse_offsets(summary.get(OFFSETS_KEY)));
    }

    /// A table this run opened or created: it holds nothing of the stream yet.
    pub fn open_table(&mut self, ident: &TableIdent) {
        self.held.entry(ident.clone()).or_default();
    }

    /// Where each partition resumes.
    pub fn resume(&self) -> &Positions {
        &self.read
    }

    /// The next offset this table holds of each partition (for the log).
    pub fn held(&self, ident: &TableIdent) -> Option<&Positions> {
        self.held.get(ident)
    }

    /// Partitions the source positions itself start here.
    pub fn reading_from(&mut self, starts: Positions) {
        self.read.extend(starts);
    }

    /// Everything of `partition` before `offset` is in a batch or filtered out.
    pub fn read_to(&mut self, partition: &Partition, offset: i64) {
        self.read.insert(partition.clone(), offset);
    }

    /// Whether `ident` holds the record at `offset` of `partition` already.
    pub fn holds(&self, ident: &TableIdent, partition: &Partition, offset: i64) -> bool {
        self.held
            .get(ident)
            .and_then(|h| h.get(partition))
            .is_some_and(|&next| offset < next)
    }

    /// Partitions handed to another group member: this member no longer reads them.
    pub fn revoked(&mut self, partitions: &[Partition]) {
        for p in partitions {
            self.read.remove(p);
        }
    }

    /// The checkpoint: per partition, the read position lowered to the first offset that
    /// is still `waiting` (in an open batch, or held back by a paused table).
    pub fn checkpoint(&self, waiting: &Positions) -> Positions {
        let mut out = self.read.clone();
        for (p, &first) in waiting {
            let w = out.entry(p.clone()).or_insert(first);
            *w = (*w).min(first);
        }
        out
    }

    /// The summary properties of a commit to `ident` covering `span` (per partition, the
    /// first and last offsets of the batch), with `checkpoint`, made from the table's
    /// `current` newest summary of this connector (see [`summary_properties`]).
    pub fn properties(
        &self,
        ident: &TableIdent,
        span: &BTreeMap<Partition, (i64, i64)>,
        checkpoint: &Positions,
        current: Option<&Summary>,
    ) -> Summary {
        let mut offsets = self.held.get(ident).cloned().unwrap_or_default();
        for (p, (_, last)) in span {
            offsets.insert(p.clone(), last + 1);
        }
        summary_properties(&self.name, current, &offsets, checkpoint)
    }

    /// A commit to `ident` landed; `summary` is the table's newest summary of this
    /// connector (ours, with what other group members committed before us).
    pub fn committed(&mut self, ident: &TableIdent, summary: Option<&Summary>) {
        let held = parse_offsets(summary.and_then(|s| s.get(OFFSETS_KEY)));
        self.held.insert(ident.clone(), held);
        for (p, w) in parse_offsets(summary.and_then(|s| s.get(CHECKPOINT_KEY))) {
            raise(&mut self.tables_at, p, w);
        }
    }

    /// Where the tables are, with the other group members' progress.
    pub fn tables_at(&self) -> &Positions {
        &self.tables_at
    }
}

fn raise(positions: &mut Positions, p: Partition, w: i64) {
    let at = positions.entry(p).or_insert(w);
    *at = (*at).max(w);
}

/// What maintenance keeps and carries for this connector: expiry keeps each connector's
/// newest snapshot (its resume point), compaction carries its properties over.
pub fn maintenance_writer() -> crate::config::Writer {
    crate::config::Writer {
        keep_newest_of: CONNECTOR_KEY.to_owned(),
        carry: CarrySummary::new(carried),
    }
}

/// The ledger's properties of the newest snapshot that has them: a compaction rewrites
/// rows without moving any source position.
fn carried(metadata: &TableMetadata) -> Summary {
    let newest = newest_in_history(metadata, |s| {
        s.summary()
            .additional_properties
            .contains_key(CONNECTOR_KEY)
    });
    let Some(s) = newest else {
        return Summary::new();
    };
    [CONNECTOR_KEY, OFFSETS_KEY, CHECKPOINT_KEY]
        .into_iter()
        .filter_map(|k| {
            let v = s.summary().additional_properties.get(k)?;
            Some((k.to_owned(), v.clone()))
        })
        .collect()
}

/// Offsets by partition name: `{"0":13}` (Fluvio, a file), `{"shop.public.orders/2":881}`
/// (Kafka).
pub fn offsets_json(offsets: &Positions) -> String {
    let named: BTreeMap<&str, i64> = offsets.iter().map(|(p, o)| (p.as_str(), *o)).collect();
    serde_json::to_string(&named).unwrap_or_else(|_| "{}".into())
}

pub fn parse_offsets(text: Option<&String>) -> Positions {
    text.and_then(|t| serde_json::from_str::<BTreeMap<String, i64>>(t).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(p, o)| (Partition::named(&p), o))
        .collect()
}

/// The summary properties of a commit: this connector's name, the offsets the table holds
/// and the checkpoint. Members of one consumer group (one connector name, partitions split
/// between them) commit to the same tables, each knowing its own partitions: each partition
/// goes in at the higher of ours and what the table's newest commit of this connector says,
/// so no member's commit hides another's progress. (A partition has one owner at a time and
/// its positions only grow, so the higher one is the true one.)
fn summary_properties(
    name: &str,
    current: Option<&Summary>,
    offsets: &Positions,
    checkpoint: &Positions,
) -> Summary {
    let ours = current.filter(|c| c.get(CONNECTOR_KEY).map(String::as_str) == Some(name));
    let carried = |key: &str, mine: &Positions| {
        let mut merged = parse_offsets(ours.and_then(|c| c.get(key)));
        for (p, &o) in mine {
            raise(&mut merged, p.clone(), o);
        }
        offsets_json(&merged)
    };
    HashMap::from([
        (CONNECTOR_KEY.to_owned(), name.to_owned()),
        (OFFSETS_KEY.to_owned(), carried(OFFSETS_KEY, offsets)),
        (
            CHECKPOINT_KEY.to_owned(),
            carried(CHECKPOINT_KEY, checkpoint),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(pairs: &[(&str, i64)]) -> Positions {
        pairs
            .iter()
            .map(|(p, o)| (Partition::named(p), *o))
            .collect()
    }

    #[test]
    fn a_commit_carries_the_other_members_partitions_at_their_highest() {
        // the table's newest commit is the other member's: t/1 and t/2 are its partitions
        let theirs = HashMap::from([
            (CONNECTOR_KEY.to_owned(), "sink".to_owned()),
            (
                OFFSETS_KEY.to_owned(),
                r#"{"t/0":10,"t/1":500,"t/2":700}"#.to_owned(),
            ),
            (
                CHECKPOINT_KEY.to_owned(),
                r#"{"t/0":10,"t/1":480,"t/2":690}"#.to_owned(),
            ),
        ]);
        // ours knows t/1 only as it was when we started, and t/0 as its owner
        let offsets = positions(&[("t/0", 300), ("t/1", 200)]);
        let checkpoint = positions(&[("t/0", 290), ("t/1", 200)]);
        let props = summary_properties("sink", Some(&theirs), &offsets, &checkpoint);
        assert_eq!(props[CONNECTOR_KEY], "sink");
        assert_eq!(props[OFFSETS_KEY], r#"{"t/0":300,"t/1":500,"t/2":700}"#);
        assert_eq!(props[CHECKPOINT_KEY], r#"{"t/0":290,"t/1":480,"t/2":690}"#);

        // another connector's commit to the same table is not ours to carry
        let other = HashMap::from([
            (CONNECTOR_KEY.to_owned(), "other".to_owned()),
            (OFFSETS_KEY.to_owned(), r#"{"t/9":5}"#.to_owned()),
        ]);
        let props = summary_properties("sink", Some(&other), &offsets, &checkpoint);
        assert_eq!(props[OFFSETS_KEY], r#"{"t/0":300,"t/1":200}"#);
        let props = summary_properties("sink", None, &offsets, &checkpoint);
        assert_eq!(props[CHECKPOINT_KEY], r#"{"t/0":290,"t/1":200}"#);
    }

    #[test]
    fn positions_travel_from_read_to_checkpoint_to_summary() {
        let t = TableIdent::from_strs(["ns", "t"]).unwrap();
        let p0 = Partition::fluvio(0);
        let mut ledger = Ledger::new("sink");
        // resumed: the table holds up to 40, every table was durable below 30
        let summary = HashMap::from([
            (CONNECTOR_KEY.to_owned(), "sink".to_owned()),
            (OFFSETS_KEY.to_owned(), r#"{"0":40}"#.to_owned()),
            (CHECKPOINT_KEY.to_owned(), r#"{"0":30}"#.to_owned()),
        ]);
        ledger.resume_table(&t, &summary);
        assert_eq!(ledger.resume(), &positions(&[("0", 30)]));
        assert!(ledger.holds(&t, &p0, 39) && !ledger.holds(&t, &p0, 40));

        // read to 60; a batch of another table still waits from 45
        ledger.read_to(&p0, 60);
        let checkpoint = ledger.checkpoint(&positions(&[("0", 45)]));
        assert_eq!(checkpoint, positions(&[("0", 45)]));
        assert_eq!(
            ledger.checkpoint(&Positions::new()),
            positions(&[("0", 60)])
        );

        // this table's batch spans 41..=59: it will hold up to 60
        let span = BTreeMap::from([(p0.clone(), (41, 59))]);
        let props = ledger.properties(&t, &span, &checkpoint, Some(&summary));
        assert_eq!(props[OFFSETS_KEY], r#"{"0":60}"#);
        assert_eq!(props[CHECKPOINT_KEY], r#"{"0":45}"#);
        ledger.committed(&t, Some(&props));
        assert!(ledger.holds(&t, &p0, 59));
        assert_eq!(ledger.tables_at(), &positions(&[("0", 45)]));

        // revoked partitions are read no further by this member
        ledger.revoked(std::slice::from_ref(&p0));
        assert!(ledger.resume().is_empty());
    }
}
