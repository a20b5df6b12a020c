//! Kafka Connect schemas as the JSON converter writes them (`{"type":"int32","optional":false,
//! "name":"io.debezium.time.Date","field":"d"}`), the column types they map to, and the
//! normalization of row values by their schema.

use crate::logical::{self, LogicalError, Unit};
use crate::record::{Column, ColumnType, ElementType};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One Kafka Connect schema node.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectSchema {
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub fields: Vec<ConnectSchema>,
    #[serde(default)]
    pub items: Option<Box<ConnectSchema>>,
    #[serde(default)]
    pub keys: Option<Box<ConnectSchema>>,
    #[serde(default)]
    pub values: Option<Box<ConnectSchema>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("expected {expected}, got {got}")]
    Kind { expected: &'static str, got: String },
    #[error(transparent)]
    Logical(#[from] LogicalError),
    #[error("schema type `{0}` is not a Kafka Connect type")]
    UnknownType(String),
    #[error("decimal scale `{0}` is not an integer")]
    Scale(String),
}

impl ConnectSchema {
    pub fn parse(value: &Value) -> Result<ConnectSchema, serde_json::Error> {
        ConnectSchema::deserialize(value)
    }

    /// The field of a struct schema with this name.
    pub fn field(&self, name: &str) -> Option<&ConnectSchema> {
        self.fields
            .iter()
            .find(|f| f.field.as_deref() == Some(name))
    }

    fn logical(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The column type this schema maps to.
    pub fn column_type(&self) -> Result<ColumnType, ValueError> {
        use ColumnType as T;
        if let Some(name) = self.logical() {
            match name {
                "org.apache.kafka.connect.data.Decimal" => {
                    return Ok(T::Decimal {
                        precision: self
                            .parameters
                            .get("connect.decimal.precision")
                            .and_then(|p| p.parse().ok()),
                        scale: Some(self.scale()?.max(0) as u32),
                    })
                }
                "io.debezium.data.VariableScaleDecimal" => {
                    return Ok(T::Decimal {
                        precision: None,
                        scale: None,
                    })
                }
                "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => {
                    return Ok(T::Date)
                }
                "io.debezium.time.Time"
                | "io.debezium.time.MicroTime"
                | "io.debezium.time.NanoTime"
                | "org.apache.kafka.connect.data.Time" => return Ok(T::Time),
                "io.debezium.time.ZonedTime" => return Ok(T::Timetz),
                "io.debezium.time.Timestamp"
                | "io.debezium.time.MicroTimestamp"
                | "io.debezium.time.NanoTimestamp"
                | "org.apache.kafka.connect.data.Timestamp" => return Ok(T::Timestamp),
                "io.debezium.time.ZonedTimestamp" => return Ok(T::Timestamptz),
                "io.debezium.data.Uuid" => return Ok(T::Uuid),
                "io.debezium.data.Json" => return Ok(T::Json),
                _ => {}
            }
        }
        Ok(match self.ty.as_str() {
            "boolean" => T::Boolean,
            "int8" | "int16" | "int32" => T::Int,
            "int64" => T::Long,
            "float" | "float32" => T::Float,
            "double" | "float64" => T::Double,
            "string" => T::String,
            "bytes" => T::Binary,
            "array" => T::List {
                element: Box::new(self.element(self.items.as_deref())?),
            },
            "map" => T::Map {
                key: Box::new(self.element(self.keys.as_deref())?),
                value: Box::new(self.element(self.values.as_deref())?),
            },
            "struct" => T::Struct {
                fields: self.columns()?,
            },
            other => return Err(ValueError::UnknownType(other.to_owned())),
        })
    }

    fn element(&self, inner: Option<&ConnectSchema>) -> Result<ElementType, ValueError> {
        match inner {
            Some(s) => Ok(ElementType {
                ty: s.column_type()?,
                optional: s.optional,
                logical: s.name.clone(),
            }),
            None => Err(ValueError::UnknownType(format!(
                "{} without items",
                self.ty
            ))),
        }
    }

    /// The columns of a struct schema, in order.
    pub fn columns(&self) -> Result<Vec<Column>, ValueError> {
        self.fields
            .iter()
            .map(|f| {
                Ok(Column {
                    name: f.field.clone().unwrap_or_default(),
                    ty: f.column_type()?,
                    optional: f.optional,
                    logical: f.name.clone(),
                })
            })
            .collect()
    }

    fn scale(&self) -> Result<i32, ValueError> {
        match self.parameters.get("scale") {
            None => Ok(0),
            Some(s) => s.parse().map_err(|_| ValueError::Scale(s.clone())),
        }
    }

    /// Normalizes one value of this schema to the form the CDC record promises.
    pub fn normalize(&self, value: &Value) -> Result<Value, ValueError> {
        let mut out = value.clone();
        self.normalize_in_place(&mut out)?;
        Ok(out)
    }

    /// [`ConnectSchema::normalize`] in place: what passes as it is stays where it is (not a
    /// copy), what converts is replaced.
    pub fn normalize_in_place(&self, value: &mut Value) -> Result<(), ValueError> {
        if value.is_null() {
            return Ok(());
        }
        if let Some(name) = self.logical() {
            if let Some(v) = self.normalize_logical(name, value)? {
                *value = v;
                return Ok(());
            }
        }
        match self.ty.as_str() {
            "boolean" => expect(value, "a boolean", Value::is_boolean),
            "int8" | "int16" | "int32" | "int64" => {
                expect(value, "an integer", |v| v.is_i64() || v.is_u64())
            }
            "float" | "float32" | "double" | "float64" => expect(value, "a number", |v| {
                v.is_number() || matches!(v.as_str(), Some("NaN" | "Infinity" | "-Infinity"))
            }),
            "string" => expect(value, "a string", Value::is_string),
            "bytes" => {
                let text = as_str(value, "base64 bytes")?;
                logical::decode_base64(text)?;
                Ok(())
            }
            "array" => {
                let items = match value {
                    Value::Array(items) => items,
                    other => return Err(kind("an array", other)),
                };
                match self.items.as_deref() {
                    Some(item_schema) => items
                        .iter_mut()
                        .try_for_each(|v| item_schema.normalize_in_place(v)),
                    None => Ok(()),
                }
            }
            "map" => match (self.values.as_deref(), value) {
                (Some(values), Value::Object(entries)) => entries
                    .values_mut()
                    .try_for_each(|v| values.normalize_in_place(v)),
                // Connect writes maps with non-string keys as [[k, v], ...]
                _ => Ok(()),
            },
            "struct" => match value {
                Value::Object(obj) => {
                    *obj = self.normalize_struct(std::mem::take(obj))?;
                    Ok(())
                }
                other => Err(kind("an object", other)),
            },
            other => Err(ValueError::UnknownType(other.to_owned())),
        }
    }

    /// Normalizes every field of a struct value; fields the schema does not name pass as
    /// they are. The names and values move into a map of the struct's size (the parser's
    /// has room to spare, and a batch holds tens of thousands of these). A value's field is
    /// looked for at its own place first: Debezium writes them in the schema's order.
    pub fn normalize_struct(
        &self,
        obj: Map<String, Value>,
    ) -> Result<Map<String, Value>, ValueError> {
        let mut out = Map::with_capacity(obj.len());
        for (at, (name, mut v)) in obj.into_iter().enumerate() {
            self.normalize_member(at, &name, &mut v)?;
            out.insert(name, v);
        }
        Ok(out)
    }

    /// Normalizes the value of a struct's member `name`, the `at`-th of its value, by the
    /// field of that name (looked for at `at` first); a member the schema does not name
    /// passes as it is.
    pub fn normalize_member(&self, at: usize, name: &str, v: &mut Value) -> Result<(), ValueError> {
        let field = match self.fields.get(at) {
            Some(f) if f.field.as_deref() == Some(name) => Some(f),
            _ => self.field(name),
        };
        match field {
            Some(schema) => schema.normalize_in_place(v).map_err(|e| in_column(name, e)),
            None => Ok(()),
        }
    }

    fn normalize_logical(&self, name: &str, value: &Value) -> Result<Option<Value>, ValueError> {
        let s = |text: String| Ok(Some(Value::String(text)));
        match name {
            "org.apache.kafka.connect.data.Decimal" => {
                let bytes = logical::decode_base64(as_str(value, "base64 decimal bytes")?)?;
                s(logical::decimal(&bytes, self.scale()?)?)
            }
            "io.debezium.data.VariableScaleDecimal" => {
                let obj = value
                    .as_object()
                    .ok_or_else(|| kind("an object with scale and value", value))?;
                let scale = obj
                    .get("scale")
                    .and_then(Value::as_i64)
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| kind("an integer scale", value))?;
                let bytes = logical::decode_base64(as_str(
                    obj.get("value").unwrap_or(&Value::Null),
                    "base64 decimal bytes",
                )?)?;
                s(logical::decimal(&bytes, scale)?)
            }
            "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => {
                s(logical::date_from_days(as_i64(value)?)?)
            }
            "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => {
                s(logical::time_of_day(as_i64(value)?, Unit::Millis)?)
            }
            "io.debezium.time.MicroTime" => s(logical::time_of_day(as_i64(value)?, Unit::Micros)?),
            "io.debezium.time.NanoTime" => s(logical::time_of_day(as_i64(value)?, Unit::Nanos)?),
            "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
                s(logical::timestamp(as_i64(value)?, Unit::Millis)?)
            }
            "io.debezium.time.MicroTimestamp" => {
                s(logical::timestamp(as_i64(value)?, Unit::Micros)?)
            }
            "io.debezium.time.NanoTimestamp" => s(logical::timestamp(as_i64(value)?, Unit::Nanos)?),
            "io.debezium.time.ZonedTimestamp" => s(logical::zoned_timestamp(as_str(
                value,
                "a zoned timestamp",
            )?)?),
            "io.debezium.data.Uuid" => {
                let text = as_str(value, "a UUID string")?;
                if !is_uuid(text) {
                    return Err(kind("a UUID", value));
                }
                s(text.to_ascii_lowercase())
            }
            _ => Ok(None),
        }
    }
}

