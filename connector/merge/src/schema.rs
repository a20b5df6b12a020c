//! The Iceberg schema of a CDC table: the source table's columns, typed from the CDC record's
//! `columns`, plus the CDC metadata columns, and the partition spec.

use crate::MergeError;
use debezium_cdc::record::{Column, ColumnType};
use iceberg::spec::{
    NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionField,
    UnboundPartitionSpec,
};
use std::sync::Arc;

/// The operation that produced the row (`c`, `u`, `r`).
pub const OP_COLUMN: &str = "_cdc_op";
/// PostgreSQL LSN of the change that produced the row: a replayed older event never
/// overwrites a newer row.
pub const LSN_COLUMN: &str = "_cdc_lsn";
/// When the change was made in the source database.
pub const SOURCE_TS_COLUMN: &str = "_cdc_source_ts";
/// When the row was written to the table: the default partition source.
pub const PROCESSED_AT_COLUMN: &str = "_cdc_processed_at";

/// How a table is partitioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    /// No partitions.
    None,
    /// A transform of one column (by default `month(_cdc_processed_at)`).
    Column {
        column: String,
        transform: Transform,
    },
}

impl Default for Partitioning {
    fn default() -> Self {
        Partitioning::Column {
            column: PROCESSED_AT_COLUMN.to_owned(),
            transform: Transform::Month,
        }
    }
}

/// The Iceberg type for a CDC column type. PostgreSQL's unconstrained `numeric` (no scale)
/// and decimals wider than 38 digits become exact decimal strings; nested values (arrays,
/// maps, structs) are kept as their JSON text.
pub fn iceberg_type(ty: &ColumnType) -> Type {
    use PrimitiveType as P;
    Type::Primitive(match ty {
        ColumnType::Boolean => P::Boolean,
        ColumnType::Int => P::Int,
        ColumnType::Long => P::Long,
        ColumnType::Float => P::Float,
        ColumnType::Double => P::Double,
        ColumnType::String | ColumnType::Timetz | ColumnType::Json => P::String,
        ColumnType::Binary => P::Binary,
        ColumnType::Decimal {
            precision,
            scale: Some(scale),
        } => {
            let precision = precision.unwrap_or(38);
            if precision <= 38 && *scale <= precision {
                P::Decimal {
                    precision,
                    scale: *scale,
                }
            } else {
                P::String
            }
        }
        ColumnType::Decimal { scale: None, .. } => P::String,
        ColumnType::Date => P::Date,
        ColumnType::Time => P::Time,
        ColumnType::Timestamp => P::Timestamp,
        ColumnType::Timestamptz => P::Timestamptz,
        ColumnType::Uuid => P::Uuid,
        ColumnType::List { .. } | ColumnType::Map { .. } | ColumnType::Struct { .. } => P::String,
    })
}

/// The schema of a new table: the source columns in order (key columns required and the
/// identifier fields), then the metadata columns.
pub fn table_schema(columns: &[Column], key: &[String]) -> Result<Schema, MergeError> {
    for k in key {
        if !columns.iter().any(|c| &c.name == k) {
            return Err(MergeError::Schema(format!(
                "key column `{k}` is not among the table's columns"
            )));
        }
    }
    let mut fields = Vec::with_capacity(columns.len() + 4);
    let mut identifier_ids = Vec::with_capacity(key.len());
    for (i, column) in columns.iter().enumerate() {
        let id = i as i32 + 1;
        if column.name.starts_with("_cdc_") {
            return Err(MergeError::Schema(format!(
                "source column `{}` clashes with the CDC metadata columns (_cdc_*)",
                column.name
            )));
        }
        let is_key = key.contains(&column.name);
        let ty = iceberg_type(&column.ty);
        if is_key {
            identifier_ids.push(id);
        }
        let field = if is_key || !column.optional {
            NestedField::required(id, &column.name, ty)
        } else {
            NestedField::optional(id, &column.name, ty)
        };
        fields.push(Arc::new(field));
    }
    let next = columns.len() as i32 + 1;
    fields.push(Arc::new(NestedField::required(
        next,
        OP_COLUMN,
        Type::Primitive(PrimitiveType::String),
    )));
    fields.push(Arc::new(NestedField::optional(
        next + 1,
        LSN_COLUMN,
        Type::Primitive(PrimitiveType::Long),
    )));
    fields.push(Arc::new(NestedField::optional(
        next + 2,
        SOURCE_TS_COLUMN,
        Type::Primitive(PrimitiveType::Timestamptz),
    )));
    fields.push(Arc::new(NestedField::required(
        next + 3,
        PROCESSED_AT_COLUMN,
        Type::Primitive(PrimitiveType::Timestamptz),
    )));
    Schema::builder()
        .with_fields(fields)
        .with_identifier_field_ids(identifier_ids)
        .build()
        .map_err(|e| MergeError::Schema(e.to_string()))
}

