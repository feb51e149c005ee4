//! The committed JSON Schemas in `docs/schemas/` must match the code.
//!
//! Run with `FLAGSHIP_UPDATE_SCHEMAS=1` to rewrite them after a change.

use std::path::Path;

use flagship_worker::{schema::pretty_json, JobEnvelope};

/// Compares `docs/schemas/{name}` with `schema`, or rewrites it when asked.
pub(crate) fn check_committed_schema(name: &str, schema: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas").join(name);
    let fresh = pretty_json(schema);
    if std::env::var_os("FLAGSHIP_UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: run `FLAGSHIP_UPDATE_SCHEMAS=1 cargo test --all-features` and commit the result",
        path.display()
    );
}

#[test]
fn envelope_schema_is_committed_and_current() {
    check_committed_schema("envelope.json", &JobEnvelope::json_schema());
}

#[test]
fn envelope_schema_accepts_envelopes_and_refuses_garbage() {
    let schema = JobEnvelope::json_schema();
    let validator = jsonschema_validator(&schema);
    let queue = flagship_worker::QueueName::new("q").unwrap();
    let envelope = JobEnvelope::new("k", queue, serde_json::json!({"a": 1}), chrono::Utc::now());
    assert!(validator(&serde_json::to_value(&envelope).unwrap()));
    assert!(!validator(&serde_json::json!({ "v": 1, "type": "k" })));
}

fn jsonschema_validator(schema: &serde_json::Value) -> impl Fn(&serde_json::Value) -> bool {
    // The registry compiles schemas with the same validator the crate uses.
    let registry = flagship_worker::SchemaRegistry::new();
    registry
        .register_raw(
            "envelope",
            flagship_worker::QueueName::new("q").unwrap(),
            schema.clone(),
        )
        .unwrap();
    move |value| registry.validate("envelope", value).is_ok()
}
