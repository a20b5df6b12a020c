//! SmartModule parameters (`with:` in a connector's `transforms`). Fluvio passes every
//! parameter as a string; a wrong one fails `init`, so a bad deploy is refused up front
//! instead of stalling the stream later.

use crate::record::Op;
use std::collections::BTreeMap;

/// Default for `toast_placeholder`: Debezium's `unavailable.value.placeholder`.
pub const DEFAULT_TOAST_PLACEHOLDER: &str = "__debezium_unavailable_value";

const KNOWN: &[&str] = &[
    "operations",
    "include",
    "exclude",
    "key_columns",
    "truncate",
    "on_error",
    "format",
    "columns",
    "toast_placeholder",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("unknown parameter `{0}` (known: {known})", known = KNOWN.join(", "))]
    Unknown(String),
    #[error("parameter `{name}`: {problem}")]
    Invalid { name: &'static str, problem: String },
}

/// What to do with a truncate event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncateAction {
    /// Pass it on as an `op: "t"` change (the sink empties the table).
    Emit,
    /// Drop it, counted as `truncate`.
    Drop,
    /// Turn it into an error record, for a person to decide.
    Error,
}

/// What to do with a record that cannot be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    Emit,
    Drop,
}

/// Which input shape to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Recognize each record: envelope, flattened, transaction, heartbeat or tombstone.
    Auto,
    /// Debezium's change event envelope (`before`, `after`, `source`, `op`).
    Envelope,
    /// Rows flattened by Debezium's `ExtractNewRecordState` (`__op`, `__deleted`, ...).
    Flattened,
}

/// Key columns to use when a record has no Kafka key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyColumns {
    /// `(table pattern, columns)`, first match wins.
    pub per_table: Vec<(String, Vec<String>)>,
    /// For every other table.
    pub default: Option<Vec<String>>,
}

impl KeyColumns {
    pub fn for_table(&self, qualified: &str, db: Option<&str>) -> Option<&[String]> {
        self.per_table
            .iter()
            .find(|(pattern, _)| table_matches(pattern, qualified, db))
            .map(|(_, cols)| cols.as_slice())
            .or(self.default.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub operations: Vec<Op>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub key_columns: KeyColumns,
    pub truncate: TruncateAction,
    pub on_error: ErrorAction,
    pub format: InputFormat,
    pub columns: bool,
    pub toast_placeholder: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            operations: vec![Op::Create, Op::Update, Op::Delete, Op::Read],
            include: Vec::new(),
            exclude: Vec::new(),
            key_columns: KeyColumns::default(),
            truncate: TruncateAction::Emit,
            on_error: ErrorAction::Emit,
            format: InputFormat::Auto,
            columns: true,
            toast_placeholder: DEFAULT_TOAST_PLACEHOLDER.to_owned(),
        }
    }
}

impl Settings {
    /// Reads the parameters. Every name must be known and every value valid.
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Settings, ParamError> {
        let mut s = Settings::default();
        for (name, raw) in params {
            let value = raw.trim();
            match name {
                "operations" => s.operations = parse_operations(value)?,
                "include" => s.include = split_list(value),
                "exclude" => s.exclude = split_list(value),
                "key_columns" => s.key_columns = parse_key_columns(value)?,
                "truncate" => {
                    s.truncate = match value {
                        "emit" => TruncateAction::Emit,
                        "drop" => TruncateAction::Drop,
                        "error" => TruncateAction::Error,
                        _ => return Err(invalid("truncate", value, "emit, drop or error")),
                    }
                }
                "on_error" => {
                    s.on_error = match value {
                        "emit" => ErrorAction::Emit,
                        "drop" => ErrorAction::Drop,
                        _ => return Err(invalid("on_error", value, "emit or drop")),
                    }
                }
                "format" => {
                    s.format = match value {
                        "auto" => InputFormat::Auto,
                        "envelope" => InputFormat::Envelope,
                        "flattened" => InputFormat::Flattened,
                        _ => return Err(invalid("format", value, "auto, envelope or flattened")),
                    }
                }
                "columns" => {
                    s.columns = match value {
                        "always" => true,
                        "never" => false,
                        _ => return Err(invalid("columns", value, "always or never")),
                    }
                }
                "toast_placeholder" => {
                    if value.is_empty() {
                        return Err(ParamError::Invalid {
                            name: "toast_placeholder",
                            problem: "must not be empty".into(),
                        });
                    }
                    s.toast_placeholder = raw.to_owned();
                }
                other => return Err(ParamError::Unknown(other.to_owned())),
            }
        }
        Ok(s)
    }

