//! The schema registry: each job kind's JSON Schema, compiled once.

use std::{
    collections::BTreeMap,
    io,
    path::Path,
    sync::{Arc, RwLock},
};

use serde_json::Value;

use crate::{
    error::{Error, Result},
    job::{Job, QueueName},
};

/// Default largest payload accepted, in bytes of JSON: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The annotation [`SchemaRegistry::export`] adds to every kind's schema:
/// `"x-flagship-worker": { "kind": …, "queue": … }`, so code generators
/// (the TypeScript package's `flagship-worker-codegen`) know where jobs of
/// the kind go. Validators ignore it, as JSON Schema does unknown keywords.
pub const EXPORT_ANNOTATION: &str = "x-flagship-worker";

/// One registered job kind: its queue and its compiled schema.
#[derive(Debug)]
pub struct KindSchema {
    kind: String,
    queue: QueueName,
    schema: Value,
    validator: jsonschema::Validator,
}

impl KindSchema {
    /// The job kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The queue jobs of this kind go to.
    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    /// The JSON Schema, as registered.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The schema as [`SchemaRegistry::export`] writes it: the registered
    /// one with the [`EXPORT_ANNOTATION`] naming the kind and its queue. A
    /// schema that is not an object (`true`) is wrapped in `allOf`.
    pub fn exported(&self) -> Value {
        let annotation = serde_json::json!({ "kind": self.kind, "queue": self.queue.as_str() });
        match &self.schema {
            Value::Object(map) => {
                let mut map = map.clone();
                map.insert(EXPORT_ANNOTATION.to_owned(), annotation);
                Value::Object(map)
            }
            other => serde_json::json!({ "allOf": [other], EXPORT_ANNOTATION: annotation }),
        }
    }

    /// Validates `payload` against the schema; the error names the JSON path
    /// of the offending value and the schema rule it broke.
    pub fn validate(&self, payload: &Value) -> Result<()> {
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        match self.validator.validate(payload) {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::InvalidPayload {
                kind: self.kind.clone(),
                path: e.instance_path().to_string(),
                rule: e.schema_path().to_string(),
                message: e.to_string(),
            }),
        }
    }
}

/// The job kinds a client or worker knows, each with its compiled JSON
/// Schema and queue.
///
/// Schemas are compiled once, at registration. A registry is shared (behind
/// an `Arc`) by the client and the worker; registering is idempotent.
///
/// ```
/// use flagship_worker::{Job, SchemaRegistry};
/// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, JsonSchema)] struct Resize { width: u32 }
/// # impl Job for Resize { const KIND: &'static str = "resize"; const QUEUE: &'static str = "images"; }
///
/// let registry = SchemaRegistry::new();
/// registry.register::<Resize>().unwrap();
/// let err = registry.validate("resize", &serde_json::json!({ "width": "wide" })).unwrap_err();
/// assert!(err.to_string().contains("/width"));
/// ```
#[derive(Debug)]
pub struct SchemaRegistry {
    /// Kinds by name. Read on every enqueue and reservation, written only at
    /// registration, so a read-mostly lock.
    kinds: RwLock<BTreeMap<String, Arc<KindSchema>>>,
    /// Payloads larger than this (as JSON) are refused.
    max_payload_bytes: usize,
}

