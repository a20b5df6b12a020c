//! Rows of normalized CDC values (the SmartModule's JSON forms) into Arrow record batches
//! shaped like the table's schema.

use crate::schema::{
    MetadataColumns, LEGACY_MONTH_COLUMN, LEGACY_YEAR_COLUMN, LSN_COLUMN, SOURCE_TS_COLUMN,
};
use crate::MergeError;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder,
    Float32Builder, Float64Builder, Int32Builder, Int64Builder, LargeBinaryBuilder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, SchemaRef, TimeUnit};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::{Map, Value};
use std::borrow::{Borrow, Cow};
use std::collections::HashMap;
use std::sync::Arc;

/// One row to write: the source columns (borrowed from the change that carries them, unless
/// the row was completed from elsewhere), and what the CDC metadata columns get.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    pub values: Cow<'a, Map<String, Value>>,
    pub op: char,
    pub lsn: Option<i64>,
    /// Microseconds since the epoch.
    pub source_ts_us: Option<i64>,
}

/// Builds one record batch of `rows` for the Arrow form of the table schema.
pub fn record_batch(
    schema: &SchemaRef,
    meta: MetadataColumns,
    rows: &[&Row],
    processed_at_us: i64,
) -> Result<RecordBatch, MergeError> {
    let values = by_column(schema, rows);
    let columns = schema
        .fields()
        .iter()
        .zip(&values)
        .map(|(field, values)| column(field, meta, rows, values, processed_at_us))
        .collect::<Result<Vec<ArrayRef>, MergeError>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(MergeError::arrow_from("rows to Arrow"))
}

/// What a row without the column has.
static NULL: Value = Value::Null;

/// Every row's value of each column of `schema`, by column (null where a row has none), in
/// one pass over each row: an entry is matched to the column the entry at its place
/// matched in the rows before (the source sends its columns in one order) and looked up by
/// name only when that misses. A schema of a few of a row's columns (the partition sources)
/// looks its columns up in the row instead.
fn by_column<'r>(schema: &SchemaRef, rows: &[&'r Row<'_>]) -> Vec<Vec<&'r Value>> {
    let fields = schema.fields();
    let by_name: HashMap<&str, usize> = fields
        .iter()
        .enumerate()
        .map(|(j, f)| (f.name().as_str(), j))
        .collect();
    let mut columns: Vec<Vec<&Value>> = vec![vec![&NULL; rows.len()]; fields.len()];
    let mut matched: Vec<Option<usize>> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if fields.len() * 2 < row.values.len() {
            for (j, field) in fields.iter().enumerate() {
                if let Some(value) = row.values.get(field.name()) {
                    columns[j][i] = value;
                }
            }
            continue;
        }
        for (at, (name, value)) in row.values.iter().enumerate() {
            let last = matched.get(at).copied().flatten();
            let j = match last {
                Some(j) if fields[j].name() == name => j,
                _ => match by_name.get(name.as_str()) {
                    Some(&j) => {
                        if matched.len() <= at {
                            matched.resize(at + 1, None);
                        }
                        matched[at] = Some(j);
                        j
                    }
                    None => continue,
                },
            };
            columns[j][i] = value;
        }
    }
    columns
}

fn column(
    field: &Field,
    meta: MetadataColumns,
    rows: &[&Row],
    values: &[&Value],
    processed_at_us: i64,
) -> Result<ArrayRef, MergeError> {
    let name = field.name().as_str();
    let micros = |get: &dyn Fn(&Row) -> Option<i64>| -> Result<ArrayRef, MergeError> {
        let values: Vec<Option<i64>> = rows.iter().map(|r| get(r)).collect();
        let array = TimestampMicrosecondArray::from(values);
        Ok(match field.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) => {
                Arc::new(array.with_timezone(tz.as_ref()))
            }
            other => {
                return Err(MergeError::schema(format!(
                    "column `{name}` is {other}, expected timestamptz"
                )))
            }
        })
    };
    let processed = DateTime::from_timestamp_micros(processed_at_us).unwrap_or_default();
    let legacy = meta == MetadataColumns::Legacy;
    let constant =
        |v: i32| Arc::new(Int32Array::from_iter_values(rows.iter().map(|_| v))) as ArrayRef;
    match name {
        n if n == meta.op() => Ok(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.op.to_string()),
        ))),
        n if n == meta.processed_at() => micros(&|_| Some(processed_at_us)),
        LSN_COLUMN => Ok(Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.lsn)))),
        SOURCE_TS_COLUMN => micros(&|r| r.source_ts_us),
        LEGACY_YEAR_COLUMN if legacy => Ok(constant(processed.year())),
        LEGACY_MONTH_COLUMN if legacy => Ok(constant(processed.month() as i32)),
        _ => array(name, field.data_type(), values),
    }
}

