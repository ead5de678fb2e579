//! `spin:postgres/postgres@4.0.0` over tokio-postgres and deadpool-postgres,
//! with Spin 4.0.2's value mapping, error shapes, allow-list check and pool
//! sizes (SPIN.md §3). Where Spin has a trap this host fails loudly instead:
//! a query returning zero rows (Spin 4.0.0 to 4.0.2 hang, spin#3671) and a
//! `timestamptz` column (Spin cannot decode it) both come back as
//! `query-failed` errors whose text names the Spin behaviour. With
//! `strict_single_jsonb`, any `query` that does not return exactly one row
//! holding one `jsonb` value fails too (Outpost's house rule).

// The WIT error carries a whole database error record, as in spin-sdk.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::error::Error as StdError;
use std::str::FromStr;
use std::sync::Mutex;

use bytes::{BufMut, BytesMut};
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use postgres_protocol::types::{self as protocol, RangeBound};
use rust_decimal::Decimal;
use tokio_postgres::Row;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};
use wasmtime::component::Resource;

use crate::bindings::spin::postgres4_0_0::postgres::{
    self as pg, Column, DbDataType, DbError, DbValue, Error, ParameterValue, QueryError,
    RangeBoundKind, RowSet,
};
use crate::pg_tls::{self, RootCertificate};
use crate::runtime::HostState;

/// Spin's limit of open connections per instance.
const MAX_CONNECTIONS_PER_INSTANCE: usize = 1024;
/// Spin's pool size per connection string.
const POOL_MAX_SIZE: usize = 64;
/// Spin's cache capacity: pools per component.
const MAX_POOLS: usize = 16;

/// The text of the loud zero-row failure.
pub const ZERO_ROW_MESSAGE: &str = "outpost-host: this query returned zero rows. Spin 4.0.0 to 4.0.2 never return from a synchronous `query` that yields no rows (spinframework/spin#3671: the request hangs forever), so this host fails instead. Make the statement return exactly one row (a function returning jsonb, or `select coalesce(jsonb_agg(...), '[]'::jsonb)`), or use `execute` for statements that return nothing";

/// The note appended to the (Spin-shaped) timestamptz decode failure.
pub const TIMESTAMPTZ_NOTE: &str = "outpost-host: Spin 4.0.x reports timestamptz columns as `datetime` but decodes them as chrono NaiveDateTime, which tokio-postgres refuses for timestamptz, so every row with a timestamptz column fails on real Spin. Cast in SQL instead: `col AT TIME ZONE 'UTC'`, `extract(epoch from col)::int8`, or return jsonb";

/// Most statements kept prepared per pooled connection; past this the
/// connection's cache is emptied and starts again.
const STATEMENT_CACHE_MAX: usize = 256;

/// Sent on every checkout before the component's first statement: what
/// Spin's pool sends (deadpool's `RecyclingMethod::Clean`), preceded by a
/// `ROLLBACK` (a transaction left open or failed by the previous request
/// ends; Spin's reset runs inside it), and followed by a count of the
/// prepared statements made with SQL `PREPARE` (the host's own statement
/// cache uses protocol-level statements, which this leaves alone).
const CHECKOUT_RESET: &str = "ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
     UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES; \
     SELECT count(*) FROM pg_prepared_statements WHERE from_sql";

/// Drops the statements a previous request made with SQL `PREPARE` (run
/// only when the reset counted some).
const DEALLOCATE_SQL_PREPARED: &str = "DO $$DECLARE n text; BEGIN \
     FOR n IN SELECT name FROM pg_prepared_statements WHERE from_sql LOOP \
     EXECUTE format('DEALLOCATE %I', n); END LOOP; END$$";

/// Returns a pooled connection to the state a fresh session has, as far as
/// any statement can see: no transaction, cursor, setting, role, LISTEN,
/// advisory lock, temp table, sequence state or SQL-prepared statement of
/// the previous request is left (the test `host_speed` checks each).
async fn reset_session(client: &deadpool_postgres::Object) -> Result<(), tokio_postgres::Error> {
    let messages = client.simple_query(CHECKOUT_RESET).await?;
    let prepared = messages
        .iter()
        .rev()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .unwrap_or("0");
    if prepared != "0" {
        client.batch_execute(DEALLOCATE_SQL_PREPARED).await?;
    }
    if client.statement_cache.size() > STATEMENT_CACHE_MAX {
        client.statement_cache.clear();
    }
    Ok(())
}

