//! Schema evolution driven by the source: the columns a change record carries (Debezium's
//! schema of the row, sent with every event by the JSON converter) reconciled with the
//! table's schema. Pure: [`reconcile`] says what the table must become for a record, or why
//! it cannot; the table commits the new schema in the same snapshot as the first data that
//! needs it.
//!
//! What evolves in place (Iceberg's own rules): a new column (added optional, older rows read
//! null), `int` -> `long`, `float` -> `double`, a decimal's precision up at the same scale,
//! required -> optional, and a dropped column (kept, made optional, later rows null). A
//! narrower type in the source (a replayed event from before a widening, or a narrowing) keeps
//! the table's wider type: every value fits. Anything else (`text` -> `int`, a decimal's scale,
//! another primary key) cannot be evolved in place: [`Incompatible`].
//!
//! The table's side: [`CdcTable::check`] admits a record (or says whose fault it is that it
//! cannot be written), and the schema a batch is written with is folded over its records.

use super::{arrow_schema_of, CdcTable, LastColumns};
use crate::schema::{iceberg_type, MetadataColumns, TimeColumns};
use crate::table::plan::{Action, KeyChange};
use crate::MergeError;
use debezium_cdc::record::{ChangeRecord, Column, ColumnType, Op};
use iceberg::spec::{NestedField, NestedFieldRef, PrimitiveType, Schema, Type};
use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::sync::Arc;

/// What a table does with a change of the source's schema (`tables.schema-changes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SchemaChanges {
    /// Evolve the table where Iceberg can; pause it where it cannot.
    #[default]
    Evolve,
    /// Pause the table at any schema change, for an operator to decide.
    Pause,
    /// Keep the table's schema: records that need another go to the dead-letter destination.
    DeadLetter,
}

impl std::str::FromStr for SchemaChanges {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "evolve" => Ok(SchemaChanges::Evolve),
            "pause" => Ok(SchemaChanges::Pause),
            "dead-letter" => Ok(SchemaChanges::DeadLetter),
            other => Err(format!(
                "`{other}` is not one of evolve, pause, dead-letter"
            )),
        }
    }
}

/// [`Incompatible::column`] when the key changed.
pub const PRIMARY_KEY: &str = "primary key";

/// A change of the source that the table cannot take in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatible {
    pub column: String,
    pub from: String,
    pub to: String,
}

impl std::fmt::Display for Incompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.column == PRIMARY_KEY {
            "the primary key".to_owned()
        } else {
            format!("column `{}`", self.column)
        };
        write!(
            f,
            "{what} changed from {} to {}, which Iceberg cannot evolve in place",
            self.from, self.to
        )
    }
}

