//! `debezium-cdc`: a Fluvio SmartModule (filter-map) that turns Debezium PostgreSQL change
//! events into one normalized CDC record (see [`record`]) and filters them by operation and
//! table.
//!
//! It never returns `Err` for a record: Fluvio would retry the same offset forever and stall
//! every consumer. A bad record becomes an error record (`"kind":"error"`, with the reason and
//! the original bytes) for the sink's dead-letter destination, or is dropped and counted,
//! per the `on_error` parameter.

pub mod converter;
pub mod debezium;
pub mod logical;
pub mod params;
pub mod record;
pub mod schema;

use converter::Schemas;
use debezium::{parse, Parsed};
use params::{ErrorAction, Settings};
use record::{CdcRecord, ErrorRecord, Original, CONTRACT_VERSION};
use std::collections::BTreeMap;

/// The SmartModule's state: its settings and what it dropped since its last output.
#[derive(Debug, Default)]
pub struct Transformer {
    settings: Settings,
    schemas: Schemas,
    dropped: BTreeMap<String, u64>,
}

impl Transformer {
    pub fn new(settings: Settings) -> Transformer {
        Transformer {
            settings,
            schemas: Schemas::default(),
            dropped: BTreeMap::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// One input record in, at most one output record out.
    pub fn process(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        offset: Option<i64>,
    ) -> Option<CdcRecord> {
        match parse(&self.settings, &mut self.schemas, key, value, offset) {
            Ok(Parsed::Change(mut change)) => {
                change.dropped = std::mem::take(&mut self.dropped);
                Some(CdcRecord::Change(change))
            }
            Ok(Parsed::Skip(skip)) => {
                self.count(skip.label());
                None
            }
            Err(bad) => match self.settings.on_error {
                ErrorAction::Drop => {
                    self.count("error");
                    None
                }
                ErrorAction::Emit => Some(CdcRecord::Error(ErrorRecord {
                    v: CONTRACT_VERSION,
                    reason: bad.to_string(),
                    offset,
                    key: key.map(Original::from_bytes),
                    value: Original::from_bytes(value),
                    dropped: std::mem::take(&mut self.dropped),
                })),
            },
        }
    }

    /// [`Transformer::process`], serialized as the JSON the SmartModule emits.
    pub fn process_to_json(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        offset: Option<i64>,
    ) -> Option<Vec<u8>> {
        self.process(key, value, offset)
            .map(|record| to_json(&record))
    }

    fn count(&mut self, label: &str) {
        *self.dropped.entry(label.to_owned()).or_default() += 1;
    }
}

/// Serializes a record. Our records hold only string-keyed maps, so this cannot fail; if it
/// ever did, the output is still a well-formed error record.
pub fn to_json(record: &CdcRecord) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_else(|e| {
        let reason = serde_json::Value::String(format!("could not serialize the record: {e}"));
        format!(r#"{{"kind":"error","v":{CONTRACT_VERSION},"reason":{reason},"value":{{"encoding":"utf8","data":""}}}}"#)
            .into_bytes()
    })
}

/// The Fluvio entry points. `init` reads the parameters (a wrong one refuses the deploy);
/// `filter_map` runs [`Transformer::process`] on each record.
mod smartmodule_entry {
    use super::{Settings, Transformer};
    use fluvio_smartmodule::dataplane::core::{Decoder, Encoder};
    use fluvio_smartmodule::dataplane::smartmodule::SmartModuleExtraParams;
    use fluvio_smartmodule::{eyre, smartmodule, RecordData, Result, SmartModuleRecord};
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    static TRANSFORMER: Mutex<Option<Transformer>> = Mutex::new(None);

    /// `SmartModuleExtraParams` offers only `get`; its wire form (at version 0) is the plain
    /// map, which lets us see every name and refuse unknown ones.
    fn all_params(params: &SmartModuleExtraParams) -> Result<BTreeMap<String, String>> {
        let mut bytes = Vec::new();
        params.encode(&mut bytes, 0)?;
        let mut map = BTreeMap::new();
        map.decode(&mut std::io::Cursor::new(bytes), 0)?;
        Ok(map)
    }

    #[smartmodule(init)]
    fn init(params: SmartModuleExtraParams) -> Result<()> {
        let settings = Settings::from_map(&all_params(&params)?).map_err(|e| eyre!("{e}"))?;
        let mut slot = TRANSFORMER
            .lock()
            .map_err(|_| eyre!("state lock poisoned"))?;
        *slot = Some(Transformer::new(settings));
        Ok(())
    }

    #[smartmodule(filter_map)]
    fn filter_map(record: &SmartModuleRecord) -> Result<Option<(Option<RecordData>, RecordData)>> {
        // A poisoned lock only means an earlier call panicked; the state is still usable.
        let mut slot = TRANSFORMER.lock().unwrap_or_else(|p| p.into_inner());
        let transformer = slot.get_or_insert_with(Transformer::default);
        let key = record.key().map(|k| k.as_ref());
        let out = transformer.process_to_json(key, record.value.as_ref(), Some(record.offset()));
        Ok(out.map(|json| (record.key().cloned(), RecordData::from(json))))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn params_round_trip_through_the_wire_form() {
            let mut map = BTreeMap::new();
            map.insert("operations".to_owned(), "c,u".to_owned());
            map.insert("bogus".to_owned(), "1".to_owned());
            let params = SmartModuleExtraParams::from(map.clone());
            assert_eq!(all_params(&params).unwrap(), map);
        }
    }
}