/// Whether an error means the cached statement is gone or stale (a
/// component ran `DEALLOCATE ALL` or `DISCARD ALL`, or the schema under it
/// changed its result type): the host then prepares it again once.
fn stale_statement(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::INVALID_SQL_STATEMENT_NAME || *c == SqlState::FEATURE_NOT_SUPPORTED
    })
}

/// Runs `statement` through the connection's statement cache: prepared
/// once per pooled connection (keyed by its text), then only bound and
/// executed. Spin prepares an unnamed statement on every call; the
/// parameter types, results and errors a component sees are the same.
async fn cached_query(
    client: &deadpool_postgres::Object,
    statement: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let prepared = client.prepare_cached(statement).await?;
    match client.query(&prepared, params).await {
        Err(e) if stale_statement(&e) => {
            client.statement_cache.clear();
            let prepared = client.prepare_cached(statement).await?;
            client.query(&prepared, params).await
        }
        other => other,
    }
}

/// [`cached_query`] for `execute`.
async fn cached_execute(
    client: &deadpool_postgres::Object,
    statement: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let prepared = client.prepare_cached(statement).await?;
    match client.execute(&prepared, params).await {
        Err(e) if stale_statement(&e) => {
            client.statement_cache.clear();
            let prepared = client.prepare_cached(statement).await?;
            client.execute(&prepared, params).await
        }
        other => other,
    }
}

/// The resource behind `spin:postgres/postgres.connection`.
pub struct PgConnection {
    client: deadpool_postgres::Object,
}

/// One component's pools, keyed by connection string.
#[derive(Default)]
pub struct PgPools {
    pools: Mutex<HashMap<String, Pool>>,
    root: Option<RootCertificate>,
}

impl PgPools {
    /// Pools whose TLS connections also trust `root` (see [`crate::pg_tls`]).
    pub fn new(root: Option<RootCertificate>) -> Self {
        Self {
            pools: Mutex::default(),
            root,
        }
    }

    fn get_or_create(&self, address: &str, config: tokio_postgres::Config) -> Result<Pool, String> {
        let mut pools = self
            .pools
            .lock()
            .map_err(|_| "postgres pool table poisoned".to_string())?;
        if let Some(pool) = pools.get(address) {
            return Ok(pool.clone());
        }
        if pools.len() >= MAX_POOLS
            && let Some(evict) = pools.keys().next().cloned()
        {
            pools.remove(&evict);
        }
        // The pool only checks that a connection is open; the session is
        // reset by `reset_session` on checkout, as Spin's Clean does, plus
        // what Clean misses.
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        // As Spin: plain TCP only when the URL says so; otherwise TLS
        // (tokio-postgres's `prefer` falls back to plain TCP only when the
        // server says it has no TLS).
        let manager = if config.get_ssl_mode() == SslMode::Disable {
            Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        } else {
            let tls = pg_tls::connector(self.root.as_ref()).map_err(|e| format!("{e:?}"))?;
            Manager::from_config(config, tls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_MAX_SIZE)
            .build()
            .map_err(|e| format!("{e:?}"))?;
        pools.insert(address.to_string(), pool.clone());
        Ok(pool)
    }

    /// Closes every pool (their idle connections go away).
    pub fn close(&self) {
        if let Ok(mut pools) = self.pools.lock() {
            for (_, pool) in pools.drain() {
                pool.close();
            }
        }
    }
}

impl pg::Host for HostState {}

impl pg::HostConnection for HostState {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, Error>> {
        let config = match tokio_postgres::Config::from_str(&address) {
            Ok(c) => c,
            Err(e) => return Ok(Err(Error::ConnectionFailed(e.to_string()))),
        };
        if let Err(e) = self.check_allowed(&config) {
            return Ok(Err(e));
        }
        if self.pg_open >= MAX_CONNECTIONS_PER_INSTANCE {
            return Ok(Err(Error::ConnectionFailed("too many connections".into())));
        }
        let pool = match self.component.pg_pools.get_or_create(&address, config) {
            Ok(p) => p,
            Err(e) => return Ok(Err(Error::ConnectionFailed(e))),
        };
        let client = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                let e = anyhow::Error::new(e);
                return Ok(Err(Error::ConnectionFailed(format!("{e:?}"))));
            }
        };
        if let Err(e) = reset_session(&client).await {
            // A connection that cannot be reset is not handed out again.
            drop(deadpool_postgres::Object::take(client));
            let e = anyhow::Error::new(e);
            return Ok(Err(Error::ConnectionFailed(format!("{e:?}"))));
        }
        self.pg_open += 1;
        Ok(Ok(self.table.push(PgConnection { client })?))
    }

    async fn query(
        &mut self,
        conn: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let params = match convert_params(params) {
            Ok(p) => p,
            Err(e) => return Ok(Err(Error::BadParameter(e))),
        };
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let strict = self.strict_single_jsonb;
        let client = &self.table.get(&conn)?.client;
        let rows = match cached_query(client, &statement, &refs).await {
            Ok(rows) => rows,
            Err(e) => return Ok(Err(query_failed(&e))),
        };
        Ok(row_set(&statement, &rows, strict))
    }

    async fn execute(
        &mut self,
        conn: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let params = match convert_params(params) {
            Ok(p) => p,
            Err(e) => return Ok(Err(Error::ValueConversionFailed(e))),
        };
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let client = &self.table.get(&conn)?.client;
        match cached_execute(client, &statement, &refs).await {
            Ok(n) => Ok(Ok(n)),
            Err(e) => Ok(Err(query_failed(&e))),
        }
    }

    async fn drop(&mut self, conn: Resource<PgConnection>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        self.pg_open = self.pg_open.saturating_sub(1);
        Ok(())
    }
}