impl Default for SchemaRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl SchemaRegistry {
    /// An empty registry with the default payload limit of 1 MiB.
    pub fn new() -> Self {
        SchemaRegistry {
            kinds: RwLock::new(BTreeMap::new()),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }

    /// Sets the largest payload accepted, in bytes of JSON.
    pub fn with_max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    /// The largest payload accepted, in bytes of JSON.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    /// Registers a typed job kind, deriving its schema with `schemars`.
    pub fn register<J: Job>(&self) -> Result<Arc<KindSchema>> {
        if let Some(existing) = self.get(J::KIND) {
            if existing.queue.as_str() == J::QUEUE {
                return Ok(existing);
            }
        }
        let schema = serde_json::to_value(schemars::schema_for!(J))
            .map_err(|e| Error::InvalidConfig(format!("schema of job kind `{}` is not JSON: {e}", J::KIND)))?;
        self.register_raw(J::KIND, QueueName::new(J::QUEUE)?, schema)
    }

    /// Registers a job kind from a JSON Schema, for kinds that have no Rust
    /// type in this process (enqueued raw, or handled elsewhere).
    pub fn register_raw(&self, kind: &str, queue: QueueName, schema: Value) -> Result<Arc<KindSchema>> {
        check_kind(kind)?;
        let mut kinds = self.kinds.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = kinds.get(kind) {
            if existing.queue == queue && existing.schema == schema {
                return Ok(existing.clone());
            }
            return Err(Error::ConflictingKind(kind.to_owned()));
        }
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| Error::InvalidConfig(format!("schema of job kind `{kind}` does not compile: {e}")))?;
        let entry = Arc::new(KindSchema {
            kind: kind.to_owned(),
            queue,
            schema,
            validator,
        });
        kinds.insert(kind.to_owned(), entry.clone());
        Ok(entry)
    }

    /// The registered kind, if any.
    pub fn get(&self, kind: &str) -> Option<Arc<KindSchema>> {
        self.kinds
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(kind)
            .cloned()
    }

    /// Every registered kind, sorted by name.
    pub fn kinds(&self) -> Vec<Arc<KindSchema>> {
        self.kinds
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Checks a payload for `kind`: the kind is known, the payload is within
    /// the size limit and matches the schema.
    pub fn validate(&self, kind: &str, payload: &Value) -> Result<Arc<KindSchema>> {
        let entry = self.get(kind).ok_or_else(|| Error::UnknownKind(kind.to_owned()))?;
        self.check_size(kind, payload)?;
        entry.validate(payload)?;
        Ok(entry)
    }

    /// Refuses a payload whose JSON is larger than the limit.
    pub fn check_size(&self, kind: &str, payload: &Value) -> Result<()> {
        let size = json_size(payload, self.max_payload_bytes);
        if size > self.max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                kind: kind.to_owned(),
                size,
                limit: self.max_payload_bytes,
            });
        }
        Ok(())
    }

    /// Writes every registered kind's schema to `dir/{kind}.json`
    /// (pretty-printed, with a trailing newline), as
    /// [`KindSchema::exported`]: with the kind and its queue, for producers
    /// in other languages and their code generators (see `docs/interop.md`).
    /// Returns the files written, sorted by kind.
    ///
    /// A worker's registry holds every kind it has a handler for, so an
    /// application exports its own kinds with
    /// `worker.client().registry().export(dir)`, or from a registry it fills
    /// itself:
    ///
    /// ```
    /// use flagship_worker::{Job, SchemaRegistry};
    /// # use schemars::JsonSchema; use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, JsonSchema)] struct SendWelcome { email: String }
    /// # impl Job for SendWelcome { const KIND: &'static str = "send-welcome"; const QUEUE: &'static str = "emails"; }
    ///
    /// let registry = SchemaRegistry::new();
    /// registry.register::<SendWelcome>()?;
    /// # let dir = std::env::temp_dir().join(format!("flagship-export-doc-{}", std::process::id()));
    /// let written = registry.export(&dir)?; // dir/send-welcome.json
    /// assert_eq!(written, vec![dir.join("send-welcome.json")]);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn export(&self, dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        for entry in self.kinds() {
            let path = dir.join(format!("{}.json", entry.kind));
            std::fs::write(&path, pretty_json(&entry.exported()))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// A schema as [`SchemaRegistry::export`] writes it: pretty JSON and a
/// newline. Public so a test can check that committed schema files are
/// current by comparing them with this text.
pub fn pretty_json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// The longest job kind accepted, in bytes.
pub(crate) const MAX_KIND_LEN: usize = 128;

fn check_kind(kind: &str) -> Result<()> {
    let ok_chars = kind
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.'));
    if kind.is_empty() || kind.len() > MAX_KIND_LEN || !ok_chars {
        return Err(Error::InvalidConfig(format!(
            "job kind `{}` must be 1 to {MAX_KIND_LEN} ASCII letters, digits or `: - _ .`",
            kind.escape_debug()
        )));
    }
    Ok(())
}