fn bad(column: &str, value: &Value, expected: &str) -> MergeError {
    let shown = match value {
        Value::String(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
        other => other.to_string(),
    };
    MergeError::Value {
        column: column.to_owned(),
        reason: format!("{shown} is not {expected}"),
    }
}

macro_rules! build {
    ($builder:expr, $values:expr, |$v:ident| $convert:expr) => {{
        let mut b = $builder;
        for $v in $values.iter().map(Borrow::<Value>::borrow) {
            if $v.is_null() {
                b.append_null();
            } else {
                b.append_value($convert);
            }
        }
        Arc::new(b.finish()) as ArrayRef
    }};
}

/// One column's values into an array of `data_type`.
pub fn array<V: Borrow<Value>>(
    name: &str,
    data_type: &DataType,
    values: &[V],
) -> Result<ArrayRef, MergeError> {
    let n = values.len();
    Ok(match data_type {
        DataType::Boolean => build!(BooleanBuilder::with_capacity(n), values, |v| to_bool(
            name, v
        )?),
        DataType::Int32 => build!(Int32Builder::with_capacity(n), values, |v| to_i32(name, v)?),
        DataType::Int64 => build!(Int64Builder::with_capacity(n), values, |v| to_i64(name, v)?),
        DataType::Float32 => build!(
            Float32Builder::with_capacity(n),
            values,
            |v| to_f64(name, v)? as f32
        ),
        DataType::Float64 => build!(Float64Builder::with_capacity(n), values, |v| to_f64(
            name, v
        )?),
        DataType::Utf8 => build!(StringBuilder::with_capacity(n, n * 16), values, |v| text(v)),
        DataType::Binary => build!(BinaryBuilder::with_capacity(n, n * 16), values, |v| {
            to_bytes(name, v)?
        }),
        DataType::LargeBinary => {
            build!(LargeBinaryBuilder::with_capacity(n, n * 16), values, |v| {
                to_bytes(name, v)?
            })
        }
        DataType::FixedSizeBinary(16) => {
            let mut b = FixedSizeBinaryBuilder::with_capacity(n, 16);
            for v in values.iter().map(Borrow::<Value>::borrow) {
                if v.is_null() {
                    b.append_null();
                } else {
                    b.append_value(to_uuid(name, v)?)
                        .map_err(|e| MergeError::arrow_from(format!("column `{name}`"))(e))?;
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }
        DataType::Decimal128(p, s) => {
            let b = Decimal128Builder::with_capacity(n)
                .with_precision_and_scale(*p, *s)
                .map_err(MergeError::arrow_from(format!("column `{name}`")))?;
            build!(b, values, |v| to_decimal(name, v, *p, *s)?)
        }
        DataType::Date32 => build!(Date32Builder::with_capacity(n), values, |v| to_date(
            name, v
        )?),
        DataType::Time64(TimeUnit::Microsecond) => {
            build!(Time64MicrosecondBuilder::with_capacity(n), values, |v| {
                to_time(name, v)?
            })
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let arr = build!(TimestampMicrosecondBuilder::with_capacity(n), values, |v| {
                to_timestamp(name, v, tz.is_some())?
            });
            match tz {
                Some(tz) => {
                    let a = arr
                        .as_any()
                        .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
                        .cloned()
                        .ok_or_else(|| MergeError::arrow("timestamp array"))?;
                    Arc::new(a.with_timezone(tz.as_ref()))
                }
                None => arr,
            }
        }
        other => return Err(unsupported(name, other)),
    })
}

/// Whether one value converts to a column of `data_type` as [`array`] converts it (a null
/// always does here; whether the column takes nulls is the caller's question), without
/// building an array.
pub fn convertible(name: &str, data_type: &DataType, v: &Value) -> Result<(), MergeError> {
    match data_type {
        DataType::Boolean => unless_null(v, |v| to_bool(name, v)),
        DataType::Int32 => unless_null(v, |v| to_i32(name, v)),
        DataType::Int64 => unless_null(v, |v| to_i64(name, v)),
        DataType::Float32 | DataType::Float64 => unless_null(v, |v| to_f64(name, v)),
        DataType::Utf8 => Ok(()),
        DataType::Binary | DataType::LargeBinary => unless_null(v, |v| to_bytes(name, v)),
        DataType::FixedSizeBinary(16) => unless_null(v, |v| to_uuid(name, v)),
        DataType::Decimal128(p, s) => {
            decimal_type(name, *p, *s)?;
            unless_null(v, |v| to_decimal(name, v, *p, *s))
        }
        DataType::Date32 => unless_null(v, |v| to_date(name, v)),
        DataType::Time64(TimeUnit::Microsecond) => unless_null(v, |v| to_time(name, v)),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            unless_null(v, |v| to_timestamp(name, v, tz.is_some()))
        }
        other => Err(unsupported(name, other)),
    }
}

/// A converter's verdict on a value; a null passes (as `array` appends it).
fn unless_null<T>(
    v: &Value,
    convert: impl FnOnce(&Value) -> Result<T, MergeError>,
) -> Result<(), MergeError> {
    if v.is_null() {
        Ok(())
    } else {
        convert(v).map(drop)
    }
}

fn unsupported(name: &str, data_type: &DataType) -> MergeError {
    MergeError::schema(format!(
        "column `{name}`: Arrow type {data_type} is not supported"
    ))
}

/// What `Decimal128Builder::with_precision_and_scale` refuses.
fn decimal_type(name: &str, precision: u8, scale: i8) -> Result<(), MergeError> {
    arrow_array::types::validate_decimal_precision_and_scale::<arrow_array::types::Decimal128Type>(
        precision, scale,
    )
    .map_err(MergeError::arrow_from(format!("column `{name}`")))
}

fn to_bool(name: &str, v: &Value) -> Result<bool, MergeError> {
    v.as_bool().ok_or_else(|| bad(name, v, "a boolean"))
}

fn to_i32(name: &str, v: &Value) -> Result<i32, MergeError> {
    v.as_i64()
        .and_then(|i| i32::try_from(i).ok())
        .ok_or_else(|| bad(name, v, "a 32-bit integer"))
}

fn to_i64(name: &str, v: &Value) -> Result<i64, MergeError> {
    v.as_i64().ok_or_else(|| bad(name, v, "a 64-bit integer"))
}

fn to_f64(name: &str, v: &Value) -> Result<f64, MergeError> {
    float(v).ok_or_else(|| bad(name, v, "a number"))
}

fn to_bytes(name: &str, v: &Value) -> Result<Vec<u8>, MergeError> {
    base64(v).ok_or_else(|| bad(name, v, "base64 bytes"))
}

fn to_uuid(name: &str, v: &Value) -> Result<[u8; 16], MergeError> {
    uuid(v).ok_or_else(|| bad(name, v, "a UUID"))
}

fn to_decimal(name: &str, v: &Value, precision: u8, scale: i8) -> Result<i128, MergeError> {
    decimal(v, precision, scale)
        .ok_or_else(|| bad(name, v, &format!("a decimal({precision},{scale})")))
}

fn to_date(name: &str, v: &Value) -> Result<i32, MergeError> {
    date(v).ok_or_else(|| bad(name, v, "a date (YYYY-MM-DD)"))
}

fn to_time(name: &str, v: &Value) -> Result<i64, MergeError> {
    time(v).ok_or_else(|| bad(name, v, "a time (HH:MM:SS.ffffff)"))
}

fn to_timestamp(name: &str, v: &Value, with_zone: bool) -> Result<i64, MergeError> {
    timestamp(v, with_zone).ok_or_else(|| bad(name, v, "a timestamp"))
}

fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// Strings as they are; anything else (numbers, nested values) as its JSON text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn base64(v: &Value) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()
}

fn uuid(v: &Value) -> Option<[u8; 16]> {
    uuid::Uuid::parse_str(v.as_str()?)
        .ok()
        .map(|u| *u.as_bytes())
}

/// An exact decimal string (or an integer) at `scale`; more fractional digits than the
/// scale, or more digits than the precision, is an error, never a rounding.
pub fn decimal(v: &Value, precision: u8, scale: i8) -> Option<i128> {
    let owned;
    let text = match v {
        Value::String(s) => s.as_str(),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            owned = n.to_string();
            owned.as_str()
        }
        _ => return None,
    };
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale = usize::try_from(scale).ok()?;
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale {
        return None;
    }
    let mut unscaled: i128 = 0;
    let mut count = 0usize;
    for b in int
        .bytes()
        .chain(frac.bytes())
        .chain(std::iter::repeat_n(b'0', scale - frac.len()))
    {
        unscaled = unscaled
            .checked_mul(10)?
            .checked_add(i128::from(b - b'0'))?;
        if unscaled != 0 {
            count += 1;
        }
    }
    if count > usize::from(precision) {
        return None;
    }
    Some(if negative { -unscaled } else { unscaled })
}