/// The schema `schema` must become to take `record`, or `None` when it takes it as it is.
/// `last_column_id` is the table's highest field id ever assigned (new columns get the next
/// ones). A record without column types (the JSON converter with `schemas.enable=false`) can
/// only add columns, as strings holding the values' JSON text, like the table it would
/// create; without a schema a missing column cannot be told from a dropped one.
pub fn reconcile(
    schema: &Schema,
    last_column_id: i32,
    record: &ChangeRecord,
    times: TimeColumns,
) -> Result<Option<Schema>, Incompatible> {
    let key: BTreeSet<&str> = record.key.keys().map(String::as_str).collect();
    check_key(schema, &key)?;
    let untyped;
    let (columns, complete) = match &record.columns {
        Some(c) => (c.as_slice(), true),
        None => {
            let image = record.after.as_ref().or(record.before.as_ref());
            untyped = image
                .into_iter()
                .flat_map(|m| m.keys())
                .chain(&record.unchanged)
                .map(|name| Column {
                    name: name.clone(),
                    ty: ColumnType::String,
                    optional: !key.contains(name.as_str()),
                    logical: None,
                })
                .collect::<Vec<_>>();
            (untyped.as_slice(), false)
        }
    };
    let meta = MetadataColumns::of(schema);
    let mut fields: Vec<NestedFieldRef> = schema.as_struct().fields().to_vec();
    let mut next_id = last_column_id.max(schema.highest_field_id());
    let mut changed = false;
    for (i, column) in columns.iter().enumerate() {
        let wanted = match iceberg_type(&column.ty, times) {
            Type::Primitive(p) => p,
            _ => PrimitiveType::String,
        };
        match fields.iter().position(|f| f.name == column.name) {
            Some(at) => {
                let field = &fields[at];
                let Type::Primitive(have) = field.field_type.as_ref() else {
                    return Err(incompatible(&column.name, &field.field_type, &wanted));
                };
                let is_key = key.contains(column.name.as_str());
                let mut new = field.as_ref().clone();
                if *have != wanted && complete && !time_either_way(have, &wanted) {
                    if widens(have, &wanted) {
                        new.field_type = Box::new(Type::Primitive(wanted.clone()));
                    } else if !widens(&wanted, have) {
                        return Err(incompatible(&column.name, &field.field_type, &wanted));
                    }
                }
                if complete && column.optional && new.required && !is_key {
                    new.required = false;
                }
                if new != *field.as_ref() {
                    fields[at] = Arc::new(new);
                    changed = true;
                }
            }
            None => {
                if meta.reserved(&column.name) {
                    return Err(Incompatible {
                        column: column.name.clone(),
                        from: "absent".into(),
                        to: format!("{wanted} (a name of the CDC metadata columns)"),
                    });
                }
                next_id += 1;
                let field = Arc::new(NestedField::optional(
                    next_id,
                    &column.name,
                    Type::Primitive(wanted),
                ));
                // after the nearest column that precedes it in the source
                let at = columns[..i]
                    .iter()
                    .rev()
                    .find_map(|c| fields.iter().position(|f| f.name == c.name))
                    .map_or(0, |p| p + 1);
                fields.insert(at, field);
                changed = true;
            }
        }
    }
    if complete {
        // columns the source no longer has: kept, optional from now on
        for field in fields.iter_mut() {
            let gone = field.required
                && !meta.reserved(&field.name)
                && !key.contains(field.name.as_str())
                && !columns.iter().any(|c| c.name == field.name);
            if gone {
                let mut f = field.as_ref().clone();
                f.required = false;
                *field = Arc::new(f);
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    rebuilt(schema, fields).map(Some)
}

/// `schema` with the named (required, non-key) columns made optional: where a required column
/// receives a null (an unchanged TOAST value for a row the table does not hold).
pub fn make_optional(
    schema: &Schema,
    names: &BTreeSet<String>,
) -> Result<Option<Schema>, Incompatible> {
    let key: BTreeSet<i32> = schema.identifier_field_ids().collect();
    let mut changed = false;
    let fields = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| {
            if f.required && !key.contains(&f.id) && names.contains(&f.name) {
                changed = true;
                let mut f = f.as_ref().clone();
                f.required = false;
                Arc::new(f)
            } else {
                f.clone()
            }
        })
        .collect();
    if !changed {
        return Ok(None);
    }
    rebuilt(schema, fields).map(Some)
}

fn rebuilt(schema: &Schema, fields: Vec<NestedFieldRef>) -> Result<Schema, Incompatible> {
    Schema::builder()
        .with_schema_id(schema.schema_id())
        .with_fields(fields)
        .with_identifier_field_ids(schema.identifier_field_ids())
        .build()
        .map_err(|e| Incompatible {
            column: String::new(),
            from: "the table's schema".into(),
            to: e.to_string(),
        })
}

fn check_key(schema: &Schema, key: &BTreeSet<&str>) -> Result<(), Incompatible> {
    if key.is_empty() {
        return Ok(());
    }
    let have: BTreeSet<&str> = schema
        .identifier_field_ids()
        .filter_map(|id| schema.name_by_field_id(id))
        .collect();
    if have == *key {
        return Ok(());
    }
    let list =
        |s: &BTreeSet<&str>| format!("({})", s.iter().copied().collect::<Vec<_>>().join(", "));
    Err(Incompatible {
        column: PRIMARY_KEY.into(),
        from: list(&have),
        to: list(key),
    })
}

fn incompatible(column: &str, have: &Type, wanted: &PrimitiveType) -> Incompatible {
    Incompatible {
        column: column.to_owned(),
        from: have.to_string(),
        to: wanted.to_string(),
    }
}

/// A time-of-day column the table stores as `time` and the options now want as text, or the
/// other way: the table's own type stays (its writer takes the same `HH:MM:SS` values).
fn time_either_way(have: &PrimitiveType, wanted: &PrimitiveType) -> bool {
    use PrimitiveType as P;
    matches!((have, wanted), (P::Time, P::String) | (P::String, P::Time))
}

/// Whether Iceberg promotes `from` to `to` in place.
fn widens(from: &PrimitiveType, to: &PrimitiveType) -> bool {
    use PrimitiveType as P;
    match (from, to) {
        (P::Int, P::Long) | (P::Float, P::Double) => true,
        (
            P::Decimal {
                precision: p1,
                scale: s1,
            },
            P::Decimal {
                precision: p2,
                scale: s2,
            },
        ) => s1 == s2 && p2 > p1,
        _ => false,
    }
}

/// The columns of `required` that some upsert of `changes` leaves empty (missing or null),
/// in one pass over each row's values.
fn left_empty(required: &[&str], changes: &[KeyChange]) -> BTreeSet<String> {
    if required.is_empty() {
        return BTreeSet::new();
    }
    let mut empty = vec![false; required.len()];
    let mut filled = vec![false; required.len()];
    for change in changes {
        let Action::Upsert { row, .. } = &change.action else {
            continue;
        };
        filled.fill(false);
        for (name, value) in row.values.iter() {
            if let Some(at) = required.iter().position(|r| r == name) {
                filled[at] = !value.is_null();
            }
        }
        for (empty, filled) in empty.iter_mut().zip(&filled) {
            *empty |= !filled;
        }
        if empty.iter().all(|e| *e) {
            break;
        }
    }
    required
        .iter()
        .zip(empty)
        .filter(|(_, empty)| *empty)
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

/// Whether two schemas have the same columns and key (their ids aside).
pub fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.as_struct() == b.as_struct()
        && a.identifier_field_ids().collect::<BTreeSet<_>>()
            == b.identifier_field_ids().collect::<BTreeSet<_>>()
}

/// What changed from `old` to `new`, in words: `added color (string); id widened int -> long;
/// name optional`.
pub fn describe(old: &Schema, new: &Schema) -> String {
    let mut out = Vec::new();
    for f in new.as_struct().fields() {
        match old.field_by_id(f.id) {
            None => out.push(format!("added {} ({})", f.name, f.field_type)),
            Some(o) => {
                if o.field_type != f.field_type {
                    out.push(format!(
                        "{} widened {} -> {}",
                        f.name, o.field_type, f.field_type
                    ));
                }
                if o.required && !f.required {
                    out.push(format!("{} optional", f.name));
                }
            }
        }
    }
    if out.is_empty() {
        "no column changed".into()
    } else {
        out.join("; ")
    }
}

impl CdcTable {
    /// Checks that a change can be written to this table: its key encodes, its schema is
    /// the table's or one the table evolves to (by `schema_changes`), its values convert to
    /// the column types. A [`MergeError::Value`] is this record's fault (dead-letter it);
    /// a [`MergeError::Schema`] the table's (it cannot go on until an operator acts).
    pub fn check(&mut self, record: &ChangeRecord) -> Result<(), MergeError> {
        if matches!(record.op, Op::Truncate | Op::Message) {
            return Ok(());
        }
        let arrow = match self.evolution(record)? {
            None => self.arrow_schema.clone(),
            Some(evolved) => match self.options.schema_changes {
                SchemaChanges::Evolve => evolved.arrow,
                SchemaChanges::Pause => {
                    return Err(MergeError::schema(format!(
                        "{}: the source's schema changed ({}) and schema-changes is `pause`",
                        self.table.identifier(),
                        evolved.change
                    )))
                }
                SchemaChanges::DeadLetter => {
                    return Err(MergeError::Value {
                        column: evolved.change.clone(),
                        reason: format!(
                            "the source's schema changed and {} keeps its schema (schema-changes: dead-letter)",
                            self.table.identifier()
                        ),
                    })
                }
            },
        };
        self.keys.encode(&record.key)?;
        if let Some(after) = &record.after {
            let fields = arrow.fields();
            // the column after the one just matched comes first: the source sends its
            // columns in the table's order
            let mut next = 0;
            for (name, value) in after {
                let at = match fields.get(next) {
                    Some(f) if f.name() == name => next,
                    _ => arrow.index_of(name).map_err(|_| MergeError::Value {
                        column: name.clone(),
                        reason: format!("not a column of {}", self.table.identifier()),
                    })?,
                };
                next = at + 1;
                let field = &fields[at];
                if value.is_null() && !field.is_nullable() {
                    return Err(MergeError::Value {
                        column: name.clone(),
                        reason: "null in a required column".into(),
                    });
                }
                crate::io::rows::convertible(name, field.data_type(), value)?;
            }
        }
        Ok(())
    }

    /// What the current schema must become for `record` (`None`: it takes it as it is).
    fn evolution(&mut self, record: &ChangeRecord) -> Result<Option<Evolved>, MergeError> {
        if let (Some(last), Some(columns)) = (&self.last_columns, &record.columns) {
            if last.columns == *columns && last.key.iter().eq(record.key.keys()) {
                return Ok(last.evolved.clone());
            }
        }
        let metadata = self.table.metadata();
        let current = metadata.current_schema();
        let times = self.options.time_columns;
        let evolved = match reconcile(current, metadata.last_column_id(), record, times) {
            Ok(None) => None,
            Ok(Some(schema)) => Some(Evolved {
                arrow: arrow_schema_of(&schema)?,
                change: describe(current, &schema),
            }),
            Err(incompatible) => {
                let reason = format!("{}: {incompatible}", self.table.identifier());
                return Err(match self.options.schema_changes {
                    SchemaChanges::DeadLetter => MergeError::Value {
                        column: incompatible.column,
                        reason: format!(
                            "{reason} (schema-changes: dead-letter keeps the table's schema)"
                        ),
                    },
                    _ => MergeError::schema(reason),
                });
            }
        };
        if let Some(columns) = &record.columns {
            let key = record.key.keys().cloned().collect();
            self.last_columns = Some(LastColumns {
                columns: Arc::clone(columns),
                key,
                evolved: evolved.clone(),
            });
        }
        Ok(evolved)
    }

    /// The schema this batch is written with when it is not the current one: every
    /// record's columns reconciled in turn (with `schema-changes: evolve`; otherwise
    /// [`CdcTable::check`] let through only records the table takes as it is), and required
    /// columns that a row leaves empty made optional. Folded over the table as the commit
    /// finds it, so a reload after a lost compare-and-swap evolves another writer's schema.
    pub(super) fn evolve_for<R: Borrow<ChangeRecord>>(
        &self,
        records: &[R],
        changes: &[KeyChange],
    ) -> Result<Option<Arc<Schema>>, MergeError> {
        if self.options.schema_changes != SchemaChanges::Evolve {
            return Ok(None);
        }
        let metadata = self.table.metadata();
        let current = metadata.current_schema();
        let table = self.table.identifier();
        let incompatible = |e: Incompatible| MergeError::schema(format!("{table}: {e}"));
        let mut schema: Option<Schema> = None;
        let mut seen: Option<&Arc<Vec<Column>>> = None;
        for r in records {
            let r = r.borrow();
            if matches!(r.op, Op::Truncate | Op::Message) {
                continue;
            }
            if r.columns.is_some() && r.columns.as_ref() == seen {
                continue;
            }
            seen = r.columns.as_ref();
            let base = schema.as_ref().unwrap_or(current);
            if let Some(s) = reconcile(
                base,
                metadata.last_column_id(),
                r,
                self.options.time_columns,
            )
            .map_err(incompatible)?
            {
                schema = Some(s);
            }
        }
        let base = schema.as_ref().unwrap_or(current);
        let key: BTreeSet<&str> = self.keys.names().collect();
        let meta = MetadataColumns::of(base);
        let required: Vec<&str> = base
            .as_struct()
            .fields()
            .iter()
            .filter(|f| f.required && !key.contains(f.name.as_str()) && !meta.reserved(&f.name))
            .map(|f| f.name.as_str())
            .collect();
        let empty = left_empty(&required, changes);
        if let Some(s) = make_optional(base, &empty).map_err(incompatible)? {
            schema = Some(s);
        }
        let Some(schema) = schema.filter(|s| !same_columns(s, current)) else {
            return Ok(None);
        };
        // the id of an identical schema the table had before, else a new one
        let id = metadata
            .schemas_iter()
            .find(|s| same_columns(s, &schema))
            .map(|s| s.schema_id())
            .unwrap_or_else(|| {
                metadata
                    .schemas_iter()
                    .map(|s| s.schema_id())
                    .max()
                    .unwrap_or(0)
                    + 1
            });
        let schema = schema
            .into_builder()
            .with_schema_id(id)
            .build()
            .map_err(MergeError::schema_from("the evolved schema"))?;
        tracing::info!(
            table = %table,
            schema_id = id,
            "schema evolves: {}",
            describe(current, &schema)
        );
        Ok(Some(Arc::new(schema)))
    }
}

/// A schema a record's columns evolve the table to: its Arrow form (for checking values) and
/// what changed (for messages).
#[derive(Debug, Clone)]
pub(super) struct Evolved {
    pub(super) arrow: arrow_schema::SchemaRef,
    pub(super) change: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::rows::Row;
    use crate::table::key_index::Key;
    use serde_json::{json, Value};
    use std::borrow::Cow;

    fn upsert(id: i64, values: Value) -> KeyChange<'static> {
        KeyChange {
            key: Key::Int(id),
            action: Action::Upsert {
                row: Row {
                    values: Cow::Owned(values.as_object().cloned().unwrap_or_default()),
                    op: 'u',
                    lsn: None,
                    source_ts_us: None,
                },
                carry: Vec::new(),
            },
            lsn: None,
            stored: None,
        }
    }

    fn delete(id: i64) -> KeyChange<'static> {
        KeyChange {
            key: Key::Int(id),
            action: Action::Delete,
            lsn: None,
            stored: None,
        }
    }

    #[test]
    fn required_columns_some_upsert_leaves_missing_or_null() {
        let required = ["name", "price", "sku"];
        let changes = [
            upsert(1, json!({"id": 1, "name": "a", "price": 1, "sku": "x"})),
            delete(2),
            upsert(3, json!({"sku": "y", "id": 3, "name": null, "price": 2})),
            upsert(4, json!({"id": 4, "name": "b", "sku": "z"})),
        ];
        let empty = left_empty(&required, &changes);
        assert_eq!(
            empty,
            BTreeSet::from(["name".to_owned(), "price".to_owned()])
        );
        // a later row filling a column does not undo an earlier one leaving it empty
        let changes = [
            upsert(1, json!({"id": 1, "name": null})),
            upsert(2, json!({"id": 2, "name": "c"})),
        ];
        assert_eq!(
            left_empty(&["name"], &changes),
            BTreeSet::from(["name".to_owned()])
        );
        assert!(left_empty(&["name"], &[delete(1)]).is_empty());
        assert!(left_empty(&[], &changes).is_empty());
        assert!(left_empty(&required, &[]).is_empty());
    }
}