/// A schema for a table whose events carried no column types: every column a string, the
/// key columns required. Values keep their JSON text.
pub fn untyped_columns(names: &[String], key: &[String]) -> Vec<Column> {
    names
        .iter()
        .map(|n| Column {
            name: n.clone(),
            ty: ColumnType::String,
            optional: !key.contains(n),
            logical: None,
        })
        .collect()
}

/// The partition spec for a schema.
pub fn partition_spec(
    schema: &Schema,
    partitioning: &Partitioning,
) -> Result<UnboundPartitionSpec, MergeError> {
    let mut spec = UnboundPartitionSpec::builder();
    if let Partitioning::Column { column, transform } = partitioning {
        let field = schema.field_by_name(column).ok_or_else(|| {
            MergeError::Schema(format!("partition column `{column}` is not in the table"))
        })?;
        let name = match transform {
            Transform::Identity => column.clone(),
            other => format!("{column}_{}", transform_name(other)),
        };
        spec = spec
            .add_partition_fields([UnboundPartitionField {
                source_id: field.id,
                field_id: None,
                name,
                transform: *transform,
            }])
            .map_err(|e| MergeError::Schema(e.to_string()))?;
    }
    Ok(spec.build())
}

fn transform_name(t: &Transform) -> String {
    match t {
        Transform::Year => "year".into(),
        Transform::Month => "month".into(),
        Transform::Day => "day".into(),
        Transform::Hour => "hour".into(),
        Transform::Bucket(n) => format!("bucket_{n}"),
        Transform::Truncate(w) => format!("trunc_{w}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType, optional: bool) -> Column {
        Column {
            name: name.into(),
            ty,
            optional,
            logical: None,
        }
    }

    #[test]
    fn types_map_to_iceberg() {
        let d = |p, s| ColumnType::Decimal {
            precision: p,
            scale: s,
        };
        assert_eq!(
            iceberg_type(&d(Some(10), Some(2))),
            Type::Primitive(PrimitiveType::Decimal {
                precision: 10,
                scale: 2
            })
        );
        assert_eq!(
            iceberg_type(&d(None, Some(2))),
            Type::Primitive(PrimitiveType::Decimal {
                precision: 38,
                scale: 2
            })
        );
        assert_eq!(
            iceberg_type(&d(Some(60), Some(2))),
            Type::Primitive(PrimitiveType::String)
        );
        assert_eq!(
            iceberg_type(&d(None, None)),
            Type::Primitive(PrimitiveType::String)
        );
        assert_eq!(
            iceberg_type(&ColumnType::Timestamptz),
            Type::Primitive(PrimitiveType::Timestamptz)
        );
        assert_eq!(
            iceberg_type(&ColumnType::Json),
            Type::Primitive(PrimitiveType::String)
        );
    }

    #[test]
    fn schema_with_key_and_metadata_columns() {
        let cols = vec![
            col("id", ColumnType::Int, false),
            col("name", ColumnType::String, true),
        ];
        let s = table_schema(&cols, &["id".to_owned()]).unwrap();
        assert_eq!(s.identifier_field_ids().collect::<Vec<_>>(), vec![1]);
        assert!(s.field_by_name("id").unwrap().required);
        assert!(!s.field_by_name("name").unwrap().required);
        assert!(s.field_by_name(PROCESSED_AT_COLUMN).is_some());
        let spec = partition_spec(&s, &Partitioning::default()).unwrap();
        assert_eq!(spec.fields().len(), 1);
        assert!(table_schema(&cols, &["nope".to_owned()]).is_err());
        let clash = vec![col("_cdc_op", ColumnType::String, true)];
        assert!(table_schema(&clash, &[]).is_err());
    }
}