/// The size of `value` as compact JSON, counting no further than just past `limit`.
fn json_size(value: &Value, limit: usize) -> usize {
    struct Counter {
        bytes: usize,
        limit: usize,
    }
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes += buf.len();
            if self.bytes > self.limit {
                // Stop early: the payload is too large whatever follows.
                return Err(io::Error::other("over limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { bytes: 0, limit };
    let _ = serde_json::to_writer(&mut counter, value);
    counter.bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Resize {
        width: u32,
        name: String,
    }
    impl Job for Resize {
        const KIND: &'static str = "resize";
        const QUEUE: &'static str = "images";
    }

    #[test]
    fn errors_name_the_path_and_the_rule() {
        let registry = SchemaRegistry::new();
        registry.register::<Resize>().unwrap();
        let err = registry
            .validate("resize", &serde_json::json!({ "width": -3, "name": "x" }))
            .unwrap_err();
        match err {
            Error::InvalidPayload { path, rule, .. } => {
                assert_eq!(path, "/width");
                assert!(rule.contains("minimum") || rule.contains("format"), "{rule}");
            }
            other => panic!("unexpected {other}"),
        }
        let err = registry
            .validate("resize", &serde_json::json!({ "width": 3 }))
            .unwrap_err();
        assert!(err.to_string().contains("required"), "{err}");
    }

    #[test]
    fn unknown_kinds_and_oversized_payloads_are_refused() {
        let registry = SchemaRegistry::new().with_max_payload_bytes(64);
        registry.register::<Resize>().unwrap();
        assert!(matches!(
            registry.validate("nope", &serde_json::json!({})),
            Err(Error::UnknownKind(_))
        ));
        let big = serde_json::json!({ "width": 1, "name": "x".repeat(100) });
        assert!(matches!(
            registry.validate("resize", &big),
            Err(Error::PayloadTooLarge { limit: 64, .. })
        ));
    }

    #[test]
    fn export_writes_every_kind_with_its_kind_and_queue() {
        let registry = SchemaRegistry::new();
        registry.register::<Resize>().unwrap();
        registry
            .register_raw("anything", QueueName::new("misc").unwrap(), Value::Bool(true))
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "flagship-export-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let written = registry.export(&dir).unwrap();
        assert_eq!(written, vec![dir.join("anything.json"), dir.join("resize.json")]);

        let read = |name: &str| -> Value { serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap() };
        let resize = read("resize.json");
        assert_eq!(
            resize[EXPORT_ANNOTATION],
            serde_json::json!({ "kind": "resize", "queue": "images" })
        );
        let mut without = resize.clone();
        without.as_object_mut().unwrap().remove(EXPORT_ANNOTATION);
        assert_eq!(&without, registry.get("resize").unwrap().schema());
        let anything = read("anything.json");
        assert_eq!(anything["allOf"], serde_json::json!([true]));
        assert_eq!(anything[EXPORT_ANNOTATION]["queue"], "misc");

        // The annotation is an unknown keyword to validators: an exported
        // schema accepts and refuses what the registered one does.
        let exported = jsonschema::validator_for(&resize).unwrap();
        assert!(exported.is_valid(&serde_json::json!({ "width": 3, "name": "x" })));
        assert!(!exported.is_valid(&serde_json::json!({ "width": -3, "name": "x" })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn registering_twice_is_idempotent_but_conflicts_are_refused() {
        let registry = SchemaRegistry::new();
        registry.register::<Resize>().unwrap();
        registry.register::<Resize>().unwrap();
        let other_queue = QueueName::new("elsewhere").unwrap();
        assert!(matches!(
            registry.register_raw("resize", other_queue, serde_json::json!({})),
            Err(Error::ConflictingKind(_))
        ));
        assert!(registry
            .register_raw("bad kind", QueueName::new("q").unwrap(), serde_json::json!({}))
            .is_err());
    }
}
