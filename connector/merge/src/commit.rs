//! Our own Iceberg commit: the `iceberg` crate 0.10.1 cannot commit delete files, so a
//! snapshot is assembled from its public parts: manifests for the new data and delete files,
//! the parent's manifests carried over, a manifest list, a `Snapshot` with its summary, new
//! table metadata through `TableMetadataBuilder`, then the catalog's compare-and-swap.

use crate::catalog::Catalog;
use crate::MergeError;
use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, ManifestFile, ManifestList, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, Summary, TableMetadata, TableMetadataBuilder,
};
use iceberg::table::Table;
use iceberg::MetadataLocation;
use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

/// A file that is live in the current snapshot, with what a manifest needs to carry or
/// remove it.
#[derive(Debug, Clone)]
pub struct LiveFile {
    pub file: DataFile,
    pub snapshot_id: i64,
    pub sequence_number: i64,
    pub file_sequence_number: Option<i64>,
}

/// What one commit changes.
#[derive(Debug, Default)]
pub struct Changes {
    pub added_data: Vec<DataFile>,
    pub added_deletes: Vec<DataFile>,
    /// Files removed from the table (a truncate removes every live file).
    pub removed: Vec<LiveFile>,
    /// Keep the parent's manifests (false when every live file is removed).
    pub keep_parent: bool,
    /// Caller properties for the snapshot summary (source offsets, connector id).
    pub properties: HashMap<String, String>,
}

/// A manifest entry to write.
enum Entry<'a> {
    Added(&'a DataFile),
    Removed(&'a LiveFile),
}

/// The outcome of one attempt.
pub enum Outcome {
    Committed(Box<Table>),
    /// Someone else committed since `table` was loaded. Nothing of ours is visible.
    Conflict,
}

fn err(context: &'static str) -> impl Fn(iceberg::Error) -> MergeError {
    move |e| MergeError::Commit(format!("{context}: {e}"))
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
            });
        }
    }
    Ok(out)
}

/// Every file the table's metadata reaches, over all its snapshots: manifest lists,
/// manifests, data and delete files (live or kept for time travel), and the metadata files
/// of the metadata log. What is under the table location and not here is an orphan.
pub async fn referenced_files(table: &Table) -> Result<BTreeSet<String>, MergeError> {
    let metadata = table.metadata();
    let file_io = table.file_io();
    let mut out = BTreeSet::new();
    out.extend(table.metadata_location().map(str::to_owned));
    out.extend(
        metadata
            .metadata_log()
            .iter()
            .map(|m| m.metadata_file.clone()),
    );
    let mut manifests_seen = BTreeSet::new();
    for snapshot in metadata.snapshots() {
        out.insert(snapshot.manifest_list().to_owned());
        for manifest in manifest_list(file_io, metadata, snapshot.manifest_list()).await? {
            if !manifests_seen.insert(manifest.manifest_path.clone()) {
                continue;
            }
            out.insert(manifest.manifest_path.clone());
            let m = manifest
                .load_manifest(file_io)
                .await
                .map_err(err("reading a manifest"))?;
            out.extend(
                m.entries()
                    .iter()
                    .map(|e| e.data_file().file_path().to_owned()),
            );
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
        return Err(MergeError::Commit(format!(
            "table format {} is not supported (v2 only)",
            metadata.format_version()
        )));
    }
    let base_location = table
        .metadata_location()
        .ok_or_else(|| MergeError::Commit("the table has no metadata location".into()))?
        .to_owned();
    let file_io = table.file_io();
    let location = metadata.location();
    let parent = metadata.current_snapshot();
    let snapshot_id = new_snapshot_id(metadata);
    let sequence = metadata.next_sequence_number();
    let schema = metadata.current_schema().clone();
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

    // one manifest per kind of entry: added data, added deletes, removed data, removed deletes
    let is_data = |f: &DataFile| f.content_type() == DataContentType::Data;
    let removed = |data: bool| {
        changes
            .removed
            .iter()
            .filter(move |f| is_data(&f.file) == data)
            .map(Entry::Removed)
            .collect::<Vec<_>>()
    };
    let groups: [(bool, Vec<Entry>); 4] = [
        (true, changes.added_data.iter().map(Entry::Added).collect()),
        (
            false,
            changes.added_deletes.iter().map(Entry::Added).collect(),
        ),
        (true, removed(true)),
        (false, removed(false)),
    ];
    for (data, entries) in groups {
        if entries.is_empty() {
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
        for entry in entries {
            match entry {
                Entry::Added(f) => w.add_file(f.clone(), sequence),
                Entry::Removed(f) => w.add_delete_file(
                    f.file.clone(),
                    f.sequence_number,
                    Some(f.file_sequence_number.unwrap_or(f.sequence_number)),
                ),
            }
            .map_err(err("manifest entry"))?;
        }
        manifests.push(
            w.write_manifest_file()
                .await
                .map_err(err("writing a manifest"))?,
        );
    }
    if changes.keep_parent {
        if let Some(parent) = parent {
            manifests.extend(manifest_list(file_io, metadata, parent.manifest_list()).await?);
        }
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
        .with_summary(summary(&changes))
        .with_schema_id(schema.schema_id())
        .build();
    let new_metadata =
        TableMetadataBuilder::new_from_metadata(metadata.clone(), Some(base_location.clone()))
            .set_branch_snapshot(snapshot, "main")
            .map_err(err("new table metadata"))?
            .build()
            .map_err(err("new table metadata"))?
            .metadata;
    let new_location = MetadataLocation::from_str(&base_location)
        .map_err(err("metadata location"))?
        .with_next_version()
        .with_new_metadata(&new_metadata);
    new_metadata
        .write_to(file_io, &new_location)
        .await
        .map_err(err("writing table metadata"))?;
    let new_location = new_location.to_string();
    written.push(new_location.clone());

    if !catalog
        .swap(table.identifier(), &base_location, &new_location)
        .await?
    {
        // ours never became visible: remove what this attempt wrote (best effort; what stays
        // is found by orphan removal)
        for path in written {
            let _ = file_io.delete(&path).await;
        }
        for f in changes.added_data.iter().chain(&changes.added_deletes) {
            let _ = file_io.delete(f.file_path()).await;
        }
        return Ok(Outcome::Conflict);
    }
    let table = Table::builder()
        .metadata(new_metadata)
        .metadata_location(new_location)
        .identifier(table.identifier().clone())
        .file_io(file_io.clone())
        .runtime(iceberg::Runtime::try_current().map_err(err("runtime"))?)
        .build()
        .map_err(err("new table"))?;
    Ok(Outcome::Committed(Box::new(table)))
}

fn summary(changes: &Changes) -> Summary {
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
    let removed_data = changes
        .removed
        .iter()
        .filter(|f| f.file.content_type() == DataContentType::Data)
        .count();
    if !changes.removed.is_empty() {
        props.insert("deleted-data-files".into(), removed_data.to_string());
        props.insert(
            "removed-delete-files".into(),
            (changes.removed.len() - removed_data).to_string(),
        );
    }
    let operation = if changes.added_deletes.is_empty() && changes.removed.is_empty() {
        Operation::Append
    } else {
        Operation::Overwrite
    };
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
