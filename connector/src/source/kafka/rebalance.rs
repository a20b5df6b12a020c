//! A consumer group's rebalances, done in full here: an assigned partition is positioned
//! where the tables are in the same call; before partitions are revoked, what was read of
//! them is handed on and the sink commits every open batch, so whoever gets them next starts
//! where the tables are.

use super::{partitions_of, Shared, REVOKE_WAIT};
use crate::source::{Partition, Revocation};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub(super) struct CdcContext(pub(super) Arc<Shared>);

impl ClientContext for CdcContext {}

impl ConsumerContext for CdcContext {
    /// The group's rebalances, done here in full (not by rust-rdkafka's default, which
    /// assigns first and lets us position after): an assignment without offsets would make
    /// librdkafka look for group-committed offsets, find none and report every such
    /// partition as out of range (`auto.offset.reset` is `error`) before our positions
    /// replace it.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(tpl);
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "giving up the revoked partitions failed");
                }
            }
            other => {
                tracing::error!(error = %RDKafkaErrorCode::from(other), "kafka: rebalance failed; giving up the assignment");
                let _ = consumer.unassign();
            }
        }
    }
}

impl CdcContext {
    fn revoke(&self, tpl: &TopicPartitionList) {
        let partitions = partitions_of(tpl);
        if partitions.is_empty() || self.0.stop.load(Ordering::SeqCst) {
            return;
        }
        tracing::info!(
            ?partitions,
            "partitions revoked: committing open batches first"
        );
        // what was read of them goes first, then the sink commits and answers
        self.0
            .flush(Some(&partitions), Duration::ZERO, std::time::Instant::now());
        self.0.revoked.take_away(&partitions);
        let (done, answered) = std::sync::mpsc::sync_channel(1);
        if self
            .0
            .revocations
            .blocking_send(Revocation { partitions, done })
            .is_ok()
            && answered.recv_timeout(REVOKE_WAIT).is_err()
        {
            tracing::warn!("open batches not committed within {REVOKE_WAIT:?} of a revocation");
        }
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        // each partition starts where the tables are (or by auto-offset-reset)
        let mut at = TopicPartitionList::new();
        let mut assigned = Vec::new();
        for e in tpl.elements() {
            let p = Partition::kafka(e.topic(), e.partition());
            let Some(offset) = self.0.start_of(consumer, &p) else {
                continue;
            };
            if let Err(e) = at.add_partition_offset(e.topic(), e.partition(), offset) {
                tracing::error!(error = %e, "cannot position {p}");
                continue;
            }
            assigned.push(p);
        }
        self.0.started.store(true, Ordering::SeqCst);
        self.0.revoked.give_back(&assigned);
        tracing::info!(?assigned, "partitions assigned");
        if let Err(e) = consumer.assign(&at) {
            tracing::error!(error = %e, "positioning the assigned partitions failed");
        }
    }
}
