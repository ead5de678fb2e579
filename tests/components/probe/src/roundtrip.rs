//! `/probe/pg-roundtrip`: binds one parameter of every value type Outpost's
//! schema uses, reads it back through `spin:postgres@4.0.0`, and compares
//! both the value and the reported column type.

use serde_json::{Value, json};
use spin_sdk::http::Response;
use spin_sdk::pg4::{Connection, ParameterValue as P};

use crate::{json_response, plain, show};

struct Case {
    name: &'static str,
    sql: &'static str,
    params: Vec<P>,
    want_type: &'static str,
    want: &'static str,
}

fn case(
    name: &'static str,
    sql: &'static str,
    params: Vec<P>,
    want_type: &'static str,
    want: &'static str,
) -> Case {
    Case {
        name,
        sql,
        params,
        want_type,
        want,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "uuid",
            "select $1::uuid as v",
            vec![P::Uuid("6F1C2A9E-8B7D-4C3E-9A1B-2C3D4E5F6A7B".into())],
            "Uuid",
            r#"Uuid("6f1c2a9e-8b7d-4c3e-9a1b-2c3d4e5f6a7b")"#,
        ),
        case(
            "jsonb",
            "select $1::jsonb as v",
            vec![P::Jsonb(br#"{"a": 1, "b": [true, null, "x"]}"#.to_vec())],
            "Jsonb",
            r#"Jsonb({"a":1,"b":[true,null,"x"]})"#,
        ),
        case(
            "text",
            "select $1::text as v",
            vec![P::Str("héllo ✓".into())],
            "Str",
            r#"Str("héllo ✓")"#,
        ),
        case(
            "int2",
            "select $1::int2 as v",
            vec![P::Int16(-12345)],
            "Int16",
            "Int16(-12345)",
        ),
        case(
            "int4",
            "select $1::int4 as v",
            vec![P::Int32(2147483647)],
            "Int32",
            "Int32(2147483647)",
        ),
        case(
            "int8",
            "select $1::int8 as v",
            vec![P::Int64(-9007199254740993)],
            "Int64",
            "Int64(-9007199254740993)",
        ),
        case(
            "float8",
            "select $1::float8 as v",
            vec![P::Floating64(3.5)],
            "Floating64",
            "Floating64(3.5)",
        ),
        case(
            "bool",
            "select $1::bool as v",
            vec![P::Boolean(true)],
            "Boolean",
            "Boolean(true)",
        ),
        case(
            "bytea",
            "select $1::bytea as v",
            vec![P::Binary(vec![0, 1, 2, 255])],
            "Binary",
            "Binary([0, 1, 2, 255])",
        ),
        case(
            "numeric",
            "select $1::numeric as v",
            vec![P::Decimal("12.50".into())],
            "Decimal",
            r#"Decimal("12.50")"#,
        ),
        case(
            "text[]",
            "select $1::text[] as v",
            vec![P::ArrayStr(vec![Some("a".into()), None, Some("c".into())])],
            "ArrayStr",
            r#"ArrayStr([Some("a"), None, Some("c")])"#,
        ),
        case(
            "int8[]",
            "select $1::int8[] as v",
            vec![P::ArrayInt64(vec![Some(1), None, Some(-3)])],
            "ArrayInt64",
            "ArrayInt64([Some(1), None, Some(-3)])",
        ),
        case(
            "date",
            "select $1::date as v",
            vec![P::Date((2026, 11, 23))],
            "Date",
            "Date((2026, 11, 23))",
        ),
        case(
            "timestamptz (epoch)",
            "select extract(epoch from $1::timestamptz)::int8 as v",
            vec![P::Timestamp(1_700_000_000)],
            "Int64",
            "Int64(1700000000)",
        ),
        case(
            "timestamptz (rfc3339 text)",
            "select extract(epoch from $1::text::timestamptz)::int8 as v",
            vec![P::Str("2023-11-14T22:13:20Z".into())],
            "Int64",
            "Int64(1700000000)",
        ),
        case(
            "timestamptz (to_jsonb, UTC)",
            "select to_jsonb($1::timestamptz at time zone 'UTC') as v",
            vec![P::Timestamp(1_700_000_000)],
            "Jsonb",
            r#"Jsonb("2023-11-14T22:13:20")"#,
        ),
        case(
            "null",
            "select $1::text as v",
            vec![P::DbNull],
            "Str",
            "DbNull",
        ),
        case(
            "null int",
            "select null::int4 as v",
            vec![],
            "Int32",
            "DbNull",
        ),
        case(
            "enum as text",
            "select $1::text::probe_mood::text as v",
            vec![P::Str("happy".into())],
            "Str",
            r#"Str("happy")"#,
        ),
        case(
            "enum raw",
            "select 'sad'::probe_mood as v",
            vec![],
            r#"Other("probe_mood")"#,
            "Unsupported(sad)",
        ),
        case(
            "json raw",
            r#"select '{"a": 1}'::json as v"#,
            vec![],
            r#"Other("json")"#,
            r#"Unsupported({"a": 1})"#,
        ),
    ]
}

/// Runs every case and answers 200 when all pass, 500 with the report otherwise.
pub fn run() -> Response {
    let url = match spin_sdk::variables::get("database_url") {
        Ok(u) => u,
        Err(e) => return json_response(500, json!({ "error": format!("{e:?}") })),
    };
    let conn = match Connection::open(&url) {
        Ok(c) => c,
        Err(e) => return json_response(500, json!({ "error": format!("{e:?}") })),
    };
    if let Err(e) = conn.execute(
        "do $$ begin create type probe_mood as enum ('happy', 'sad'); exception when duplicate_object then null; end $$",
        &[],
    ) {
        return json_response(500, json!({ "error": format!("creating probe_mood: {e:?}") }));
    }
    let mut report = Vec::new();
    let mut all_ok = true;
    for c in cases() {
        let (got_type, got) = match conn.query(c.sql, &c.params) {
            Ok(rs) => (
                rs.columns
                    .first()
                    .map(|col| plain(format!("{:?}", col.data_type)))
                    .unwrap_or_default(),
                rs.rows
                    .first()
                    .and_then(|r| r.first())
                    .map(show)
                    .unwrap_or_else(|| "<no value>".into()),
            ),
            Err(e) => (String::new(), format!("error: {e:?}")),
        };
        let ok = got == c.want && got_type == c.want_type;
        all_ok &= ok;
        report.push(json!({
            "name": c.name,
            "ok": ok,
            "got": got,
            "want": c.want,
            "got_type": got_type,
            "want_type": c.want_type,
        }));
    }
    json_response(
        if all_ok { 200 } else { 500 },
        json!({ "ok": all_ok, "cases": Value::Array(report) }),
    )
}
