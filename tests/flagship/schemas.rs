//! Every FlagShip payload's JSON Schema is committed in `docs/schemas/`, as
//! `SchemaRegistry::export` writes it (with the kind and queue annotation),
//! for the API server that produces the jobs and the TypeScript package's
//! generated types. This test regenerates each one and fails when the
//! committed file differs; run it with `FLAGSHIP_UPDATE_SCHEMAS=1` to
//! rewrite them.

use std::path::Path;

use flagship_worker::{flagship::register_kinds, schema::pretty_json, SchemaRegistry};

#[test]
fn committed_payload_schemas_are_current() {
    let registry = SchemaRegistry::new();
    register_kinds(&registry).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas");
    let update = std::env::var_os("FLAGSHIP_UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for kind in registry.kinds() {
        let path = dir.join(format!("{}.json", kind.kind()));
        let fresh = pretty_json(&kind.exported());
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &fresh).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(fresh.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale or missing schemas: {stale:?}; run `FLAGSHIP_UPDATE_SCHEMAS=1 cargo test --features flagship,http,test-util --test flagship schemas` and commit docs/schemas/, then regenerate the TypeScript types (`npm run generate` in clients/typescript)"
    );
}