fn date(v: &Value) -> Option<i32> {
    let s = v.as_str()?;
    let d = match plain_date(s) {
        Some(d) => d,
        None => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?,
    };
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((d - epoch).num_days()).ok()
}

/// `YYYY-MM-DD` exactly (what the SmartModule writes), read without a format string;
/// anything else is left to chrono's parser.
fn plain_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let year = i32::try_from(number(&b[..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, number(&b[5..7])?, number(&b[8..])?)
}

/// `HH:MM:SS[.f]` to microseconds since midnight; PostgreSQL's `24:00:00` included.
fn time(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    if let Some(rest) = s.strip_prefix("24:00:00") {
        return rest
            .trim_start_matches('.')
            .bytes()
            .all(|b| b == b'0')
            .then_some(86_400_000_000);
    }
    let t = NaiveTime::parse_from_str(s, "%H:%M:%S%.f").ok()?;
    let since = t - NaiveTime::MIN;
    since.num_microseconds()
}

/// ISO-8601 timestamps to microseconds since the epoch (nanoseconds are cut to
/// microseconds). With a zone (`timestamptz`) the string must carry one; without, it must
/// not.
fn timestamp(v: &Value, with_zone: bool) -> Option<i64> {
    let s = v.as_str()?;
    if with_zone {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_micros())
    } else {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|d| d.and_utc().timestamp_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(&json!("123.45"), 10, 2), Some(12345));
        assert_eq!(decimal(&json!("-0.5"), 10, 2), Some(-50));
        assert_eq!(decimal(&json!("7"), 10, 2), Some(700));
        assert_eq!(decimal(&json!(7), 10, 2), Some(700));
        assert_eq!(decimal(&json!("1.230"), 10, 2), Some(123));
        assert_eq!(decimal(&json!("1.234"), 10, 2), None, "no rounding");
        assert_eq!(decimal(&json!("123456789.00"), 10, 2), None, "precision");
        assert_eq!(decimal(&json!("1e3"), 10, 2), None);
        assert_eq!(decimal(&json!("."), 10, 2), None);
        assert_eq!(decimal(&json!(1.5), 10, 2), None, "floats are not exact");
    }

    #[test]
    fn times_and_dates() {
        assert_eq!(date(&json!("1970-01-02")), Some(1));
        assert_eq!(date(&json!("1969-12-31")), Some(-1));
        assert_eq!(time(&json!("00:00:01.5")), Some(1_500_000));
        assert_eq!(time(&json!("24:00:00.000000")), Some(86_400_000_000));
        assert_eq!(time(&json!("25:00:00")), None);
        assert_eq!(
            timestamp(&json!("1970-01-01T00:00:01.000001"), false),
            Some(1_000_001)
        );
        assert_eq!(
            timestamp(&json!("1970-01-01T00:00:01.000001Z"), true),
            Some(1_000_001)
        );
        assert_eq!(timestamp(&json!("1970-01-01T00:00:01Z"), false), None);
        assert_eq!(timestamp(&json!("1970-01-01T00:00:01"), true), None);
    }

    #[test]
    fn one_value_converts_exactly_when_its_array_builds() {
        let types = [
            DataType::Boolean,
            DataType::Int32,
            DataType::Int64,
            DataType::Float32,
            DataType::Float64,
            DataType::Utf8,
            DataType::Binary,
            DataType::LargeBinary,
            DataType::FixedSizeBinary(16),
            DataType::Decimal128(10, 2),
            DataType::Decimal128(50, 2),
            DataType::Date32,
            DataType::Time64(TimeUnit::Microsecond),
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Time32(arrow_schema::TimeUnit::Second),
        ];
        let values = [
            Value::Null,
            json!(true),
            json!(7),
            json!(3_000_000_000_i64),
            json!(-1.5),
            json!("NaN"),
            json!("12.34"),
            json!("1.234"),
            json!("aGVsbG8="),
            json!("not base64!"),
            json!("67e55044-10b1-426f-9247-bb680e5fe0c8"),
            json!("2024-02-29"),
            json!("2023-02-29"),
            json!("+12024-02-01"),
            json!("2024-2-01"),
            json!("12:30:00.5"),
            json!("24:00:00"),
            json!("2024-02-29T12:30:00.000001"),
            json!("2024-02-29T12:30:00Z"),
            json!({"nested": [1]}),
        ];
        for t in &types {
            for v in &values {
                assert_eq!(
                    convertible("c", t, v).is_ok(),
                    array("c", t, std::slice::from_ref(v)).is_ok(),
                    "{t} of {v}"
                );
            }
        }
    }

    #[test]
    fn plain_dates_read_as_chrono_reads_them() {
        for s in [
            "1970-01-01",
            "2024-02-29",
            "2023-02-29",
            "0001-01-01",
            "9999-12-31",
            "2024-13-01",
            "2024-00-10",
            "2024-01-32",
            "2024-01-3x",
            "2024/01/30",
            "+2024-01-3",
        ] {
            assert_eq!(
                date(&json!(s)),
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| i32::try_from(
                        d.signed_duration_since(NaiveDate::default()).num_days()
                    )
                    .ok()),
                "{s}"
            );
        }
    }

    #[test]
    fn rows_are_read_by_column_whatever_their_order() {
        let schema: SchemaRef = Arc::new(arrow_schema::Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("qty", DataType::Int64, true),
        ]));
        let map = |v: Value| match v {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        };
        let rows: Vec<Row> = [
            json!({"id": 1, "name": "a", "qty": 10}),
            json!({"id": 2, "name": "b", "qty": 20}),
            json!({"qty": 30, "id": 3, "name": "c"}),
            json!({"id": 4, "extra": true, "qty": 40}),
            json!({"name": "e", "id": 5}),
        ]
        .into_iter()
        .map(|v| Row {
            values: Cow::Owned(map(v)),
            op: 'u',
            lsn: None,
            source_ts_us: None,
        })
        .collect();
        let refs: Vec<&Row> = rows.iter().collect();
        let columns = by_column(&schema, &refs);
        let shown: Vec<Vec<String>> = columns
            .iter()
            .map(|c| c.iter().map(|v| v.to_string()).collect())
            .collect();
        assert_eq!(
            shown,
            [
                ["1", "2", "3", "4", "5"],
                [r#""a""#, r#""b""#, r#""c""#, "null", r#""e""#],
                ["10", "20", "30", "40", "null"],
            ]
        );
    }

    #[test]
    fn arrays_report_the_column() {
        let err = array("price", &DataType::Int32, &[json!(1), json!("x")]).unwrap_err();
        assert!(err.to_string().contains("price"), "{err}");
        let a = array("n", &DataType::Utf8, &[json!("a"), json!(3), Value::Null]).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a.null_count(), 1);
    }
}

