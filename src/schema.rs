//! The schema registry: each job kind's JSON Schema, compiled once.
//!
//! Every payload is checked in this order, so nothing walks a value before
//! its depth is known to be safe: the nesting depth (without recursion),
//! the size as JSON, then the schema (formats included).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io,
    num::NonZeroU64,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, RwLock,
    },
};

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

use crate::{
    error::{Error, Result},
    job::{Job, QueueName},
    payload::Payload,
};

/// Default largest payload accepted, in bytes of JSON: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The deepest payload accepted: arrays and objects nested at most this
/// many levels (`{"a": [1]}` is two levels deep).
///
/// One limit for every payload, checked without recursion before anything
/// else walks the value, at enqueue and again when a worker reserves the
/// job. It sits well below serde_json's own limit of 128 levels, so every
/// payload a client accepts also decodes inside its envelope on the
/// worker; and deep JSON could otherwise overflow the stack of code that
/// walks it recursively.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// The annotation [`SchemaRegistry::export`] adds to every kind's schema:
/// `"x-flagship-worker": { "kind": …, "queue": … }`, so code generators
/// (the TypeScript package's `flagship-worker-codegen`) know where jobs of
/// the kind go. Validators ignore it, as JSON Schema does unknown keywords.
pub const EXPORT_ANNOTATION: &str = "x-flagship-worker";

/// One registered job kind: its queue and its compiled schema.
#[derive(Debug)]
pub struct KindSchema {
    /// Unique among every schema compiled in this process: a [`Payload`]
    /// remembers which schema accepted it, so a worker holding the same
    /// compiled schema does not check the same text twice.
    id: NonZeroU64,
    kind: String,
    queue: QueueName,
    schema: Value,
    validator: jsonschema::Validator,
    /// Whether refusals may quote the refused value; shared with the
    /// registry, which sets it (see [`SchemaRegistry::show_values`]).
    show_values: Arc<AtomicBool>,
}

impl KindSchema {
    /// This compiled schema's id, unique in the process.
    pub fn id(&self) -> NonZeroU64 {
        self.id
    }

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

    /// Validates `payload`: its depth (at most [`MAX_PAYLOAD_DEPTH`]), then
    /// the schema, with formats (`date-time`, `email`, `uuid`, ...)
    /// checked. The error names the JSON path of the offending value and
    /// the schema rule it broke, never the value itself (unless the
    /// registry [shows values](SchemaRegistry::show_values)).
    pub fn validate(&self, payload: &Value) -> Result<()> {
        check_depth(&self.kind, payload)?;
        self.validate_shallow(payload)
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

    /// Checks a payload read from a broker: its depth, then the schema.
    /// Returns the parsed value for the handler to decode, or `None` when
    /// this very schema accepted exactly this text before, in this process
    /// (a job enqueued by a client sharing the worker's registry, on the
    /// in-memory broker): checking it again would give the same answer.
    pub fn check_payload(&self, payload: &Payload) -> Result<Option<Value>> {
        if payload.checked_by() == Some(self.id) {
            return Ok(None);
        }
        let value = parse_payload(&self.kind, payload)?;
        self.validate(&value)?;
        Ok(Some(value))
    }

    /// The schema check alone, for a payload whose depth is already checked.
    fn validate_shallow(&self, payload: &Value) -> Result<()> {
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        match self.validator.validate(payload) {
            Ok(()) => Ok(()),
            Err(e) => {
                let message = if self.show_values.load(Ordering::Relaxed) {
                    e.to_string()
                } else {
                    describe(e.kind())
                };
                Err(Error::InvalidPayload {
                    kind: self.kind.clone(),
                    path: e.instance_path().to_string(),
                    rule: e.schema_path().to_string(),
                    message,
                })
            }
        }
    }
}

/// The job kinds a client or worker knows, each with its compiled JSON
/// Schema and queue.
///
/// Schemas are compiled once, at registration, with format validation on:
/// a `"format": "date-time"` (or `email`, `uuid`, `uri`, `date`, ...)
/// refuses strings that are not one. Formats the validator does not know
/// (such as schemars' `uint32`) are ignored. A registry is shared (behind
/// an `Arc`) by the client and the worker; registering is idempotent.
///
/// # Limits
///
/// Every payload is checked, in this order, before it is enqueued and
/// again when a worker reserves it:
///
/// - depth: arrays and objects nested at most [`MAX_PAYLOAD_DEPTH`] (64)
///   levels, checked without recursion ([`Error::PayloadTooDeep`]);
/// - size: at most [`max_payload_bytes`](Self::max_payload_bytes) of compact
///   JSON, 1 MiB by default ([`Error::PayloadTooLarge`]; at enqueue);
/// - schema: the kind's JSON Schema, formats included
///   ([`Error::InvalidPayload`]).
///
/// Refusals name the JSON path and the schema rule, never the refused
/// value, since payloads may hold secrets; [`show_values`](Self::show_values)
/// opts in to quoting values while debugging.
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
/// assert!(!err.to_string().contains("wide"));
/// ```
#[derive(Debug)]
pub struct SchemaRegistry {
    /// Kinds by name. Read on every enqueue and reservation, written only at
    /// registration, so a read-mostly lock.
    kinds: RwLock<BTreeMap<String, Arc<KindSchema>>>,
    /// Payloads larger than this (as JSON) are refused.
    max_payload_bytes: usize,
    /// Whether refusals may quote refused values; shared with every
    /// registered kind, so setting it applies to kinds already registered.
    show_values: Arc<AtomicBool>,
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
            show_values: Arc::new(AtomicBool::new(false)),
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

