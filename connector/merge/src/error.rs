//! What can go wrong in the merge engine, by whose fault, with the underlying error kept as
//! the source.

/// The error underneath a [`MergeError`]: the `iceberg` crate's, Arrow's, Parquet's, the
/// catalog database's, the file system's.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, by whose fault: one record's ([`MergeError::Value`]: dead-letter it,
/// the rest goes on), one table's (`Schema`, `Arrow`, `Refused`: the table cannot go on until an
/// operator acts; the others keep flowing), or a passing one (`Io`, `Catalog`, `Commit`:
/// retry, and stop only after the retry budget, without moving an offset). The message
/// names what was being done and ends with the cause's own message; the cause itself is the
/// error's [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("schema: {context}{}", cause_text(.source))]
    Schema {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    #[error("column `{column}`: {reason}")]
    Value { column: String, reason: String },
    #[error("arrow: {context}{}", cause_text(.source))]
    Arrow {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    #[error("storage: {context}{}", cause_text(.source))]
    Io {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    #[error("catalog: {context}{}", cause_text(.source))]
    Catalog {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// The catalog refused the request and will again (credentials it does not take, a
    /// request it rejects): an operator must act.
    #[error("catalog refused: {context}{}", cause_text(.source))]
    Refused {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    #[error("commit: {context}{}", cause_text(.source))]
    Commit {
        context: String,
        #[source]
        source: Option<Cause>,
    },
}

fn cause_text(source: &Option<Cause>) -> String {
    source
        .as_ref()
        .map(|c| format!(": {c}"))
        .unwrap_or_default()
}

/// The error classes, for callers that decide by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// One record cannot be written: dead-letter it, the rest goes on.
    Record,
    /// The table cannot go on until an operator acts.
    Table,
    /// It may pass (storage, catalog, a commit race): retry.
    Passing,
}

macro_rules! constructors {
    ($($variant:ident, $plain:ident, $caused:ident;)*) => {
        impl MergeError {
            $(
                #[doc = concat!("A [`MergeError::", stringify!($variant), "`] without a cause.")]
                pub fn $plain(context: impl Into<String>) -> MergeError {
                    MergeError::$variant { context: context.into(), source: None }
                }

                #[doc = concat!("Makes a [`MergeError::", stringify!($variant), "`] of a cause: for `map_err`.")]
                pub fn $caused<E, C>(context: C) -> impl FnOnce(E) -> MergeError
                where
                    E: Into<Cause>,
                    C: Into<String>,
                {
                    move |e| MergeError::$variant { context: context.into(), source: Some(e.into()) }
                }
            )*
        }
    };
}

constructors! {
    Schema, schema, schema_from;
    Arrow, arrow, arrow_from;
    Io, io, io_from;
    Catalog, catalog, catalog_from;
    Commit, commit, commit_from;
    Refused, refused, refused_from;
}

impl MergeError {
    pub fn class(&self) -> ErrorClass {
        match self {
            MergeError::Value { .. } => ErrorClass::Record,
            MergeError::Schema { .. } | MergeError::Arrow { .. } | MergeError::Refused { .. } => {
                ErrorClass::Table
            }
            MergeError::Io { .. } | MergeError::Catalog { .. } | MergeError::Commit { .. } => {
                ErrorClass::Passing
            }
        }
    }

    /// A failure that may pass (storage, catalog, a commit race): worth retrying.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Passing
    }

    /// A failure of one record only.
    pub fn is_record(&self) -> bool {
        self.class() == ErrorClass::Record
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn the_cause_is_kept_and_named() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "the gateway timed out");
        let e = MergeError::io_from("reading s3://b/t/data/1.parquet")(io);
        assert_eq!(
            e.to_string(),
            "storage: reading s3://b/t/data/1.parquet: the gateway timed out"
        );
        let source = e.source().map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("the gateway timed out"));
        assert!(e.is_retryable() && !e.is_record());
    }

    #[test]
    fn classes() {
        assert_eq!(MergeError::schema("no key").class(), ErrorClass::Table);
        assert_eq!(MergeError::arrow("cast").class(), ErrorClass::Table);
        assert_eq!(MergeError::commit("lost").class(), ErrorClass::Passing);
        assert_eq!(MergeError::catalog("down").class(), ErrorClass::Passing);
        let v = MergeError::Value {
            column: "id".into(),
            reason: "null".into(),
        };
        assert_eq!(v.class(), ErrorClass::Record);
        assert!(!MergeError::schema("x").is_retryable());
        assert_eq!(MergeError::schema("no key").to_string(), "schema: no key");
    }
}
