//! The PostgreSQL stores and controls: the store contract, the pipeline end
//! to end on the PostgreSQL broker with every FlagShip store in PostgreSQL
//! (checked with SQL against the tables), and auto-actions on a product's
//! own tables. Each test makes
//! a database of its own (and skips with a notice when there is no server,
//! unless `FLAGSHIP_REQUIRE_POSTGRES=1`).

use std::sync::Arc;

use flagship_worker::{
    broker::postgres::sqlx::{self, PgPool},
    flagship::{
        control::{ApiKeyControl, FlagControl, PostgresControl, SwitchTable},
        stores::PostgresStore,
        FlagshipServices,
    },
    testing::postgres_server::TestDatabase,
    PostgresBroker,
};

use crate::{
    pipeline::{threshold_scenario, Pipeline},
    stores::store_contract,
    ShiftedClock,
};

async fn pool(db: &TestDatabase) -> PgPool {
    PgPool::connect(&db.url()).await.unwrap()
}

#[tokio::test]
async fn postgres_store_meets_the_contract() {
    let Some(db) = TestDatabase::create().await else { return };
    let store = PostgresStore::connect(&db.url()).await.unwrap();
    store_contract(Arc::new(store), "acme").await;
    // Connecting again finds the schema migrated and changes nothing; a
    // second schema is a separate store in the same database.
    PostgresStore::connect(&db.url()).await.unwrap();
    let other = PostgresStore::with_pool(pool(&db).await, "other_stores").await.unwrap();
    store_contract(Arc::new(other), "acme").await;
    assert!(PostgresStore::with_pool(pool(&db).await, "Bad-Name").await.is_err());
}

#[tokio::test]
async fn usage_thresholds_notify_and_enforce_once_on_postgres_with_postgres_stores() {
    let Some(db) = TestDatabase::create().await else { return };
    let clock = Arc::new(ShiftedClock::starting_at("2026-01-01T10:30:00Z"));
    // The broker and the stores in one database, each in its own schema.
    let backend = Arc::new(PostgresBroker::connect(db.url()).await.unwrap());
    let store = PostgresStore::connect(&db.url()).await.unwrap();
    let sql = store.pool().clone();
    let pipeline = Pipeline::start(backend, FlagshipServices::from_store(Arc::new(store)), clock).await;
    threshold_scenario(&pipeline).await;
    pipeline.stop().await;

    // What the scenario did, read back with SQL.
    let actions: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, actor FROM flagship.audit_events WHERE org_id = 'acme' ORDER BY occurred_at, id",
    )
    .fetch_all(&sql)
    .await
    .unwrap();
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&"flag.created") && names.contains(&"flag.disabled") && names.contains(&"api_key.blocked"));
    let archived: i64 = sqlx::query_scalar(
        "SELECT total FROM flagship.usage_archive WHERE org_id = 'acme' AND metric = 'api_calls' \
         AND period = 'hourly' AND period_start = '2026-01-01T10:00:00Z'",
    )
    .fetch_one(&sql)
    .await
    .unwrap();
    assert_eq!(archived, 105, "the closed hour is archived");
    let live: Vec<(chrono::DateTime<chrono::Utc>, i64)> = sqlx::query_as(
        "SELECT period_start, value FROM flagship.usage_counters WHERE org_id = 'acme' AND period = 'hourly'",
    )
    .fetch_all(&sql)
    .await
    .unwrap();
    assert_eq!(
        live,
        vec![("2026-01-01T11:00:00Z".parse().unwrap(), 90)],
        "the new hour starts from zero"
    );
    let deliveries: Vec<(String, String)> =
        sqlx::query_as("SELECT channel, via FROM flagship.deliveries ORDER BY channel, notification_key")
            .fetch_all(&sql)
            .await
            .unwrap();
    assert_eq!(
        deliveries.len(),
        6,
        "three notifications, by email and webhook: {deliveries:?}"
    );
    assert!(deliveries.iter().all(|(_, via)| via == "sent"), "{deliveries:?}");
    let flag_enabled: bool =
        sqlx::query_scalar("SELECT enabled FROM flagship.flags WHERE org_id = 'acme' AND key = 'new-ui'")
            .fetch_one(&sql)
            .await
            .unwrap();
    assert!(!flag_enabled);
}

#[tokio::test]
async fn postgres_control_acts_once_on_the_products_own_tables() {
    let Some(db) = TestDatabase::create().await else { return };
    let pool = pool(&db).await;
    sqlx::raw_sql(
        "CREATE SCHEMA app;
         CREATE TABLE app.feature_flags (organization_id text, flag_key text, is_on boolean NOT NULL,
             off_reason text, changed_at timestamptz, PRIMARY KEY (organization_id, flag_key));
         CREATE TABLE app.api_keys (org_id text, id text, revoked boolean NOT NULL DEFAULT false,
             PRIMARY KEY (org_id, id));
         INSERT INTO app.feature_flags VALUES ('acme', 'new-ui', true, NULL, NULL), ('other', 'new-ui', true, NULL, NULL);
         INSERT INTO app.api_keys (org_id, id) VALUES ('acme', 'key-1');",
    )
    .execute(&pool)
    .await
    .unwrap();
    let control = PostgresControl::new(
        pool.clone(),
        SwitchTable::flags("app.feature_flags")
            .org_column("organization_id")
            .id_column("flag_key")
            .state_column("is_on", false)
            .reason_column("off_reason")
            .time_column("changed_at"),
        SwitchTable::api_keys("app.api_keys").state_column("revoked", true),
    )
    .unwrap();
    let now: chrono::DateTime<chrono::Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
    assert_eq!(
        control.disable_flag("acme", "new-ui", "limit", now).await.unwrap(),
        Some(true)
    );
    assert_eq!(
        control.disable_flag("acme", "new-ui", "again", now).await.unwrap(),
        Some(false)
    );
    assert_eq!(control.disable_flag("acme", "ghost", "limit", now).await.unwrap(), None);
    let flags: Vec<(String, bool, Option<String>)> =
        sqlx::query_as("SELECT organization_id, is_on, off_reason FROM app.feature_flags ORDER BY organization_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        flags,
        vec![
            ("acme".into(), false, Some("limit".into())),
            ("other".into(), true, None)
        ],
        "only acme's flag changed, once"
    );
    assert_eq!(
        control.block_api_key("acme", "key-1", "limit", now).await.unwrap(),
        Some(true)
    );
    assert_eq!(
        control.block_api_key("acme", "key-1", "limit", now).await.unwrap(),
        Some(false)
    );
    assert_eq!(
        control.block_api_key("other", "key-1", "limit", now).await.unwrap(),
        None
    );
    let bad = PostgresControl::new(
        pool,
        SwitchTable::flags("feature_flags; DROP TABLE x"),
        SwitchTable::api_keys("api_keys"),
    );
    assert!(bad.is_err(), "names are checked before they reach SQL");
}