    /// Lets validation errors quote the refused value (off by default).
    ///
    /// Off, a refusal names the JSON path and the schema rule only, and so
    /// do the dead-letter reasons and log lines built from it: payloads may
    /// hold secrets. Turn it on only where payloads are known to be safe to
    /// log, e.g. while debugging a producer.
    pub fn show_values(self, show: bool) -> Self {
        self.show_values.store(show, Ordering::Relaxed);
        self
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
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| Error::InvalidConfig(format!("schema of job kind `{kind}` does not compile: {e}")))?;
        let entry = Arc::new(KindSchema {
            id: next_schema_id(),
            kind: kind.to_owned(),
            queue,
            schema,
            validator,
            show_values: self.show_values.clone(),
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

    /// Checks a payload for `kind`: the kind is known, and the payload is
    /// within the depth and size limits and matches the schema.
    pub fn validate(&self, kind: &str, payload: &Value) -> Result<Arc<KindSchema>> {
        let entry = self.get(kind).ok_or_else(|| Error::UnknownKind(kind.to_owned()))?;
        self.check(&entry, payload)?;
        Ok(entry)
    }

    /// Checks a payload against a kind of this registry: depth, size, schema.
    pub(crate) fn check(&self, entry: &KindSchema, payload: &Value) -> Result<()> {
        check_depth(&entry.kind, payload)?;
        self.check_size_shallow(&entry.kind, payload)?;
        entry.validate_shallow(payload)
    }

    /// Checks `payload` against a kind of this registry (depth, size,
    /// schema) and returns its JSON text, written by `text` once the depth
    /// is known to be safe, marked as accepted by the kind's schema.
    pub(crate) fn accept(
        &self,
        entry: &KindSchema,
        payload: &Value,
        text: impl FnOnce() -> Result<Payload>,
    ) -> Result<Payload> {
        check_depth(&entry.kind, payload)?;
        let mut text = text()?;
        self.check_len(&entry.kind, text.len())?;
        entry.validate_shallow(payload)?;
        text.mark_checked(entry.id);
        Ok(text)
    }

    /// Checks JSON text for `kind` (known, then depth, size and schema),
    /// and marks it as accepted. Text this registry accepted before is not
    /// parsed again.
    pub fn validate_payload(&self, kind: &str, payload: &mut Payload) -> Result<Arc<KindSchema>> {
        let entry = self.get(kind).ok_or_else(|| Error::UnknownKind(kind.to_owned()))?;
        if payload.checked_by() != Some(entry.id) {
            let value = parse_payload(kind, payload)?;
            *payload = self.accept(&entry, &value, || Ok(payload.clone()))?;
        }
        Ok(entry)
    }

    /// Refuses a payload whose JSON is larger than the limit. Its depth is
    /// checked first, so measuring it cannot overflow the stack.
    pub fn check_size(&self, kind: &str, payload: &Value) -> Result<()> {
        check_depth(kind, payload)?;
        self.check_size_shallow(kind, payload)
    }

    /// The size check alone, for a payload whose depth is already checked.
    fn check_size_shallow(&self, kind: &str, payload: &Value) -> Result<()> {
        self.check_len(kind, json_size(payload, self.max_payload_bytes))
    }

    /// Refuses `size` bytes of JSON when above the limit.
    fn check_len(&self, kind: &str, size: usize) -> Result<()> {
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

/// A new [`KindSchema::id`].
fn next_schema_id() -> NonZeroU64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NonZeroU64::new(NEXT.fetch_add(1, Ordering::Relaxed)).unwrap_or(NonZeroU64::MAX)
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

/// Parses a payload's text into a value. The text is JSON (a [`Payload`]
/// holds nothing else), so this fails only past serde_json's nesting limit
/// of 128 levels, far deeper than [`MAX_PAYLOAD_DEPTH`].
fn parse_payload(kind: &str, payload: &Payload) -> Result<Value> {
    payload.to_value().map_err(|_| Error::PayloadTooDeep {
        kind: kind.to_owned(),
        limit: MAX_PAYLOAD_DEPTH,
    })
}

/// Refuses a payload nested deeper than [`MAX_PAYLOAD_DEPTH`].
fn check_depth(kind: &str, payload: &Value) -> Result<()> {
    if nests_deeper_than(payload, MAX_PAYLOAD_DEPTH) {
        return Err(Error::PayloadTooDeep {
            kind: kind.to_owned(),
            limit: MAX_PAYLOAD_DEPTH,
        });
    }
    Ok(())
}

/// Whether `value` nests arrays and objects more than `limit` levels deep.
/// Walks the value with an explicit stack (never recursing), and stops at
/// the first container past the limit. A flat payload (the usual kind)
/// never allocates the stack.
fn nests_deeper_than(value: &Value, limit: usize) -> bool {
    /// Pushes the containers inside `value`, or says `value` is too deep.
    fn look_into<'v>(value: &'v Value, enclosing: usize, limit: usize, stack: &mut Vec<(&'v Value, usize)>) -> bool {
        let is_container = |child: &Value| child.is_array() || child.is_object();
        match value {
            Value::Array(_) | Value::Object(_) if enclosing >= limit => return true,
            Value::Array(items) => {
                for child in items.iter().filter(|c| is_container(c)) {
                    stack.push((child, enclosing + 1));
                }
            }
            Value::Object(map) => {
                for child in map.values().filter(|c| is_container(c)) {
                    stack.push((child, enclosing + 1));
                }
            }
            _ => {}
        }
        false
    }
    // Containers still to look into, with how many containers enclose them.
    let mut stack = Vec::new();
    if look_into(value, 0, limit, &mut stack) {
        return true;
    }
    while let Some((value, enclosing)) = stack.pop() {
        if look_into(value, enclosing, limit, &mut stack) {
            return true;
        }
    }
    false
}

/// Drops a value without recursing: a payload refused for its depth may be
/// too deep for `Value`'s own (recursive) drop to survive.
pub(crate) fn drop_deep(value: Value) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, child)| child)),
            _ => {}
        }
    }
}