    pub fn from_map(params: &BTreeMap<String, String>) -> Result<Settings, ParamError> {
        Settings::from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Whether the include/exclude patterns let this table through.
    pub fn table_selected(&self, qualified: &str, db: Option<&str>) -> bool {
        let included =
            self.include.is_empty() || self.include.iter().any(|p| table_matches(p, qualified, db));
        included && !self.exclude.iter().any(|p| table_matches(p, qualified, db))
    }
}

fn invalid(name: &'static str, value: &str, expected: &str) -> ParamError {
    ParamError::Invalid {
        name,
        problem: format!("`{value}` is not one of {expected}"),
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_operations(value: &str) -> Result<Vec<Op>, ParamError> {
    let mut ops = Vec::new();
    for code in split_list(value) {
        match Op::from_code(&code) {
            Some(Op::Truncate) => {
                return Err(ParamError::Invalid {
                    name: "operations",
                    problem: "truncates are set by the `truncate` parameter, not here".into(),
                })
            }
            Some(op) => ops.push(op),
            None => return Err(invalid("operations", &code, "c, u, d, r, m")),
        }
    }
    if ops.is_empty() {
        return Err(ParamError::Invalid {
            name: "operations",
            problem: "lists no operation".into(),
        });
    }
    Ok(ops)
}

/// `id` | `a,b` | `public.orders:order_id,line; *:id`
fn parse_key_columns(value: &str) -> Result<KeyColumns, ParamError> {
    let mut keys = KeyColumns::default();
    for entry in value.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (pattern, cols) = match entry.split_once(':') {
            Some((pattern, cols)) => (Some(pattern.trim()), cols),
            None => (None, entry),
        };
        let cols = split_list(cols);
        if cols.is_empty() {
            return Err(ParamError::Invalid {
                name: "key_columns",
                problem: format!("`{entry}` names no column"),
            });
        }
        match pattern {
            None | Some("*") => keys.default = Some(cols),
            Some("") => {
                return Err(ParamError::Invalid {
                    name: "key_columns",
                    problem: format!("`{entry}` has an empty table pattern"),
                })
            }
            Some(p) => keys.per_table.push((p.to_owned(), cols)),
        }
    }
    Ok(keys)
}

/// A pattern with two dots matches `db.schema.table`; otherwise `schema.table` (or a bare
/// table name when the event had no schema). `*` and `?` are wildcards.
pub fn table_matches(pattern: &str, qualified: &str, db: Option<&str>) -> bool {
    if pattern.matches('.').count() >= 2 {
        match db {
            Some(db) => glob(pattern, &format!("{db}.{qualified}")),
            None => false,
        }
    } else {
        glob(pattern, qualified)
    }
}

/// Glob match with `*` (any run) and `?` (one character), no backtracking blow-up.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = Settings::from_params([]).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(
            s.operations,
            vec![Op::Create, Op::Update, Op::Delete, Op::Read]
        );
    }

    #[test]
    fn every_parameter_parses() {
        let s = Settings::from_params([
            ("operations", "c, u,d"),
            ("include", "public.*,inventory.orders"),
            ("exclude", "public.audit_*"),
            ("key_columns", "public.lines:order_id,line_no; *:id"),
            ("truncate", "drop"),
            ("on_error", "drop"),
            ("format", "flattened"),
            ("columns", "never"),
            ("toast_placeholder", "__unavailable"),
        ])
        .unwrap();
        assert_eq!(s.operations, vec![Op::Create, Op::Update, Op::Delete]);
        assert_eq!(s.include, vec!["public.*", "inventory.orders"]);
        assert_eq!(s.truncate, TruncateAction::Drop);
        assert_eq!(s.on_error, ErrorAction::Drop);
        assert_eq!(s.format, InputFormat::Flattened);
        assert!(!s.columns);
        assert_eq!(s.toast_placeholder, "__unavailable");
        assert_eq!(
            s.key_columns.for_table("public.lines", None),
            Some(&["order_id".to_owned(), "line_no".to_owned()][..])
        );
        assert_eq!(
            s.key_columns.for_table("public.other", None),
            Some(&["id".to_owned()][..])
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = Settings::from_params([("operation", "c")]).unwrap_err();
        assert!(err.to_string().contains("unknown parameter `operation`"));
        let err = Settings::from_params([("operations", "c,x")]).unwrap_err();
        assert!(err.to_string().contains("`x`"), "{err}");
        let err = Settings::from_params([("operations", "t")]).unwrap_err();
        assert!(err.to_string().contains("truncate"), "{err}");
        let err = Settings::from_params([("operations", " , ")]).unwrap_err();
        assert!(err.to_string().contains("no operation"), "{err}");
        let err = Settings::from_params([("truncate", "maybe")]).unwrap_err();
        assert!(err.to_string().contains("emit, drop or error"), "{err}");
        let err = Settings::from_params([("key_columns", "public.x:")]).unwrap_err();
        assert!(err.to_string().contains("names no column"), "{err}");
        let err = Settings::from_params([("columns", "sometimes")]).unwrap_err();
        assert!(err.to_string().contains("always or never"), "{err}");
    }

    #[test]
    fn table_selection() {
        let s =
            Settings::from_params([("include", "public.*"), ("exclude", "public.audit*")]).unwrap();
        assert!(s.table_selected("public.orders", None));
        assert!(!s.table_selected("public.audit_log", None));
        assert!(!s.table_selected("inventory.orders", None));
        let s = Settings::from_params([("include", "shop.public.orders")]).unwrap();
        assert!(s.table_selected("public.orders", Some("shop")));
        assert!(!s.table_selected("public.orders", Some("other")));
        assert!(!s.table_selected("public.orders", None));
    }

    #[test]
    fn glob_cases() {
        assert!(glob("*", ""));
        assert!(glob("a*b?c", "aXXbYc"));
        assert!(!glob("a*b?c", "aXXbc"));
        assert!(glob("*.*", "public.t"));
        assert!(!glob("public", "public.t"));
        assert!(glob("**a", "bbba"));
    }
}
