//! Our own Iceberg commit: the `iceberg` crate 0.10.1 cannot commit delete files or remove
//! data files, so a snapshot is assembled from its public parts: manifests for the new data
//! and delete files, the parent's manifests carried over (those holding a removed file
//! rewritten with it marked deleted), a manifest list, a `Snapshot` with its summary, new
//! table metadata through `TableMetadataBuilder`, then the catalog's compare-and-swap
//! (SQL: our metadata file and a conditional row update; REST: the builder's changes as the
//! commit's updates). [`commit_metadata`] is the same swap for metadata-only changes
//! (snapshot expiry).

use crate::catalog::Catalog;
use crate::MergeError;
use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, ManifestContentType, ManifestFile, ManifestList,
    ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot, Summary, TableMetadata,
    TableMetadataBuildResult, TableMetadataBuilder,
};
use iceberg::table::Table;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A file that is live in the current snapshot, with what a manifest needs to carry or
/// remove it.
#[derive(Debug, Clone)]
pub struct LiveFile {
    pub file: DataFile,
    pub snapshot_id: i64,
    pub sequence_number: i64,
    pub file_sequence_number: Option<i64>,
    /// The partition spec of the manifest that lists it.
    pub spec_id: i32,
}

/// What one commit changes.
#[derive(Debug, Default)]
pub struct Changes {
    pub added_data: Vec<DataFile>,
    pub added_deletes: Vec<DataFile>,
    /// Paths of live files (data or delete) removed from the table: a truncate removes every
    /// live file, a compaction the files it rewrote. Each must be live in the parent.
    pub removed: HashSet<String>,
    /// The snapshot's operation; `None`: `append` or `overwrite` by what changes.
    pub operation: Option<Operation>,
    /// Caller properties for the snapshot summary (source offsets, connector id).
    pub properties: HashMap<String, String>,
    /// A new current schema (the source's schema evolved), committed with the data written
    /// in it: no reader sees the data without its columns. Its id is set by the caller
    /// (an identical earlier schema's, or a new one).
    pub schema: Option<std::sync::Arc<iceberg::spec::Schema>>,
}

/// The outcome of one attempt.
pub enum Outcome {
    Committed(Box<Table>),
    /// Someone else committed since `table` was loaded. Nothing of ours is visible.
    Conflict,
}

fn err(context: &'static str) -> impl FnOnce(iceberg::Error) -> MergeError {
    MergeError::commit_from(context)
}

/// The live files of the current snapshot.
pub async fn live_files(table: &Table) -> Result<Vec<LiveFile>, MergeError> {
    let metadata = table.metadata();
    let Some(snapshot) = metadata.current_snapshot() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for manifest in manifest_list(table.file_io(), metadata, snapshot.manifest_list()).await? {
        let m = manifest
            .load_manifest(table.file_io())
            .await
            .map_err(err("reading a manifest"))?;
        for entry in m.entries() {
            if !entry.is_alive() {
                continue;
            }
            out.push(LiveFile {
                file: entry.data_file().clone(),
                snapshot_id: entry.snapshot_id().unwrap_or(snapshot.snapshot_id()),
                sequence_number: entry.sequence_number().unwrap_or(0),
                file_sequence_number: entry.file_sequence_number,
                spec_id: manifest.partition_spec_id,
            });
        }
    }
    Ok(out)
}

/// Every file the table's metadata reaches, over all its snapshots: manifest lists,
/// manifests, data and delete files (live or kept for time travel), the tombstone files
/// their summaries list, and the metadata files of the metadata log. What is under the table location and not here is an orphan.
pub async fn referenced_files(table: &Table) -> Result<BTreeSet<String>, MergeError> {
    let mut out: BTreeSet<String> = snapshot_files(table, table.metadata().snapshots())
        .await?
        .into_keys()
        .collect();
    out.extend(table.metadata_location().map(str::to_owned));
    for snapshot in table.metadata().snapshots() {
        out.extend(crate::history::listed(
            Some(&snapshot.summary().additional_properties),
            table.metadata().location(),
        ));
    }
    out.extend(
        table
            .metadata()
            .metadata_log()
            .iter()
            .map(|m| m.metadata_file.clone()),
    );
    Ok(out)
}

/// The files `snapshots` reach (manifest lists, manifests, the data and delete files their
/// manifests hold live), with their sizes where the metadata records them (0 for manifest
/// lists).
pub async fn snapshot_files<'a>(
    table: &Table,
    snapshots: impl IntoIterator<Item = &'a iceberg::spec::SnapshotRef>,
) -> Result<BTreeMap<String, u64>, MergeError> {
    let metadata = table.metadata();
    let file_io = table.file_io();
    let mut out = BTreeMap::new();
    for snapshot in snapshots {
        out.insert(snapshot.manifest_list().to_owned(), 0);
        for manifest in manifest_list(file_io, metadata, snapshot.manifest_list()).await? {
            if out.contains_key(&manifest.manifest_path) {
                continue;
            }
            out.insert(
                manifest.manifest_path.clone(),
                u64::try_from(manifest.manifest_length).unwrap_or(0),
            );
            let m = manifest
                .load_manifest(file_io)
                .await
                .map_err(err("reading a manifest"))?;
            // an entry marked deleted records a removal: no reader needs its file
            for e in m.entries().iter().filter(|e| e.is_alive()) {
                let f = e.data_file();
                out.insert(f.file_path().to_owned(), f.file_size_in_bytes());
            }
        }
    }
    Ok(out)
}