/// Names the column a value error happened in.
pub fn in_column(name: &str, e: ValueError) -> ValueError {
    match e {
        ValueError::Kind { expected, got } => ValueError::Kind {
            expected,
            got: format!("{got} in column `{name}`"),
        },
        ValueError::Logical(l) => ValueError::Kind {
            expected: "a valid value",
            got: format!("{l} in column `{name}`"),
        },
        other => other,
    }
}

fn is_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn expect(
    value: &Value,
    expected: &'static str,
    ok: impl Fn(&Value) -> bool,
) -> Result<(), ValueError> {
    if ok(value) {
        Ok(())
    } else {
        Err(kind(expected, value))
    }
}

fn kind(expected: &'static str, value: &Value) -> ValueError {
    ValueError::Kind {
        expected,
        got: describe(value),
    }
}

/// A short description of a JSON value for error messages (never the whole value).
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.len() <= 40 => format!("string {s:?}"),
        Value::String(s) => format!("a string of {} bytes", s.len()),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

fn as_str<'v>(value: &'v Value, expected: &'static str) -> Result<&'v str, ValueError> {
    value.as_str().ok_or_else(|| kind(expected, value))
}

fn as_i64(value: &Value) -> Result<i64, ValueError> {
    value.as_i64().ok_or_else(|| kind("an integer", value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> ConnectSchema {
        ConnectSchema::parse(&v).unwrap()
    }

    #[test]
    fn decimal_schema_and_value() {
        let s = schema(json!({"type":"bytes","optional":true,
            "name":"org.apache.kafka.connect.data.Decimal","version":1,
            "parameters":{"scale":"2","connect.decimal.precision":"10"},"field":"price"}));
        assert_eq!(
            s.column_type().unwrap(),
            ColumnType::Decimal {
                precision: Some(10),
                scale: Some(2)
            }
        );
        assert_eq!(s.normalize(&json!("MDk=")).unwrap(), json!("123.45"));
        assert!(s.normalize(&json!("***")).is_err());
        assert!(s.normalize(&json!(12.3)).is_err());
        assert_eq!(s.normalize(&Value::Null).unwrap(), Value::Null);
    }

    #[test]
    fn variable_scale_decimal() {
        let s = schema(json!({"type":"struct","fields":[
            {"type":"int32","optional":false,"field":"scale"},
            {"type":"bytes","optional":false,"field":"value"}],
            "optional":true,"name":"io.debezium.data.VariableScaleDecimal","version":1,
            "doc":"Variable scaled decimal","field":"n"}));
        assert_eq!(
            s.column_type().unwrap(),
            ColumnType::Decimal {
                precision: None,
                scale: None
            }
        );
        assert_eq!(
            s.normalize(&json!({"scale":3,"value":"MDk="})).unwrap(),
            json!("12.345")
        );
        assert!(s.normalize(&json!({"value":"MDk="})).is_err());
    }

    #[test]
    fn arrays_keep_element_logical_types() {
        let s = schema(
            json!({"type":"array","items":{"type":"int32","optional":true,
            "name":"io.debezium.time.Date","version":1},"optional":true,"field":"days"}),
        );
        assert_eq!(
            s.column_type().unwrap(),
            ColumnType::List {
                element: Box::new(ElementType {
                    ty: ColumnType::Date,
                    optional: true,
                    logical: Some("io.debezium.time.Date".into())
                })
            }
        );
        assert_eq!(
            s.normalize(&json!([0, null, 1])).unwrap(),
            json!(["1970-01-01", null, "1970-01-02"])
        );
    }

    #[test]
    fn plain_types_are_checked() {
        let s = schema(json!({"type":"int32","optional":false,"field":"id"}));
        assert!(s.normalize(&json!("1")).is_err());
        assert_eq!(s.normalize(&json!(1)).unwrap(), json!(1));
        let s = schema(json!({"type":"bytes","optional":true,"field":"b"}));
        assert!(s.normalize(&json!("not base64!")).is_err());
        let s = schema(json!({"type":"double","optional":true,"field":"x"}));
        assert_eq!(s.normalize(&json!("NaN")).unwrap(), json!("NaN"));
        let s = schema(json!({"type":"string","optional":false,
            "name":"io.debezium.data.Uuid","version":1,"field":"u"}));
        assert_eq!(
            s.normalize(&json!("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"))
                .unwrap(),
            json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        );
        assert!(s.normalize(&json!("not-a-uuid")).is_err());
        assert!(schema(json!({"type":"int128"})).column_type().is_err());
    }
}
