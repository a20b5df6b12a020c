//! What the polling thread read and has not handed over yet, by partition: a partition's
//! records go as one chunk once there are enough of them or the first has waited long
//! enough. Pure bookkeeping: the caller reads the clock once per message and passes it in.

use crate::source::{Partition, SourceRecord};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub(super) struct Pending {
    by_partition: HashMap<Partition, (Instant, Vec<SourceRecord>)>,
    /// No record waits from before this (a bound: the partition it was may have gone since),
    /// so most calls to [`Pending::due`] look at nothing.
    oldest: Option<Instant>,
}

impl Pending {
    /// Adds `record` (read at `now`); its partition's chunk when that holds `chunk` records.
    pub(super) fn push(
        &mut self,
        record: SourceRecord,
        chunk: usize,
        now: Instant,
    ) -> Option<Vec<SourceRecord>> {
        let entry = self
            .by_partition
            .entry(record.partition.clone())
            .or_insert_with(|| (now, Vec::new()));
        self.oldest = Some(self.oldest.map_or(entry.0, |o| o.min(entry.0)));
        entry.1.push(record);
        if entry.1.len() < chunk {
            return None;
        }
        let partition = entry.1[0].partition.clone();
        self.by_partition.remove(&partition).map(|(_, r)| r)
    }

    /// Takes the chunks of `which` partitions (all when `None`) whose first record came at
    /// least `waited` before `now`.
    pub(super) fn due(
        &mut self,
        which: Option<&[Partition]>,
        waited: Duration,
        now: Instant,
    ) -> Vec<Vec<SourceRecord>> {
        let Some(oldest) = self.oldest else {
            return Vec::new();
        };
        if now.saturating_duration_since(oldest) < waited {
            return Vec::new();
        }
        let ready: Vec<Partition> = self
            .by_partition
            .iter()
            .filter(|(p, (since, _))| {
                which.is_none_or(|w| w.contains(p))
                    && now.saturating_duration_since(*since) >= waited
            })
            .map(|(p, _)| p.clone())
            .collect();
        let chunks = ready
            .iter()
            .filter_map(|p| self.by_partition.remove(p).map(|(_, r)| r))
            .collect();
        self.oldest = self.by_partition.values().map(|(since, _)| *since).min();
        chunks
    }
}

/// The partitions taken away and not given back, with a count of the changes so that the
/// polling thread asks again only after one.
#[derive(Default)]
pub(super) struct Revoked {
    set: Mutex<HashSet<Partition>>,
    changes: AtomicU64,
}

impl Revoked {
    pub(super) fn take_away(&self, partitions: &[Partition]) {
        if let Ok(mut set) = self.set.lock() {
            set.extend(partitions.iter().cloned());
        }
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn give_back(&self, partitions: &[Partition]) {
        if let Ok(mut set) = self.set.lock() {
            for p in partitions {
                set.remove(p);
            }
        }
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether `partition` was taken away (a poisoned lock says yes: its messages are then
    /// dropped and read again by whoever holds the partition, from the tables' positions).
    pub(super) fn contains(&self, partition: &Partition) -> bool {
        self.set.lock().map_or(true, |s| s.contains(partition))
    }

    pub(super) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }
}

/// The partition of the message just polled and whether it was taken away: the one before
/// it, mostly (a name is made, and the revoked set asked, only when the topic or the
/// partition changes, or the set did).
#[derive(Default)]
pub(super) struct PartitionNames {
    last: Option<Named>,
}

struct Named {
    topic: String,
    number: i32,
    partition: Partition,
    revoked: bool,
    changes: u64,
}

impl PartitionNames {
    pub(super) fn of(&mut self, topic: &str, number: i32, revoked: &Revoked) -> (Partition, bool) {
        let changes = revoked.changes();
        match &self.last {
            Some(n) if n.number == number && n.changes == changes && n.topic == topic => {
                (n.partition.clone(), n.revoked)
            }
            _ => {
                let partition = Partition::kafka(topic, number);
                let is_revoked = revoked.contains(&partition);
                self.last = Some(Named {
                    topic: topic.to_owned(),
                    number,
                    partition: partition.clone(),
                    revoked: is_revoked,
                    changes,
                });
                (partition, is_revoked)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: &Partition, offset: i64) -> SourceRecord {
        SourceRecord {
            partition: partition.clone(),
            offset,
            key: None,
            value: offset.to_string().into_bytes(),
            defect: None,
        }
    }

    fn offsets(chunk: &[SourceRecord]) -> Vec<i64> {
        chunk.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn a_chunk_goes_when_full_or_when_its_first_record_waited() {
        let (a, b) = (Partition::kafka("t", 0), Partition::kafka("t", 1));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = Pending::default();
        assert!(p.push(record(&a, 0), 3, ms(0)).is_none());
        assert!(p.push(record(&b, 0), 3, ms(10)).is_none());
        assert!(p.push(record(&a, 1), 3, ms(20)).is_none());
        assert!(p.due(None, Duration::from_millis(50), ms(49)).is_empty());
        let full = p.push(record(&a, 2), 3, ms(30)).expect("a is full");
        assert_eq!(offsets(&full), [0, 1, 2]);
        // a starts again: its next record waits from when it came
        assert!(p.push(record(&a, 3), 3, ms(40)).is_none());
        let due = p.due(None, Duration::from_millis(50), ms(60));
        assert_eq!(due.len(), 1, "only b waited 50 ms");
        assert_eq!(
            (due[0][0].partition.clone(), offsets(&due[0])),
            (b.clone(), vec![0])
        );
        let due = p.due(None, Duration::from_millis(50), ms(90));
        assert_eq!(offsets(&due[0]), [3]);
        assert!(
            p.due(None, Duration::ZERO, ms(1000)).is_empty(),
            "nothing left"
        );
    }

    #[test]
    fn a_revocation_takes_only_its_partitions_at_once() {
        let (a, b) = (Partition::kafka("t", 0), Partition::kafka("t", 1));
        let now = Instant::now();
        let mut p = Pending::default();
        p.push(record(&a, 7), 100, now);
        p.push(record(&b, 9), 100, now);
        let taken = p.due(Some(std::slice::from_ref(&b)), Duration::ZERO, now);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0][0].partition, b);
        let rest = p.due(None, Duration::ZERO, now);
        assert_eq!(offsets(&rest[0]), [7]);
    }

    #[test]
    fn names_follow_the_revoked_set() {
        let revoked = Revoked::default();
        let mut names = PartitionNames::default();
        let a = Partition::kafka("shop.public.orders", 0);
        assert_eq!(
            names.of("shop.public.orders", 0, &revoked),
            (a.clone(), false)
        );
        revoked.take_away(std::slice::from_ref(&a));
        assert_eq!(
            names.of("shop.public.orders", 0, &revoked),
            (a.clone(), true)
        );
        assert_eq!(
            names.of("shop.public.orders", 1, &revoked),
            (Partition::kafka("shop.public.orders", 1), false)
        );
        assert!(names.of("shop.public.orders", 0, &revoked).1);
        revoked.give_back(std::slice::from_ref(&a));
        assert_eq!(names.of("shop.public.orders", 0, &revoked), (a, false));
    }
}