async fn manifest_list(
    file_io: &FileIO,
    metadata: &TableMetadata,
    path: &str,
) -> Result<Vec<ManifestFile>, MergeError> {
    let bytes = file_io
        .new_input(path)
        .map_err(err("manifest list"))?
        .read()
        .await
        .map_err(err("reading the manifest list"))?;
    Ok(
        ManifestList::parse_with_version(&bytes, metadata.format_version())
            .map_err(err("parsing the manifest list"))?
            .entries()
            .to_vec(),
    )
}

/// Builds and commits one snapshot on top of `table`'s current one.
pub async fn commit(
    catalog: &Catalog,
    table: &Table,
    changes: Changes,
) -> Result<Outcome, MergeError> {
    let metadata = table.metadata();
    if metadata.format_version() != FormatVersion::V2 {
        return Err(MergeError::schema(format!(
            "table format {} is not supported (v2 only)",
            metadata.format_version()
        )));
    }
    let base_location = table
        .metadata_location()
        .ok_or_else(|| MergeError::commit("the table has no metadata location"))?
        .to_owned();
    let file_io = table.file_io();
    let location = metadata.location();
    let parent = metadata.current_snapshot();
    let snapshot_id = new_snapshot_id(metadata);
    let sequence = metadata.next_sequence_number();
    let schema = changes
        .schema
        .clone()
        .unwrap_or_else(|| metadata.current_schema().clone());
    let spec = metadata.default_partition_spec().as_ref().clone();
    let commit_uuid = uuid::Uuid::now_v7();
    let mut written: Vec<String> = Vec::new();

    let mut manifests: Vec<ManifestFile> = Vec::new();
    let mut manifest_no = 0;
    let mut next_manifest =
        |written: &mut Vec<String>| -> Result<iceberg::io::OutputFile, MergeError> {
            let path = format!("{location}/metadata/{commit_uuid}-m{manifest_no}.avro");
            manifest_no += 1;
            written.push(path.clone());
            file_io.new_output(&path).map_err(err("manifest"))
        };

    // one manifest for the added data files, one for the added delete files
    for (data, files) in [(true, &changes.added_data), (false, &changes.added_deletes)] {
        if files.is_empty() {
            continue;
        }
        let builder = ManifestWriterBuilder::new(
            next_manifest(&mut written)?,
            Some(snapshot_id),
            schema.clone(),
            spec.clone(),
        );
        let mut w = if data {
            builder.build_v2_data()
        } else {
            builder.build_v2_deletes()
        };
        for f in files {
            w.add_file(f.clone(), sequence)
                .map_err(err("manifest entry"))?;
        }
        manifests.push(
            w.write_manifest_file()
                .await
                .map_err(err("writing a manifest"))?,
        );
    }
    // the parent's manifests: carried as they are, rewritten when they hold a removed file,
    // dropped when nothing in them is live any more
    let mut found: HashSet<&str> = HashSet::new();
    let mut removed = Removed::default();
    if let Some(parent) = parent {
        for manifest in manifest_list(file_io, metadata, parent.manifest_list()).await? {
            let live = manifest.added_files_count.unwrap_or(1) > 0
                || manifest.existing_files_count.unwrap_or(1) > 0;
            if !live {
                continue;
            }
            if changes.removed.is_empty() {
                manifests.push(manifest);
                continue;
            }
            let m = manifest
                .load_manifest(file_io)
                .await
                .map_err(err("reading a manifest"))?;
            let hit = m
                .entries()
                .iter()
                .any(|e| e.is_alive() && changes.removed.contains(e.data_file().file_path()));
            if !hit {
                manifests.push(manifest);
                continue;
            }
            let spec = metadata
                .partition_spec_by_id(manifest.partition_spec_id)
                .ok_or_else(|| {
                    MergeError::commit(format!(
                        "manifest {} has unknown partition spec {}",
                        manifest.manifest_path, manifest.partition_spec_id
                    ))
                })?;
            let builder = ManifestWriterBuilder::new(
                next_manifest(&mut written)?,
                Some(snapshot_id),
                schema.clone(),
                spec.as_ref().clone(),
            );
            let mut w = match manifest.content {
                ManifestContentType::Data => builder.build_v2_data(),
                ManifestContentType::Deletes => builder.build_v2_deletes(),
            };
            for e in m.entries().iter().filter(|e| e.is_alive()) {
                let f = e.data_file();
                let seq = e.sequence_number().unwrap_or(0);
                let file_seq = Some(e.file_sequence_number.unwrap_or(seq));
                if let Some(path) = changes.removed.get(f.file_path()) {
                    found.insert(path.as_str());
                    removed.count(f);
                    w.add_delete_file(f.clone(), seq, file_seq)
                } else {
                    let added_by = e.snapshot_id().unwrap_or(parent.snapshot_id());
                    w.add_existing_file(f.clone(), added_by, seq, file_seq)
                }
                .map_err(err("manifest entry"))?;
            }
            manifests.push(
                w.write_manifest_file()
                    .await
                    .map_err(err("writing a manifest"))?,
            );
        }
    }
    if found.len() != changes.removed.len() {
        for path in &written {
            let _ = file_io.delete(path).await;
        }
        let missing = changes
            .removed
            .iter()
            .find(|p| !found.contains(p.as_str()))
            .cloned()
            .unwrap_or_default();
        return Err(MergeError::commit(format!(
            "{missing} is to be removed but is not live in the parent snapshot"
        )));
    }

    let list_path = format!("{location}/metadata/snap-{snapshot_id}-1-{commit_uuid}.avro");
    written.push(list_path.clone());
    let mut list = ManifestListWriter::v2(
        file_io
            .new_output(&list_path)
            .map_err(err("manifest list"))?
            .writer()
            .await
            .map_err(err("manifest list"))?,
        snapshot_id,
        parent.map(|p| p.snapshot_id()),
        sequence,
    );
    list.add_manifests(manifests.into_iter())
        .map_err(err("manifest list"))?;
    list.close()
        .await
        .map_err(err("writing the manifest list"))?;

    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
        .with_sequence_number(sequence)
        .with_timestamp_ms(now_ms().max(metadata.last_updated_ms() + 1))
        .with_manifest_list(list_path)
        .with_summary(summary(&changes, &removed))
        .with_schema_id(schema.schema_id())
        .build();
    let mut builder =
        TableMetadataBuilder::new_from_metadata(metadata.clone(), Some(base_location.clone()));
    if changes.schema.is_some() {
        builder = builder
            .add_current_schema(schema.as_ref().clone())
            .map_err(err("new schema"))?;
    }
    let built = builder
        .set_branch_snapshot(snapshot, "main")
        .map_err(err("new table metadata"))?
        .build()
        .map_err(err("new table metadata"))?;
    let outcome = commit_metadata(catalog, table, built).await?;
    if matches!(outcome, Outcome::Conflict) {
        // ours never became visible: remove the manifests and list this attempt wrote (best
        // effort; what stays is found by orphan removal). The added data and delete files
        // are the caller's: it may commit them again on the new table, or [`discard`] them.
        for path in written {
            let _ = file_io.delete(&path).await;
        }
    }
    Ok(outcome)
}

