//! Maintenance of a table the key index follows: compaction with the index moved to the
//! rewritten rows' new places, then snapshot expiry and orphan removal.

use super::key_index::Location;
use super::CdcTable;
use crate::catalog::Catalog;
use crate::maintenance::compaction::{self, CompactionPolicy, CompactionReport, Rewrite};
use crate::maintenance::{tidy, MaintenancePolicy, MaintenanceReport};
use crate::MergeError;
use std::collections::HashMap;

impl CdcTable {
    /// Compacts the table (see [`crate::maintenance::compaction`]) and moves the key index along: the
    /// rows of rewritten files get their new file and position. When other writers committed
    /// meanwhile, the index is rebuilt from the new table instead.
    pub async fn compact(
        &mut self,
        catalog: &Catalog,
        policy: &CompactionPolicy,
    ) -> Result<CompactionReport, MergeError> {
        let before = self.table.metadata_location().map(str::to_owned);
        let out = compaction::compact(catalog, &self.table, policy).await?;
        match &out.on_base {
            Some(rewrite) if rewrite.base.metadata_location() == before.as_deref() => {
                self.follow_rewrite(rewrite);
                self.set_table(out.table)?;
            }
            _ if out.table.metadata_location() != before.as_deref() => {
                self.set_table(out.table)?;
                self.rebuild_index().await?;
            }
            _ => {}
        }
        Ok(out.report)
    }

    /// Runs the maintenance `policy` switches on: compaction with the index moved along,
    /// then snapshot expiry and orphan removal.
    pub async fn maintain(
        &mut self,
        catalog: &Catalog,
        policy: &MaintenancePolicy,
    ) -> Result<MaintenanceReport, MergeError> {
        let mut report = MaintenanceReport::default();
        if let Some(p) = &policy.compaction {
            let r = self.compact(catalog, p).await?;
            tracing::info!(table = %self.table.identifier(), "compaction: {r}");
            report.compaction = Some(r);
        }
        let table = tidy(catalog, self.table.clone(), policy, &mut report).await?;
        self.set_table(table)?;
        Ok(report)
    }

    /// The index after a rewrite committed on the table it was read from.
    fn follow_rewrite(&mut self, rewrite: &Rewrite) {
        let new_ids: Vec<u32> = rewrite
            .added
            .iter()
            .map(|f| self.files.register(f))
            .collect();
        let mut moved: HashMap<u32, &compaction::Moves> = HashMap::new();
        for (path, moves) in &rewrite.moves {
            if let Some(id) = self.files.forget(path) {
                moved.insert(id, moves);
            }
        }
        self.index.relocate(|loc| {
            let (file, pos) = moved.get(&loc.file)?.get(loc.pos as usize).copied()??;
            Some(Location {
                file: new_ids[file as usize],
                pos,
                lsn: loc.lsn,
            })
        });
    }
}
