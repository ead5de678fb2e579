//! The migration runner against a real, empty PostgreSQL: the whole schema
//! applies; a second run applies nothing and changes nothing; a changed
//! applied file stops the runner before it touches anything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly by design

use std::path::{Path, PathBuf};

use outpost_host::migrate;
use outpost_test_kit::TestDb;
use tokio_postgres::Client;

fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations")
}

/// Everything a migration can create, as text, so two snapshots compare.
async fn schema_snapshot(client: &Client) -> Vec<String> {
    let queries = [
        "select 'column ' || table_schema || '.' || table_name || '.' || column_name || ' ' || data_type || ' ' || coalesce(column_default, '') || ' ' || is_nullable
           from information_schema.columns where table_schema in ('public', 'auth', 'vault', 'storage')",
        "select 'index ' || indexdef from pg_indexes where schemaname in ('public', 'auth', 'vault', 'storage')",
        "select 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
           from pg_constraint where connamespace::regnamespace::text in ('public', 'auth', 'vault', 'storage')",
        "select 'function ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc) || ' ' || p.prosecdef::text
           from pg_proc p where p.pronamespace::regnamespace::text in ('public', 'auth', 'vault', 'storage')",
        "select 'trigger ' || tgrelid::regclass::text || ' ' || tgname || ' ' || pg_get_triggerdef(oid)
           from pg_trigger where not tgisinternal",
        "select 'policy ' || schemaname || '.' || tablename || ' ' || policyname || ' ' || cmd || ' ' || array_to_string(roles, ',') || ' ' || coalesce(qual, '') || ' ' || coalesce(with_check, '')
           from pg_policies",
        "select 'view ' || schemaname || '.' || viewname || ' ' || md5(definition) from pg_views where schemaname in ('public', 'auth', 'vault', 'storage')",
        "select 'matview ' || schemaname || '.' || matviewname || ' ' || md5(definition) from pg_matviews",
        "select 'enum ' || t.typname || ' ' || string_agg(e.enumlabel, ',' order by e.enumsortorder)
           from pg_enum e join pg_type t on t.oid = e.enumtypid group by t.typname",
        "select 'rls ' || oid::regclass::text || ' ' || relrowsecurity::text from pg_class
           where relkind = 'r' and relnamespace::regnamespace::text in ('public', 'storage', 'vault', 'auth')",
        "select 'bucket ' || id || ' ' || public::text from storage.buckets",
        "select 'migration ' || version || ' ' || checksum from public.outpost_schema_migrations",
    ];
    let mut lines = Vec::new();
    for query in queries {
        for row in client.query(query, &[]).await.unwrap() {
            lines.push(row.get::<_, String>(0));
        }
    }
    lines.sort();
    lines
}

#[tokio::test]
async fn applies_to_an_empty_database_and_a_second_run_changes_nothing() {
    let db = TestDb::empty().await.unwrap();
    let first = migrate::run(&db.url(), &migrations_dir()).await.unwrap();
    let files = migrate::discover(&migrations_dir()).unwrap();
    assert_eq!(first.applied.len(), files.len(), "{}", first.summary());
    assert_eq!(first.unchanged, 0);

    let client = db.connect().await.unwrap();
    let before = schema_snapshot(&client).await;
    assert!(
        before.len() > 500,
        "a real schema was created ({} objects)",
        before.len()
    );

    let second = migrate::run(&db.url(), &migrations_dir()).await.unwrap();
    assert!(
        second.applied.is_empty(),
        "second run applied {:?}",
        second.applied
    );
    assert_eq!(second.unchanged, files.len());
    assert_eq!(
        before,
        schema_snapshot(&client).await,
        "the second run changed the schema"
    );
}

#[tokio::test]
async fn a_changed_applied_file_stops_the_runner_before_anything_runs() {
    let db = TestDb::empty().await.unwrap();
    let copy = std::env::temp_dir().join(format!("outpost-migrations-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&copy).unwrap();
    let files = migrate::discover(&migrations_dir()).unwrap();
    for file in &files {
        std::fs::copy(&file.path, copy.join(file.path.file_name().unwrap())).unwrap();
    }
    migrate::run(&db.url(), &copy).await.unwrap();

    // Edit the first file and add a new one: the runner must refuse both.
    let first = copy.join(files[0].path.file_name().unwrap());
    let mut text = std::fs::read_to_string(&first).unwrap();
    text.push_str("\n-- an edit after landing\n");
    std::fs::write(&first, text).unwrap();
    std::fs::write(
        copy.join("9999_new_table.sql"),
        "create table public.should_not_exist (id int);",
    )
    .unwrap();

    let error = migrate::run(&db.url(), &copy)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("was changed after it was applied"),
        "{error}"
    );
    assert!(error.contains(&files[0].name), "{error}");
    let client = db.connect().await.unwrap();
    let created: Option<String> = client
        .query_one("select to_regclass('public.should_not_exist')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, None, "nothing ran after the refusal");
    std::fs::remove_dir_all(&copy).unwrap();
}

#[tokio::test]
async fn a_failing_file_rolls_back_alone_and_names_its_line() {
    let db = TestDb::empty().await.unwrap();
    let dir = std::env::temp_dir().join(format!("outpost-migrations-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("0001_good.sql"),
        "create table public.good (id int);",
    )
    .unwrap();
    std::fs::write(
        dir.join("0002_bad.sql"),
        "create table public.half (id int);\n\nselect nope;\n",
    )
    .unwrap();
    let error = migrate::run(&db.url(), &dir).await.unwrap_err().to_string();
    assert!(error.contains("0002_bad.sql:3"), "{error}");
    assert!(error.contains("column \"nope\" does not exist"), "{error}");
    let client = db.connect().await.unwrap();
    let row = client
        .query_one(
            "select to_regclass('public.good')::text, to_regclass('public.half')::text,
                    (select count(*) from public.outpost_schema_migrations)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("good"));
    assert_eq!(
        row.get::<_, Option<String>>(1),
        None,
        "the failing file left nothing"
    );
    assert_eq!(row.get::<_, i64>(2), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
