//! Namespace schemas (JSON Schema draft 2020-12, through the `jsonschema` crate) and
//! readable diffs.
//!
//! Schemas may not fetch anything: `$ref` resolves only within the schema itself (the
//! crate's HTTP and file resolvers are not built in). Unknown keywords, `x-` extensions
//! among them, are ignored as the draft says; paxkv reads one: `x-paxkv-description`
//! (free text, shown by `paxkv ns describe`).

use serde_json::Value;

use super::{Error, Result};

/// The schema `text` compiled, or InvalidArgument saying why it is not one.
pub fn compile(text: &[u8]) -> Result<(Value, jsonschema::Validator)> {
    let value: Value = serde_json::from_slice(text)
        .map_err(|error| Error::Invalid(format!("the schema is not JSON: {error}")))?;
    let validator = jsonschema::draft202012::new(&value)
        .map_err(|error| Error::Invalid(format!("the schema is not a valid schema: {error}")))?;
    Ok((value, validator))
}

/// SchemaViolation for the first place `value` fails `schema`.
pub fn check(schema: &str, value: &Value, namespace: &str, key: &str) -> Result<()> {
    let (_, validator) = compile(schema.as_bytes())
        .map_err(|error| Error::Internal(format!("stored schema of {namespace}: {error}")))?;
    match validator.validate(value) {
        Ok(()) => Ok(()),
        Err(error) => Err(Error::SchemaViolation {
            namespace: namespace.to_string(),
            key: key.to_string(),
            pointer: error.instance_path().to_string(),
            rule: error.kind().keyword().to_string(),
            message: format!("{error} (schema path {})", error.schema_path()),
        }),
    }
}

/// A unified diff of two JSON values pretty-printed (or of two byte strings as text).
pub fn text_diff(from: &[u8], to: &[u8], from_name: &str, to_name: &str) -> String {
    let pretty = |bytes: &[u8]| match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_default() + "\n",
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    let (from, to) = (pretty(from), pretty(to));
    similar::TextDiff::from_lines(&from, &to)
        .unified_diff()
        .context_radius(3)
        .header(from_name, to_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_violation_names_the_pointer_and_the_rule() {
        let schema = r#"{"type":"object","properties":{"port":{"type":"integer","maximum":65535}},
                         "required":["port"]}"#;
        let ok = serde_json::json!({"port": 80});
        check(schema, &ok, "/svc", "web").unwrap();
        let bad = serde_json::json!({"port": 70000});
        match check(schema, &bad, "/svc", "web") {
            Err(Error::SchemaViolation { pointer, rule, .. }) => {
                assert_eq!(pointer, "/port");
                assert_eq!(rule, "maximum");
            }
            other => panic!("{other:?}"),
        }
        let missing = serde_json::json!({});
        match check(schema, &missing, "/svc", "web") {
            Err(Error::SchemaViolation { rule, .. }) => assert_eq!(rule, "required"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_invalid_schema_is_refused() {
        assert!(matches!(compile(b"{\"type\": 5}"), Err(Error::Invalid(_))));
        assert!(matches!(compile(b"not json"), Err(Error::Invalid(_))));
        assert!(compile(br#"{"x-paxkv-description": "ok", "type": "object"}"#).is_ok());
    }

    #[test]
    fn text_diff_shows_changed_lines() {
        let diff = text_diff(br#"{"a":1,"b":2}"#, br#"{"a":1,"b":3}"#, "r1", "r2");
        assert!(diff.contains("-  \"b\": 2"), "{diff}");
        assert!(diff.contains("+  \"b\": 3"), "{diff}");
    }
}
