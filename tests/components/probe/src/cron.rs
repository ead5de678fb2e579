//! The cron export (world `fermyon:spin-cron@2.0.0/spin-cron`): writes a
//! marker row into `probe_cron_marks` (a table the test creates), or fails
//! or traps when the variable `cron_mode` says so.

use spin_sdk::pg4::{Connection, ParameterValue};

wit_bindgen::generate!({
    world: "spin-cron",
    path: "../../../wit/spin-cron.wit",
});

struct Probe;

impl Guest for Probe {
    fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
        let mode = spin_sdk::variables::get("cron_mode").unwrap_or_else(|_| "ok".into());
        match mode.as_str() {
            "fail" => return Err(Error::Other("the probe was asked to fail".into())),
            "trap" => panic!("the probe cron was asked to trap"),
            _ => {}
        }
        let url = spin_sdk::variables::get("database_url")
            .map_err(|e| Error::Other(format!("database_url: {e:?}")))?;
        let conn = Connection::open(&url).map_err(|e| Error::Other(format!("{e:?}")))?;
        let timestamp = i64::try_from(metadata.timestamp).unwrap_or(i64::MAX);
        conn.execute(
            "insert into probe_cron_marks (fired_at, mark) values ($1::int8, jsonb_build_object('component', 'probe', 'at', $1::int8))",
            &[ParameterValue::Int64(timestamp)],
        )
        .map_err(|e| Error::Other(format!("{e:?}")))?;
        Ok(())
    }
}

export!(Probe);
