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

/// The old Spark job's columns, for tables that keep its queries working.
pub const LEGACY_OP_COLUMN: &str = "operation";
pub const LEGACY_PROCESSED_AT_COLUMN: &str = "processing_time";
pub const LEGACY_YEAR_COLUMN: &str = "year";
pub const LEGACY_MONTH_COLUMN: &str = "month";

/// Which CDC metadata columns a table has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetadataColumns {
    /// `_cdc_op`, `_cdc_lsn`, `_cdc_source_ts`, `_cdc_processed_at`.
    #[default]
    Cdc,
    /// The old job's `operation`, `processing_time`, `year`, `month`, plus `_cdc_lsn` and
    /// `_cdc_source_ts`.
    Legacy,
}

impl MetadataColumns {
    pub fn op(self) -> &'static str {
        match self {
            MetadataColumns::Cdc => OP_COLUMN,
            MetadataColumns::Legacy => LEGACY_OP_COLUMN,
        }
    }

    pub fn processed_at(self) -> &'static str {
        match self {
            MetadataColumns::Cdc => PROCESSED_AT_COLUMN,
            MetadataColumns::Legacy => LEGACY_PROCESSED_AT_COLUMN,
        }
    }

    /// The style of an existing table.
    pub fn of(schema: &Schema) -> MetadataColumns {
        if schema.field_by_name(OP_COLUMN).is_none()
            && schema.field_by_name(LEGACY_OP_COLUMN).is_some()
        {
            MetadataColumns::Legacy
        } else {
            MetadataColumns::Cdc
        }
    }

    pub(crate) fn reserved(self, name: &str) -> bool {
        name.starts_with("_cdc_")
            || (self == MetadataColumns::Legacy
                && [
                    LEGACY_OP_COLUMN,
                    LEGACY_PROCESSED_AT_COLUMN,
                    LEGACY_YEAR_COLUMN,
                    LEGACY_MONTH_COLUMN,
                ]
                .contains(&name))
    }

    /// The partitioning the old job used, or ours.
    pub fn default_partitioning(self) -> Partitioning {
        match self {
            MetadataColumns::Cdc => Partitioning::default(),
            MetadataColumns::Legacy => Partitioning::Fields(vec![
                (LEGACY_YEAR_COLUMN.to_owned(), Transform::Identity),
                (LEGACY_MONTH_COLUMN.to_owned(), Transform::Identity),
            ]),
        }
    }
}

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
    /// Several partition fields, in order.
    Fields(Vec<(String, Transform)>),
}

impl Default for Partitioning {
    fn default() -> Self {
        Partitioning::Column {
            column: PROCESSED_AT_COLUMN.to_owned(),
            transform: Transform::Month,
        }
    }
}

/// How time-of-day columns are stored. Iceberg has a `time` type, read by PyIceberg, DuckDB
/// and Trino, but Iceberg's Spark runtime (1.12, Spark 4.1) refuses to load any table with a
/// `time` column ("Spark does not support time fields"), so tables Spark reads store them
/// as text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeColumns {
    /// Iceberg `time` (microseconds).
    #[default]
    Time,
    /// `HH:MM:SS.ffffff` strings, which sort as the times do.
    Text,
}

/// The Iceberg type for a CDC column type. PostgreSQL's unconstrained `numeric` (no scale)
/// and decimals wider than 38 digits become exact decimal strings; nested values (arrays,
/// maps, structs) are kept as their JSON text.
pub fn iceberg_type(ty: &ColumnType, times: TimeColumns) -> Type {
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
        ColumnType::Time => match times {
            TimeColumns::Time => P::Time,
            TimeColumns::Text => P::String,
        },
        ColumnType::Timestamp => P::Timestamp,
        ColumnType::Timestamptz => P::Timestamptz,
        ColumnType::Uuid => P::Uuid,
        ColumnType::List { .. } | ColumnType::Map { .. } | ColumnType::Struct { .. } => P::String,
    })
}

