//! Event patterns in the EventBridge syntax, as event source mappings filter with them (`FilterCriteria`):
//! checked by [`crate::iac`] when the template is read and matched by [`crate::sources`]. Supported: nested keys
//! and lists of exact values (`{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"type": {"S": ["A", "B"]}}}}`).
//! Content filters (`prefix`, `anything-but`, `numeric`, `exists`, ...) are rejected by [`validate`], so a pattern
//! never silently matches differently here than on AWS.

use anyhow::{Result, bail};
use serde_json::Value;

/// Checks that a pattern only uses what [`matches()`] implements.
pub fn validate(pattern: &Value) -> Result<()> {
    let Value::Object(fields) = pattern else {
        bail!("a filter pattern must be a JSON object");
    };
    for (key, rule) in fields {
        match rule {
            Value::Object(_) => validate(rule).map_err(|e| e.context(format!("in key {key:?}")))?,
            Value::Array(values) => {
                if values.is_empty() {
                    bail!("key {key:?}: an empty list matches nothing");
                }
                for value in values {
                    if value.is_object() || value.is_array() {
                        bail!(
                            "key {key:?}: content filters such as {value} are not supported by the local runner (only lists of exact values)"
                        );
                    }
                }
            }
            other => bail!("key {key:?}: {other} must be a list of values or a nested pattern"),
        }
    }
    Ok(())
}

/// Whether `event` matches `pattern` (a pattern accepted by [`validate`]).
pub fn matches(pattern: &Value, event: &Value) -> bool {
    let Value::Object(fields) = pattern else {
        return false;
    };
    fields.iter().all(|(key, rule)| {
        let Some(actual) = event.get(key) else {
            return false;
        };
        match rule {
            Value::Object(_) => matches(rule, actual),
            Value::Array(allowed) => match actual {
                // A list in the event matches when any of its elements does.
                Value::Array(items) => items.iter().any(|item| allowed.iter().any(|a| equal(a, item))),
                scalar => allowed.iter().any(|a| equal(a, scalar)),
            },
            _ => false,
        }
    })
}

/// Whether any of `patterns` matches; no patterns means no filtering.
pub fn any_matches(patterns: &[Value], event: &Value) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| matches(p, event))
}

fn equal(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => expected == actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_keys_and_value_lists() {
        let pattern = json!({"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"t": {"S": ["A"]}}}});
        validate(&pattern).unwrap();
        let event = |name: &str, t: &str| json!({"eventName": name, "dynamodb": {"NewImage": {"t": {"S": t}}}});
        assert!(matches(&pattern, &event("INSERT", "A")));
        assert!(matches(&pattern, &event("MODIFY", "A")));
        assert!(!matches(&pattern, &event("REMOVE", "A")));
        assert!(!matches(&pattern, &event("INSERT", "B")));
        assert!(!matches(&pattern, &json!({"eventName": "INSERT"})));
        assert!(matches(&json!({"n": [1]}), &json!({"n": 1.0})));
        assert!(matches(&json!({"tags": ["x"]}), &json!({"tags": ["y", "x"]})));
        assert!(any_matches(&[], &json!({})));
    }

    #[test]
    fn content_filters_are_rejected() {
        assert!(validate(&json!({"a": [{"prefix": "x"}]})).is_err());
        assert!(validate(&json!({"a": {"b": [{"exists": true}]}})).is_err());
        assert!(validate(&json!({"a": "x"})).is_err());
        assert!(validate(&json!({"a": []})).is_err());
        assert!(validate(&json!(["a"])).is_err());
    }
}