/// Deletes files written for a commit that will not be made (best effort: what stays is
/// found by orphan removal).
pub async fn discard(file_io: &FileIO, files: impl IntoIterator<Item = &DataFile>) {
    for f in files {
        let _ = file_io.delete(f.file_path()).await;
    }
}

/// Makes `built` (made by a `TableMetadataBuilder` from `table`'s metadata) current, if
/// `table`'s metadata still is: the catalog's compare-and-swap ([`Catalog::commit`]).
pub async fn commit_metadata(
    catalog: &Catalog,
    table: &Table,
    built: TableMetadataBuildResult,
) -> Result<Outcome, MergeError> {
    catalog.commit(table, built).await
}

/// What a commit removed, for its summary.
#[derive(Default)]
struct Removed {
    data_files: u64,
    records: u64,
    delete_files: u64,
    deletes: u64,
}

impl Removed {
    fn count(&mut self, f: &DataFile) {
        if f.content_type() == DataContentType::Data {
            self.data_files += 1;
            self.records += f.record_count();
        } else {
            self.delete_files += 1;
            self.deletes += f.record_count();
        }
    }
}

fn summary(changes: &Changes, removed: &Removed) -> Summary {
    let mut props = changes.properties.clone();
    let data_rows: u64 = changes.added_data.iter().map(|f| f.record_count()).sum();
    let delete_rows: u64 = changes.added_deletes.iter().map(|f| f.record_count()).sum();
    props.insert(
        "added-data-files".into(),
        changes.added_data.len().to_string(),
    );
    props.insert("added-records".into(), data_rows.to_string());
    props.insert(
        "added-delete-files".into(),
        changes.added_deletes.len().to_string(),
    );
    props.insert(
        "added-position-delete-files".into(),
        changes.added_deletes.len().to_string(),
    );
    props.insert("added-position-deletes".into(), delete_rows.to_string());
    if !changes.removed.is_empty() {
        for (key, n) in [
            ("deleted-data-files", removed.data_files),
            ("deleted-records", removed.records),
            ("removed-delete-files", removed.delete_files),
            ("removed-position-delete-files", removed.delete_files),
            ("removed-position-deletes", removed.deletes),
        ] {
            props.insert(key.into(), n.to_string());
        }
    }
    let operation = changes.operation.clone().unwrap_or(
        if changes.added_deletes.is_empty() && changes.removed.is_empty() {
            Operation::Append
        } else {
            Operation::Overwrite
        },
    );
    Summary {
        operation,
        additional_properties: props,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A positive snapshot id not used in the table yet.
fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((hi ^ lo) & (i64::MAX as u64)) as i64;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}