/// The schema of a new table: the source columns in order (key columns required and the
/// identifier fields), then the metadata columns.
pub fn table_schema(
    columns: &[Column],
    key: &[String],
    meta: MetadataColumns,
    times: TimeColumns,
) -> Result<Schema, MergeError> {
    for k in key {
        if !columns.iter().any(|c| &c.name == k) {
            return Err(MergeError::schema(format!(
                "key column `{k}` is not among the table's columns"
            )));
        }
    }
    let mut fields = Vec::with_capacity(columns.len() + 4);
    let mut identifier_ids = Vec::with_capacity(key.len());
    for (i, column) in columns.iter().enumerate() {
        let id = i as i32 + 1;
        if meta.reserved(&column.name) {
            return Err(MergeError::schema(format!(
                "source column `{}` clashes with the CDC metadata columns",
                column.name
            )));
        }
        let is_key = key.contains(&column.name);
        let ty = iceberg_type(&column.ty, times);
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
    let mut next = columns.len() as i32 + 1;
    let mut add = |name: &str, ty: PrimitiveType, required: bool| {
        let field = if required {
            NestedField::required(next, name, Type::Primitive(ty))
        } else {
            NestedField::optional(next, name, Type::Primitive(ty))
        };
        fields.push(Arc::new(field));
        next += 1;
    };
    add(meta.op(), PrimitiveType::String, true);
    add(LSN_COLUMN, PrimitiveType::Long, false);
    add(SOURCE_TS_COLUMN, PrimitiveType::Timestamptz, false);
    add(meta.processed_at(), PrimitiveType::Timestamptz, true);
    if meta == MetadataColumns::Legacy {
        add(LEGACY_YEAR_COLUMN, PrimitiveType::Int, true);
        add(LEGACY_MONTH_COLUMN, PrimitiveType::Int, true);
    }
    Schema::builder()
        .with_fields(fields)
        .with_identifier_field_ids(identifier_ids)
        .build()
        .map_err(MergeError::schema_from("the table schema"))
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
    let fields: Vec<(String, Transform)> = match partitioning {
        Partitioning::None => Vec::new(),
        Partitioning::Column { column, transform } => vec![(column.clone(), *transform)],
        Partitioning::Fields(fields) => fields.clone(),
    };
    let mut spec = UnboundPartitionSpec::builder();
    for (column, transform) in fields {
        let field = schema.field_by_name(&column).ok_or_else(|| {
            MergeError::schema(format!("partition column `{column}` is not in the table"))
        })?;
        let name = match transform {
            Transform::Identity => format!("{column}_part"),
            other => format!("{column}_{}", transform_name(&other)),
        };
        spec = spec
            .add_partition_fields([UnboundPartitionField {
                source_id: field.id,
                field_id: None,
                name,
                transform,
            }])
            .map_err(MergeError::schema_from("the partition spec"))?;
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
        let iceberg_type = |ty: &ColumnType| iceberg_type(ty, TimeColumns::Time);
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
        assert_eq!(
            iceberg_type(&ColumnType::Time),
            Type::Primitive(PrimitiveType::Time)
        );
        assert_eq!(
            super::iceberg_type(&ColumnType::Time, TimeColumns::Text),
            Type::Primitive(PrimitiveType::String)
        );
    }

    #[test]
    fn schema_with_key_and_metadata_columns() {
        let cols = vec![
            col("id", ColumnType::Int, false),
            col("name", ColumnType::String, true),
        ];
        let s = table_schema(
            &cols,
            &["id".to_owned()],
            MetadataColumns::Cdc,
            TimeColumns::Time,
        )
        .unwrap();
        assert_eq!(s.identifier_field_ids().collect::<Vec<_>>(), vec![1]);
        assert!(s.field_by_name("id").unwrap().required);
        assert!(!s.field_by_name("name").unwrap().required);
        assert!(s.field_by_name(PROCESSED_AT_COLUMN).is_some());
        let spec = partition_spec(&s, &Partitioning::default()).unwrap();
        assert_eq!(spec.fields().len(), 1);
        assert!(table_schema(
            &cols,
            &["nope".to_owned()],
            MetadataColumns::Cdc,
            TimeColumns::Time
        )
        .is_err());
        let clash = vec![col("_cdc_op", ColumnType::String, true)];
        assert!(table_schema(&clash, &[], MetadataColumns::Cdc, TimeColumns::Time).is_err());
        let legacy = table_schema(
            &cols,
            &["id".to_owned()],
            MetadataColumns::Legacy,
            TimeColumns::Time,
        )
        .unwrap();
        for name in ["operation", "processing_time", "year", "month", LSN_COLUMN] {
            assert!(legacy.field_by_name(name).is_some(), "{name}");
        }
        assert_eq!(MetadataColumns::of(&legacy), MetadataColumns::Legacy);
        assert_eq!(MetadataColumns::of(&s), MetadataColumns::Cdc);
        let spec =
            partition_spec(&legacy, &MetadataColumns::Legacy.default_partitioning()).unwrap();
        assert_eq!(spec.fields().len(), 2);
        let clash = vec![col("year", ColumnType::Int, true)];
        assert!(table_schema(&clash, &[], MetadataColumns::Legacy, TimeColumns::Time).is_err());
        assert!(table_schema(&clash, &[], MetadataColumns::Cdc, TimeColumns::Time).is_ok());
    }
}