impl HostState {
    /// Spin checks every host of the connection string with scheme `postgres`.
    fn check_allowed(&self, config: &tokio_postgres::Config) -> Result<(), Error> {
        let ports = config.get_ports();
        for (i, host) in config.get_hosts().iter().enumerate() {
            match host {
                tokio_postgres::config::Host::Tcp(h) => {
                    let port = ports.get(i).or_else(|| ports.first()).copied();
                    let allowed = self.component.allowed_hosts.allows("postgres", h, port);
                    if !allowed {
                        let address = match port {
                            Some(p) => format!("postgres://{h}:{p}"),
                            None => format!("postgres://{h}"),
                        };
                        eprintln!(
                            "outpost-host: component {:?}: Outbound network destination not allowed: {address}",
                            self.component.id
                        );
                        return Err(Error::ConnectionFailed(format!(
                            "address {address} is not permitted"
                        )));
                    }
                }
                tokio_postgres::config::Host::Unix(_) => {
                    return Err(Error::ConnectionFailed(
                        "Unix sockets are not supported on WebAssembly".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn query_failed(e: &tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => {
            let mut extras = Vec::new();
            let mut push = |k: &str, v: Option<&str>| {
                if let Some(v) = v {
                    extras.push((k.to_string(), v.to_string()));
                }
            };
            push("column", db.column());
            push("constraint", db.constraint());
            push("routine", db.routine());
            push("hint", db.hint());
            push("table", db.table());
            push("datatype", db.datatype());
            push("schema", db.schema());
            push("file", db.file());
            let line = db.line().map(|l| l.to_string());
            push("line", line.as_deref());
            push("where_", db.where_());
            Error::QueryFailed(QueryError::DbError(DbError {
                as_text: format!("{e:?}"),
                severity: db.severity().to_string(),
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                extras,
            }))
        }
        None => Error::QueryFailed(QueryError::Text(format!("{e:?}"))),
    }
}

/// Builds the row set, or the loud errors for Spin's traps and the house rule.
fn row_set(statement: &str, rows: &[Row], strict: bool) -> Result<RowSet, Error> {
    let Some(first) = rows.first() else {
        return Err(Error::QueryFailed(QueryError::Text(format!(
            "{ZERO_ROW_MESSAGE}. Statement: {statement}"
        ))));
    };
    let columns: Vec<Column> = first
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_string(),
            data_type: data_type(c.type_()),
        })
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, col) in row.columns().iter().enumerate() {
            match value(row, i, col.type_()) {
                Ok(v) => values.push(v),
                Err(message) => {
                    let mut text = format!("Error::QueryFailed(QueryError::Text({message:?}))");
                    if *col.type_() == Type::TIMESTAMPTZ {
                        text.push_str(&format!(" -- {TIMESTAMPTZ_NOTE} (column {:?})", col.name()));
                    }
                    return Err(Error::QueryFailed(QueryError::Text(text)));
                }
            }
        }
        out.push(values);
    }
    if strict {
        let ok = out.len() == 1
            && columns.len() == 1
            && matches!(columns[0].data_type, DbDataType::Jsonb);
        if !ok {
            let types: Vec<String> = first
                .columns()
                .iter()
                .map(|c| format!("{} {}", c.name(), c.type_().name()))
                .collect();
            return Err(Error::QueryFailed(QueryError::Text(format!(
                "outpost-host strict_single_jsonb: this query returned {} row(s) of {} column(s) [{}]; Outpost's house rule is that every statement a component sends with `query` returns exactly one row holding one jsonb value (wrap sets in `select coalesce(jsonb_agg(...), '[]'::jsonb)`, or use `execute` for writes). Statement: {statement}",
                out.len(),
                columns.len(),
                types.join(", ")
            ))));
        }
    }
    Ok(RowSet { columns, rows: out })
}

fn data_type(ty: &Type) -> DbDataType {
    match *ty {
        Type::BOOL => DbDataType::Boolean,
        Type::CHAR => DbDataType::Int8,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => DbDataType::Str,
        Type::BYTEA => DbDataType::Binary,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::UUID => DbDataType::Uuid,
        Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_RANGE => DbDataType::RangeInt32,
        Type::INT8_RANGE => DbDataType::RangeInt64,
        Type::NUM_RANGE => DbDataType::RangeDecimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        _ => DbDataType::Other(ty.name().to_string()),
    }
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<Option<T>, String> {
    row.try_get::<_, Option<T>>(i).map_err(|e| e.to_string())
}

fn value(row: &Row, i: usize, ty: &Type) -> Result<DbValue, String> {
    fn or_null<T>(v: Option<T>, f: impl FnOnce(T) -> DbValue) -> DbValue {
        v.map(f).unwrap_or(DbValue::DbNull)
    }
    Ok(match *ty {
        Type::BOOL => or_null(get::<bool>(row, i)?, DbValue::Boolean),
        Type::CHAR => or_null(get::<i8>(row, i)?, DbValue::Int8),
        Type::INT2 => or_null(get::<i16>(row, i)?, DbValue::Int16),
        Type::INT4 => or_null(get::<i32>(row, i)?, DbValue::Int32),
        Type::INT8 => or_null(get::<i64>(row, i)?, DbValue::Int64),
        Type::FLOAT4 => or_null(get::<f32>(row, i)?, DbValue::Floating32),
        Type::FLOAT8 => or_null(get::<f64>(row, i)?, DbValue::Floating64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => or_null(get::<String>(row, i)?, DbValue::Str),
        Type::BYTEA => or_null(get::<Vec<u8>>(row, i)?, DbValue::Binary),
        Type::DATE => or_null(get::<NaiveDate>(row, i)?, |d| {
            DbValue::Date((d.year(), d.month() as u8, d.day() as u8))
        }),
        Type::TIME => or_null(get::<NaiveTime>(row, i)?, |t| {
            DbValue::Time((
                t.hour() as u8,
                t.minute() as u8,
                t.second() as u8,
                t.nanosecond(),
            ))
        }),
        // Spin decodes both timestamp types as NaiveDateTime; for timestamptz
        // that fails, exactly as on Spin (the caller adds the loud note).
        Type::TIMESTAMP | Type::TIMESTAMPTZ => or_null(get::<NaiveDateTime>(row, i)?, |dt| {
            DbValue::Datetime((
                dt.year(),
                dt.month() as u8,
                dt.day() as u8,
                dt.hour() as u8,
                dt.minute() as u8,
                dt.second() as u8,
                dt.nanosecond(),
            ))
        }),
        Type::UUID => or_null(get::<uuid::Uuid>(row, i)?, |u| DbValue::Uuid(u.to_string())),
        Type::JSONB => match get::<serde_json::Value>(row, i)? {
            Some(v) => DbValue::Jsonb(serde_json::to_vec(&v).map_err(|e| e.to_string())?),
            None => DbValue::DbNull,
        },
        Type::NUMERIC => or_null(get::<Decimal>(row, i)?, |d| DbValue::Decimal(d.to_string())),
        Type::INT4_RANGE => or_null(get::<PgRange<i32>>(row, i)?, |r| {
            DbValue::RangeInt32((r.0, r.1))
        }),
        Type::INT8_RANGE => or_null(get::<PgRange<i64>>(row, i)?, |r| {
            DbValue::RangeInt64((r.0, r.1))
        }),
        Type::NUM_RANGE => or_null(get::<PgRange<Decimal>>(row, i)?, |r| {
            let s = |b: Option<(Decimal, RangeBoundKind)>| b.map(|(d, k)| (d.to_string(), k));
            DbValue::RangeDecimal((s(r.0), s(r.1)))
        }),
        Type::INT4_ARRAY => or_null(get::<Vec<Option<i32>>>(row, i)?, DbValue::ArrayInt32),
        Type::INT8_ARRAY => or_null(get::<Vec<Option<i64>>>(row, i)?, DbValue::ArrayInt64),
        Type::NUMERIC_ARRAY => or_null(get::<Vec<Option<Decimal>>>(row, i)?, |v| {
            DbValue::ArrayDecimal(v.into_iter().map(|d| d.map(|d| d.to_string())).collect())
        }),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => {
            or_null(get::<Vec<Option<String>>>(row, i)?, DbValue::ArrayStr)
        }
        Type::INTERVAL => or_null(get::<IntervalValue>(row, i)?, |v| {
            DbValue::Interval(pg::Interval {
                micros: v.micros,
                days: v.days,
                months: v.months,
            })
        }),
        _ => or_null(get::<Raw>(row, i)?, |r| DbValue::Unsupported(r.0)),
    })
}

type Param = Box<dyn ToSql + Send + Sync>;

fn convert_params(params: Vec<ParameterValue>) -> Result<Vec<Param>, String> {
    params.into_iter().map(convert_param).collect()
}

fn convert_param(p: ParameterValue) -> Result<Param, String> {
    Ok(match p {
        ParameterValue::Boolean(v) => Box::new(v),
        ParameterValue::Int8(v) => Box::new(v),
        ParameterValue::Int16(v) => Box::new(v),
        ParameterValue::Int32(v) => Box::new(v),
        ParameterValue::Int64(v) => Box::new(v),
        ParameterValue::Floating32(v) => Box::new(v),
        ParameterValue::Floating64(v) => Box::new(v),
        ParameterValue::Str(v) => Box::new(v),
        ParameterValue::Binary(v) => Box::new(v),
        ParameterValue::Date((y, m, d)) => Box::new(
            NaiveDate::from_ymd_opt(y, m.into(), d.into())
                .ok_or_else(|| "invalid date value".to_string())?,
        ),
        ParameterValue::Time((h, m, s, ns)) => Box::new(
            NaiveTime::from_hms_nano_opt(h.into(), m.into(), s.into(), ns)
                .ok_or_else(|| "invalid time value".to_string())?,
        ),
        ParameterValue::Datetime((y, mo, d, h, mi, s, ns)) => {
            let date = NaiveDate::from_ymd_opt(y, mo.into(), d.into())
                .ok_or_else(|| "invalid date value".to_string())?;
            let time = NaiveTime::from_hms_nano_opt(h.into(), mi.into(), s.into(), ns)
                .ok_or_else(|| "invalid time value".to_string())?;
            Box::new(NaiveDateTime::new(date, time))
        }
        ParameterValue::Timestamp(secs) => Box::new(
            chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
                .ok_or_else(|| "invalid epoch timestamp".to_string())?,
        ),
        ParameterValue::Uuid(s) => Box::new(uuid::Uuid::parse_str(&s).map_err(|e| e.to_string())?),
        ParameterValue::Jsonb(bytes) => Box::new(
            serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| e.to_string())?,
        ),
        ParameterValue::Decimal(s) => Box::new(decimal(&s)?),
        ParameterValue::RangeInt32((lo, hi)) => Box::new(RangeParam::<i32> {
            lower: lo,
            upper: hi,
        }),
        ParameterValue::RangeInt64((lo, hi)) => Box::new(RangeParam::<i64> {
            lower: lo,
            upper: hi,
        }),
        ParameterValue::RangeDecimal((lo, hi)) => {
            let conv = |b: Option<(String, RangeBoundKind)>| -> Result<_, String> {
                b.map(|(s, k)| decimal(&s).map(|d| (d, k))).transpose()
            };
            Box::new(RangeParam::<Decimal> {
                lower: conv(lo)?,
                upper: conv(hi)?,
            })
        }
        ParameterValue::ArrayInt32(v) => Box::new(v),
        ParameterValue::ArrayInt64(v) => Box::new(v),
        ParameterValue::ArrayDecimal(v) => Box::new(
            v.into_iter()
                .map(|d| d.map(|d| decimal(&d)).transpose())
                .collect::<Result<Vec<_>, _>>()?,
        ),
        ParameterValue::ArrayStr(v) => Box::new(v),
        ParameterValue::Interval(i) => Box::new(IntervalValue {
            micros: i.micros,
            days: i.days,
            months: i.months,
        }),
        ParameterValue::DbNull => Box::new(Null),
    })
}

fn decimal(s: &str) -> Result<Decimal, String> {
    Decimal::from_str_exact(s).map_err(|e| format!("invalid decimal {s:?}: {e}"))
}

type BoxError = Box<dyn StdError + Sync + Send>;

/// An untyped NULL, accepted for any parameter type.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(&self, _: &Type, _: &mut BytesMut) -> Result<IsNull, BoxError> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

/// Any value's raw wire bytes (Spin's `unsupported`).
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

#[derive(Debug)]
struct IntervalValue {
    micros: i64,
    days: i32,
    months: i32,
}

impl<'a> FromSql<'a> for IntervalValue {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        if raw.len() != 16 {
            return Err("invalid interval".into());
        }
        let micros = i64::from_be_bytes(raw[0..8].try_into()?);
        let days = i32::from_be_bytes(raw[8..12].try_into()?);
        let months = i32::from_be_bytes(raw[12..16].try_into()?);
        Ok(Self {
            micros,
            days,
            months,
        })
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

impl ToSql for IntervalValue {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_i64(self.micros);
        out.put_i32(self.days);
        out.put_i32(self.months);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    to_sql_checked!();
}

/// A range read from Postgres: `(lower, upper)`, each optional (unbounded).
struct PgRange<T>(Option<(T, RangeBoundKind)>, Option<(T, RangeBoundKind)>);

impl<'a, T: FromSql<'a>> FromSql<'a> for PgRange<T> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let Kind::Range(inner) = ty.kind() else {
            return Err("not a range type".into());
        };
        fn bound<'a, T: FromSql<'a>>(
            b: RangeBound<Option<&'a [u8]>>,
            inner: &Type,
        ) -> Result<Option<(T, RangeBoundKind)>, BoxError> {
            Ok(match b {
                RangeBound::Inclusive(Some(v)) => {
                    Some((T::from_sql(inner, v)?, RangeBoundKind::Inclusive))
                }
                RangeBound::Exclusive(Some(v)) => {
                    Some((T::from_sql(inner, v)?, RangeBoundKind::Exclusive))
                }
                RangeBound::Inclusive(None) | RangeBound::Exclusive(None) => {
                    return Err("null range bound".into());
                }
                RangeBound::Unbounded => None,
            })
        }
        match protocol::range_from_sql(raw)? {
            protocol::Range::Empty => Ok(PgRange(None, None)),
            protocol::Range::Nonempty(lo, hi) => Ok(PgRange(bound(lo, inner)?, bound(hi, inner)?)),
        }
    }
    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Range(inner) if T::accepts(inner))
    }
}