/// What a validation error says is wrong, in words built from its kind:
/// the schema's side (limits, types, formats, property names) but never
/// the refused value.
fn describe(kind: &ValidationErrorKind) -> String {
    use ValidationErrorKind as K;
    match kind {
        K::AdditionalItems { limit } => format!("has more than the {limit} items the schema allows"),
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => {
            format!("has properties the schema does not allow: {}", quoted(unexpected))
        }
        K::AnyOf { .. } => "matches none of the schemas listed in `anyOf`".into(),
        K::BacktrackLimitExceeded { .. } | K::RegexEngineFailure { .. } => {
            "could not be checked against its `pattern` (the pattern is too costly)".into()
        }
        K::Constant { expected_value } => format!("must be {}", schema_value(expected_value)),
        K::Contains => "has no item matching the schema in `contains`".into(),
        K::ContentEncoding { content_encoding } => format!("is not valid `{content_encoding}`"),
        K::ContentMediaType { content_media_type } => format!("is not valid `{content_media_type}`"),
        K::Custom { keyword, .. } => format!("breaks the `{keyword}` rule"),
        K::Enum { options } => format!("must be one of {}", schema_value(options)),
        K::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        K::ExclusiveMinimum { limit } => format!("must be greater than {limit}"),
        K::FalseSchema => "is not allowed here".into(),
        K::Format { format } => format!("is not a valid `{format}`"),
        K::FromUtf8 { .. } => "is not UTF-8 once decoded".into(),
        K::MaxItems { limit } => format!("has more than {limit} items"),
        K::Maximum { limit } => format!("must be at most {limit}"),
        K::MaxLength { limit } => format!("is longer than {limit} characters"),
        K::MaxProperties { limit } => format!("has more than {limit} properties"),
        K::MinItems { limit } => format!("has fewer than {limit} items"),
        K::Minimum { limit } => format!("must be at least {limit}"),
        K::MinLength { limit } => format!("is shorter than {limit} characters"),
        K::MinProperties { limit } => format!("has fewer than {limit} properties"),
        K::MultipleOf { multiple_of } => format!("must be a multiple of {multiple_of}"),
        K::Not { .. } => "matches the schema in `not`, which it must not".into(),
        K::OneOfMultipleValid { .. } => "matches more than one of the schemas listed in `oneOf`".into(),
        K::OneOfNotValid { .. } => "matches none of the schemas listed in `oneOf`".into(),
        K::Pattern { pattern } => format!("does not match the pattern `{pattern}`"),
        K::PropertyNames { error } => format!("has a property name that {}", describe(error.kind())),
        K::Required { property } => format!("lacks the required property {property}"),
        K::Type { kind } => match kind {
            TypeKind::Single(expected) => format!("must be of type {expected}"),
            TypeKind::Multiple(expected) => {
                let names: Vec<&str> = expected.iter().map(|t| t.as_str()).collect();
                format!("must be of type {}", names.join(" or "))
            }
        },
        K::UnevaluatedItems { .. } => "has items the schema does not allow".into(),
        K::UniqueItems => "has duplicate items".into(),
        K::Referencing(error) => format!("could not be checked: the schema has a broken reference ({error})"),
    }
}