/// The normalized JSON value of row `i` of an array: the inverse of [`array`], used to
/// rebuild keys from data files and to carry stored values forward.
pub fn value_at(array: &dyn arrow_array::Array, i: usize) -> Result<Value, MergeError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{
        Date32Type, Decimal128Type, Float32Type, Float64Type, Int32Type, Int64Type,
        Time64MicrosecondType, TimestampMicrosecondType,
    };
    use base64::Engine as _;
    if array.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(i)),
        DataType::Float32 => float_value(f64::from(array.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => float_value(array.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(i).to_owned()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(i).to_owned()),
        DataType::Binary => Value::String(
            base64::engine::general_purpose::STANDARD.encode(array.as_binary::<i32>().value(i)),
        ),
        DataType::LargeBinary => Value::String(
            base64::engine::general_purpose::STANDARD.encode(array.as_binary::<i64>().value(i)),
        ),
        DataType::FixedSizeBinary(16) => {
            let bytes = array.as_fixed_size_binary().value(i);
            let u = uuid::Uuid::from_slice(bytes)
                .map_err(MergeError::arrow_from("a UUID of the wrong length"))?;
            Value::String(u.hyphenated().to_string())
        }
        DataType::Decimal128(_, s) => {
            let v = array.as_primitive::<Decimal128Type>().value(i);
            Value::String(format_decimal(v, *s))
        }
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(i);
            let d = NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|e| e.checked_add_signed(chrono::TimeDelta::days(i64::from(days))))
                .ok_or_else(|| MergeError::arrow(format!("date {days} out of range")))?;
            Value::String(d.format("%Y-%m-%d").to_string())
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            let us = array.as_primitive::<Time64MicrosecondType>().value(i);
            let (s, f) = (us / 1_000_000, us % 1_000_000);
            Value::String(format!(
                "{:02}:{:02}:{:02}.{f:06}",
                s / 3600,
                s / 60 % 60,
                s % 60
            ))
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let us = array.as_primitive::<TimestampMicrosecondType>().value(i);
            let dt = DateTime::from_timestamp_micros(us)
                .ok_or_else(|| MergeError::arrow(format!("timestamp {us} out of range")))?;
            let text = dt.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
            Value::String(if tz.is_some() {
                format!("{text}Z")
            } else {
                text
            })
        }
        other => {
            return Err(MergeError::schema(format!(
                "Arrow type {other} is not supported"
            )))
        }
    })
}

