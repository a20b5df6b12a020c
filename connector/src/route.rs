//! The route stage: what one output record of the transform stage is (a change, a record
//! the SmartModule refused, something that is not a CDC record) and which Iceberg table a
//! change lands in: an explicit map (`schema.table` -> `namespace.table`) first, else the
//! namespace and name templates (`{db}`, `{schema}`, `{table}`, `{server}`). Pure.

use crate::config::TablesSection;
use crate::dead_letter::DeadLetterReason;
use anyhow::{anyhow, bail, Result};
use debezium_cdc::record::{CdcRecord, ChangeRecord, Op, SourceTable};
use iceberg::TableIdent;
use std::collections::HashMap;

/// Where one record goes.
#[derive(Debug)]
pub enum Routed {
    /// A change of this table.
    Change(TableIdent, Box<ChangeRecord>),
    /// Nothing to write (a logical-decoding message).
    Nothing,
    /// Nowhere: dead-letter it, for this reason.
    DeadLetter(DeadLetterReason, String),
    /// A change no table takes (its source names none, or the map or templates give no
    /// table name): dead-letter it, for this reason.
    Unroutable(Box<ChangeRecord>, String),
}

/// The tables of the sources seen, so that each change is not routed anew (templates filled,
/// names split and checked): a stream carries a few tables, each of them many times. The
/// `tables` section is fixed for a run; past [`Routes::LIMIT`] sources it starts over.
#[derive(Debug, Default)]
pub struct Routes {
    known: HashMap<SourceTable, TableIdent>,
}

impl Routes {
    pub const LIMIT: usize = 4096;

    /// Routes one decoded output record of the transform stage.
    pub fn route_record(
        &mut self,
        tables: &TablesSection,
        record: Result<CdcRecord, String>,
    ) -> Routed {
        let change = match record {
            Err(reason) => return Routed::DeadLetter(DeadLetterReason::Unroutable, reason),
            Ok(CdcRecord::Error(e)) => {
                return Routed::DeadLetter(DeadLetterReason::Refused, e.reason)
            }
            Ok(CdcRecord::Change(c)) => c,
        };
        if change.op == Op::Message {
            return Routed::Nothing;
        }
        match self.route(tables, &change.source) {
            Ok(ident) => Routed::Change(ident, change),
            Err(e) => Routed::Unroutable(change, format!("{e:#}")),
        }
    }

    /// [`route`], remembered.
    pub fn route(&mut self, tables: &TablesSection, source: &SourceTable) -> Result<TableIdent> {
        if let Some(ident) = self.known.get(source) {
            return Ok(ident.clone());
        }
        let ident = route(tables, source)?;
        if self.known.len() >= Self::LIMIT {
            self.known.clear();
        }
        self.known.insert(source.clone(), ident.clone());
        Ok(ident)
    }
}