/// Names, quoted: property names come from the payload's keys, which are
/// part of its paths too, not from its values.
fn quoted(names: &[String]) -> String {
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "`{}`", name.escape_debug());
    }
    out
}

/// A value taken from the schema (not the payload), cut to a readable length.
fn schema_value(value: &Value) -> String {
    const LONGEST: usize = 200;
    let text = value.to_string();
    if text.len() <= LONGEST {
        return text;
    }
    let mut end = LONGEST;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The size of `value` as compact JSON, counting no further than just past
/// `limit`. Serializing recurses: check the depth first.
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

    /// `levels` arrays, one inside the other, built without recursion.
    fn nested(levels: usize) -> Value {
        let mut value = Value::Null;
        for _ in 0..levels {
            value = Value::Array(vec![value]);
        }
        value
    }

    /// Issue 11, item 5: 20k-30k levels overflowed the stack in `check_size`.
    #[test]
    fn deep_payloads_are_refused_without_recursion() {
        let registry = SchemaRegistry::new();
        let any = registry
            .register_raw("any", QueueName::new("q").unwrap(), serde_json::json!({}))
            .unwrap();
        let deep = nested(200_000);
        for err in [
            registry.validate("any", &deep).unwrap_err(),
            registry.check_size("any", &deep).unwrap_err(),
            any.validate(&deep).unwrap_err(),
        ] {
            assert!(
                matches!(
                    err,
                    Error::PayloadTooDeep {
                        limit: MAX_PAYLOAD_DEPTH,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("more than 64 levels deep"), "{err}");
        }
        drop_deep(deep);
    }

    /// Issue 11, item 6: 126+ levels passed, but no worker could decode them.
    #[test]
    fn the_depth_limit_is_exact_and_below_what_workers_decode() {
        let registry = SchemaRegistry::new();
        registry
            .register_raw("any", QueueName::new("q").unwrap(), serde_json::json!({}))
            .unwrap();
        assert!(registry.validate("any", &nested(MAX_PAYLOAD_DEPTH)).is_ok());
        let object_inside = serde_json::json!({ "a": nested(MAX_PAYLOAD_DEPTH - 1) });
        assert!(registry.validate("any", &object_inside).is_ok());
        assert!(matches!(
            registry.validate("any", &nested(MAX_PAYLOAD_DEPTH + 1)),
            Err(Error::PayloadTooDeep { .. })
        ));
        let object_inside = serde_json::json!({ "a": [1, { "b": nested(MAX_PAYLOAD_DEPTH - 2) }] });
        assert!(matches!(
            registry.validate("any", &object_inside),
            Err(Error::PayloadTooDeep { .. })
        ));
        assert!(registry.validate("any", &serde_json::json!("scalar")).is_ok());
        // Whatever is accepted decodes inside an envelope.
        let q = QueueName::new("q").unwrap();
        let envelope = crate::JobEnvelope::new("any", q, nested(MAX_PAYLOAD_DEPTH), chrono::Utc::now());
        crate::JobEnvelope::from_json("x", &envelope.to_json()).unwrap();
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    struct Signup {
        occurred_at: chrono::DateTime<chrono::Utc>,
        #[schemars(email)]
        email: String,
        user: uuid::Uuid,
        count: u32,
    }
    impl Job for Signup {
        const KIND: &'static str = "signup";
        const QUEUE: &'static str = "users";
    }

    fn signup() -> Value {
        serde_json::json!({
            "occurredAt": "2025-01-01T12:00:00Z",
            "email": "ada@example.com",
            "user": "0194d3a4-7c1e-7000-8000-000000000001",
            "count": 3,
        })
    }

    /// Issue 11, item 8: `"occurredAt": "not-a-date"` was accepted at enqueue.
    #[test]
    fn formats_are_validated() {
        let registry = SchemaRegistry::new();
        registry.register::<Signup>().unwrap();
        registry.validate("signup", &signup()).unwrap();
        for (field, bad) in [
            ("occurredAt", "not-a-date"),
            ("occurredAt", "2025-01-01T12:00:00"),
            ("email", "not-an-email"),
            ("user", "not-a-uuid"),
        ] {
            let mut payload = signup();
            payload[field] = bad.into();
            match registry.validate("signup", &payload).unwrap_err() {
                Error::InvalidPayload {
                    path, rule, message, ..
                } => {
                    assert_eq!(path, format!("/{field}"));
                    assert_eq!(rule, format!("/properties/{field}/format"));
                    assert!(message.starts_with("is not a valid `"), "{message}");
                }
                other => panic!("{field}: unexpected {other}"),
            }
        }
    }

    /// Issue 11, item 10: messages quoted the refused value.
    #[test]
    fn refusals_name_the_path_and_rule_but_never_the_value() {
        const CANARY: &str = "CANARY-schema-c3";
        let registry = SchemaRegistry::new();
        let kind = registry.register::<Signup>().unwrap();
        let mut cases = Vec::new();
        for (field, value) in [
            ("count", Value::from(CANARY)),
            ("occurredAt", Value::from(CANARY)),
            ("email", Value::from(CANARY)),
            ("user", serde_json::json!([CANARY])),
        ] {
            let mut payload = signup();
            payload[field] = value;
            cases.push((field, payload));
        }
        let mut extra = signup();
        extra["unexpected"] = CANARY.into();
        for (field, payload) in cases {
            let err = registry.validate("signup", &payload).unwrap_err().to_string();
            assert!(!err.contains("CANARY"), "{err}");
            assert!(err.contains(&format!("`/{field}`")), "{err}");
            let direct = kind.validate(&payload).unwrap_err().to_string();
            assert!(!direct.contains("CANARY"), "{direct}");
            assert!(!direct.contains("nothing was enqueued"), "{direct}");
        }
        let err = registry
            .validate("signup", &serde_json::json!({ "count": 1 }))
            .unwrap_err();
        assert!(err.to_string().contains("lacks the required property"), "{err}");
        let err = registry
            .validate("signup", &serde_json::json!({ "count": CANARY }))
            .unwrap_err();
        assert!(!err.to_string().contains("CANARY"), "{err}");

        // The opt-in shows values.
        let mut payload = signup();
        payload["count"] = CANARY.into();
        let shown = SchemaRegistry::new().show_values(true);
        shown.register::<Signup>().unwrap();
        let err = shown.validate("signup", &payload).unwrap_err().to_string();
        assert!(err.contains(CANARY), "{err}");
    }

    #[test]
    fn type_messages_say_what_was_expected() {
        let registry = SchemaRegistry::new();
        registry.register::<Resize>().unwrap();
        let err = registry
            .validate("resize", &serde_json::json!({ "width": "wide", "name": "x" }))
            .unwrap_err();
        match err {
            Error::InvalidPayload { message, rule, .. } => {
                assert_eq!(message, "must be of type integer");
                assert_eq!(rule, "/properties/width/type");
            }
            other => panic!("unexpected {other}"),
        }
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