#[derive(Debug)]
struct RangeParam<T> {
    lower: Option<(T, RangeBoundKind)>,
    upper: Option<(T, RangeBoundKind)>,
}

impl<T: ToSql + Sync + std::fmt::Debug> ToSql for RangeParam<T> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let Kind::Range(inner) = ty.kind() else {
            return Err("not a range type".into());
        };
        let write = |b: &Option<(T, RangeBoundKind)>,
                     buf: &mut BytesMut|
         -> Result<RangeBound<postgres_protocol::IsNull>, BoxError> {
            Ok(match b {
                None => RangeBound::Unbounded,
                Some((v, kind)) => {
                    let is_null = match v.to_sql(inner, buf)? {
                        IsNull::Yes => postgres_protocol::IsNull::Yes,
                        IsNull::No => postgres_protocol::IsNull::No,
                    };
                    match kind {
                        RangeBoundKind::Inclusive => RangeBound::Inclusive(is_null),
                        RangeBoundKind::Exclusive => RangeBound::Exclusive(is_null),
                    }
                }
            })
        };
        protocol::range_to_sql(
            |buf| write(&self.lower, buf),
            |buf| write(&self.upper, buf),
            out,
        )?;
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Range(inner) if T::accepts(inner))
    }
    to_sql_checked!();
}