fn float_value(f: f64) -> Value {
    if f.is_nan() {
        Value::String("NaN".into())
    } else if f.is_infinite() {
        Value::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// An unscaled decimal with exactly `scale` fractional digits, as the SmartModule writes it.
pub fn format_decimal(unscaled: i128, scale: i8) -> String {
    let negative = unscaled < 0;
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale.max(0) as usize;
    let body = if scale == 0 {
        digits
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        format!("{int}.{frac}")
    } else {
        format!("0.{}{digits}", "0".repeat(scale - digits.len()))
    };
    if negative {
        format!("-{body}")
    } else {
        body
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_survive_array_and_back() {
        let cases: Vec<(DataType, Value)> = vec![
            (DataType::Boolean, json!(true)),
            (DataType::Int32, json!(-5)),
            (DataType::Int64, json!(1234567890123i64)),
            (DataType::Float64, json!(0.25)),
            (DataType::Float64, json!("NaN")),
            (DataType::Utf8, json!("héllo")),
            (DataType::LargeBinary, json!("iVBORw0K")),
            (
                DataType::FixedSizeBinary(16),
                json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            ),
            (DataType::Decimal128(10, 2), json!("-123.45")),
            (DataType::Decimal128(10, 3), json!("0.005")),
            (DataType::Date32, json!("2024-02-29")),
            (
                DataType::Time64(TimeUnit::Microsecond),
                json!("12:34:56.789012"),
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                json!("2024-01-01T00:00:00.123456"),
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                json!("2024-01-01T10:00:00.500000Z"),
            ),
        ];
        for (ty, v) in cases {
            let a = array("c", &ty, &[v.clone(), Value::Null]).unwrap();
            assert_eq!(value_at(a.as_ref(), 0).unwrap(), v, "{ty}");
            assert_eq!(value_at(a.as_ref(), 1).unwrap(), Value::Null);
        }
    }
}