/// The table of a change of `source`.
pub fn route(tables: &TablesSection, source: &SourceTable) -> Result<TableIdent> {
    let table = source
        .table
        .as_deref()
        .ok_or_else(|| anyhow!("the change names no source table"))?;
    if let Some(target) = tables.map.get(&source.qualified()) {
        let parts: Vec<&str> = target.split('.').collect();
        if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
            bail!("tables.map: `{target}` is not namespace.table");
        }
        return TableIdent::from_strs(parts).map_err(|e| anyhow!("tables.map `{target}`: {e}"));
    }
    let fill = |template: &str| {
        template
            .replace("{db}", source.db.as_deref().unwrap_or("default"))
            .replace("{schema}", source.schema.as_deref().unwrap_or("default"))
            .replace("{server}", source.name.as_deref().unwrap_or("default"))
            .replace("{table}", table)
    };
    let namespace = fill(&tables.namespace);
    let name = fill(&tables.name);
    if namespace.is_empty() || name.is_empty() {
        bail!(
            "tables: the templates give an empty namespace or name for `{}`",
            source.qualified()
        );
    }
    TableIdent::from_strs(namespace.split('.').chain([name.as_str()]))
        .map_err(|e| anyhow!("table name for `{}`: {e}", source.qualified()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(schema: &str, table: &str) -> SourceTable {
        SourceTable {
            db: Some("shop".into()),
            schema: Some(schema.into()),
            table: Some(table.into()),
            ..SourceTable::default()
        }
    }

    #[test]
    fn templates_and_map() {
        let mut t = TablesSection::default();
        assert_eq!(
            route(&t, &src("public", "orders")).unwrap().to_string(),
            "public.orders"
        );
        t.namespace = "lake.{db}".into();
        t.name = "{schema}_{table}".into();
        assert_eq!(
            route(&t, &src("public", "orders")).unwrap().to_string(),
            "lake.shop.public_orders"
        );
        t.map
            .insert("public.orders".into(), "sales.orders_v2".into());
        assert_eq!(
            route(&t, &src("public", "orders")).unwrap().to_string(),
            "sales.orders_v2"
        );
        assert!(route(&t, &SourceTable::default()).is_err());
        t.map.insert("public.bad".into(), "nodot".into());
        assert!(route(&t, &src("public", "bad")).is_err());
    }

    #[test]
    fn records_that_go_nowhere() {
        let t = TablesSection::default();
        let mut routes = Routes::default();
        let refused = routes.route_record(&t, Err("not a CDC record: eof".into()));
        assert!(
            matches!(refused, Routed::DeadLetter(DeadLetterReason::Unroutable, r) if r.contains("eof"))
        );
        let error: CdcRecord = serde_json::from_value(serde_json::json!({
            "v": 1, "kind": "error", "reason": "bad decimal", "value": {"encoding": "utf8", "data": "{}"}
        }))
        .unwrap();
        assert!(
            matches!(routes.route_record(&t, Ok(error)), Routed::DeadLetter(DeadLetterReason::Refused, r) if r == "bad decimal")
        );
        let change = |op: &str, table: Option<&str>| -> CdcRecord {
            serde_json::from_value(serde_json::json!({
                "v": 1, "kind": "change", "op": op, "key": {"id": 1},
                "source": {"schema": "public", "table": table},
                "position": {}
            }))
            .unwrap()
        };
        assert!(matches!(
            routes.route_record(&t, Ok(change("m", Some("orders")))),
            Routed::Nothing
        ));
        match routes.route_record(&t, Ok(change("c", Some("orders")))) {
            Routed::Change(ident, c) => {
                assert_eq!(ident.to_string(), "public.orders");
                assert_eq!(c.op, Op::Create);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            routes.route_record(&t, Ok(change("c", None))),
            Routed::Unroutable(c, r) if c.op == Op::Create && r.contains("no source table")
        ));
    }

    #[test]
    fn a_source_seen_before_goes_where_it_went_and_the_memory_is_bounded() {
        let mut t = TablesSection {
            namespace: "lake.{db}".into(),
            name: "{schema}_{table}".into(),
            ..TablesSection::default()
        };
        t.map
            .insert("public.orders".into(), "sales.orders_v2".into());
        let mut routes = Routes::default();
        let sources: Vec<SourceTable> = (0..Routes::LIMIT + 10)
            .map(|n| {
                src(
                    if n % 2 == 0 { "public" } else { "audit" },
                    &format!("t{n}"),
                )
            })
            .chain([src("public", "orders"), SourceTable::default()])
            .collect();
        for _ in 0..2 {
            for source in &sources {
                let remembered = routes.route(&t, source).map(|i| i.to_string());
                let fresh = route(&t, source).map(|i| i.to_string());
                assert_eq!(remembered.ok(), fresh.ok(), "{source:?}");
                assert!(routes.known.len() <= Routes::LIMIT);
            }
        }
        assert_eq!(
            routes
                .route(&t, &src("public", "orders"))
                .unwrap()
                .to_string(),
            "sales.orders_v2"
        );
    }
}
