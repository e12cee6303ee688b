//! Structural-schema handling for custom resources, as the real
//! apiextensions-apiserver does on writes: pruning of unknown fields,
//! defaulting, and validation of the common OpenAPI v3 keywords.

use serde_json::{Map, Value};

/// A validation failure: `(field path, causeType, message)`.
pub type Cause = (String, String, String);

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Prunes fields the schema does not declare (and nulls of non-nullable
/// fields); returns the pruned field paths.
pub fn prune(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut pruned = Vec::new();
    if let Value::Object(m) = obj {
        let props = schema.get("properties").and_then(Value::as_object);
        let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
        let keys: Vec<String> = m.keys().cloned().collect();
        for k in keys {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match props.and_then(|p| p.get(&k)) {
                Some(sub) => {
                    if let Some(v) = m.get_mut(&k) {
                        if v.is_null() && !flag(sub, "nullable") {
                            m.remove(&k);
                        } else {
                            prune_rec(v, sub, &k, &mut pruned);
                        }
                    }
                }
                None if preserve => {}
                None => {
                    m.remove(&k);
                    pruned.push(k);
                }
            }
        }
    }
    pruned
}

fn prune_rec(v: &mut Value, schema: &Value, path: &str, pruned: &mut Vec<String>) {
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props
                    .and_then(|p| p.get(&k))
                    .or_else(|| additional.filter(|a| a.is_object()));
                match sub {
                    Some(sub) => {
                        if let Some(child) = m.get_mut(&k) {
                            if child.is_null() && !flag(sub, "nullable") {
                                m.remove(&k);
                            } else {
                                prune_rec(child, sub, &join(path, &k), pruned);
                            }
                        }
                    }
                    None if preserve || additional.and_then(Value::as_bool) == Some(true) => {}
                    None => {
                        m.remove(&k);
                        pruned.push(join(path, &k));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_rec(item, sub, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

/// Applies `default` values of absent properties.
pub fn apply_defaults(v: &mut Value, schema: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    if !m.contains_key(k)
                        && let Some(d) = sub.get("default")
                    {
                        m.insert(k.clone(), d.clone());
                    }
                }
                for (k, sub) in props {
                    if let Some(child) = m.get_mut(k) {
                        apply_defaults(child, sub);
                    }
                }
            } else if let Some(sub) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in m.values_mut() {
                    apply_defaults(child, sub);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for item in items {
                    apply_defaults(item, sub);
                }
            }
        }
        _ => {}
    }
}

/// Validates a whole custom resource against its version's schema.
pub fn validate(obj: &Value, schema: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let (Value::Object(m), Some(props)) =
        (obj, schema.get("properties").and_then(Value::as_object))
    {
        for (k, sub) in props {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(v) = m.get(k) {
                validate_rec(v, sub, k, &mut causes);
            }
        }
        check_required(m, schema, "", &mut causes);
    }
    causes
}

fn check_required(m: &Map<String, Value>, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                causes.push((
                    join(path, r),
                    "FieldValueRequired".into(),
                    "Required value".into(),
                ));
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn validate_rec(v: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if !check_type(v, schema, path, causes) {
        return;
    }
    check_enum(v, schema, path, causes);
    check_bounds(v, schema, path, causes);
    match v {
        Value::String(s) => check_len(v, schema, path, causes, s.chars().count(), "Length"),
        Value::Array(items) => {
            check_len(v, schema, path, causes, items.len(), "Items");
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_rec(item, sub, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(m) => {
            check_len(v, schema, path, causes, m.len(), "Properties");
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in m {
                if flag(schema, "x-kubernetes-embedded-resource")
                    && matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    continue;
                }
                if let Some(sub) = props.and_then(|p| p.get(k)).or(additional) {
                    validate_rec(child, sub, &join(path, k), causes);
                }
            }
            check_required(m, schema, path, causes);
        }
        _ => {}
    }
}

/// A `FieldValueInvalid` cause for `v` at `path`.
fn invalid(v: &Value, path: &str, msg: &str) -> Cause {
    (
        path.to_string(),
        "FieldValueInvalid".into(),
        format!("Invalid value: {}: {msg}", short(v)),
    )
}

/// A number-valued keyword of the schema (`minimum`, `maxLength`, ...).
fn num(schema: &Value, keyword: &str) -> Option<f64> {
    schema.get(keyword).and_then(Value::as_f64)
}

/// Checks `type`, `nullable` and `x-kubernetes-int-or-string`; returns
/// whether the value is of an acceptable type, so its contents can be checked.
fn check_type(v: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) -> bool {
    if v.is_null() {
        if !flag(schema, "nullable") {
            causes.push(invalid(
                v,
                path,
                &format!(
                    "{path} in body must be of type {}: \"null\"",
                    schema
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("object")
                ),
            ));
        }
        return false;
    }
    let actual = type_name(v);
    if flag(schema, "x-kubernetes-int-or-string") {
        if !matches!(actual, "integer" | "string") {
            causes.push(invalid(
                v,
                path,
                &format!("{path} in body must be of type int-or-string: \"{actual}\""),
            ));
            return false;
        }
    } else if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let ok = expected == actual || (expected == "number" && actual == "integer");
        if !ok {
            causes.push(invalid(
                v,
                path,
                &format!("{path} in body must be of type {expected}: \"{actual}\""),
            ));
            return false;
        }
    }
    true
}

/// Checks `enum`.
fn check_enum(v: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        let list: Vec<String> = options.iter().map(short).collect();
        causes.push((
            path.to_string(),
            "FieldValueNotSupported".into(),
            format!(
                "Unsupported value: {}: supported values: {}",
                short(v),
                list.join(", ")
            ),
        ));
    }
}

/// Checks `minimum` and `maximum` of numbers.
fn check_bounds(v: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(x) = v.as_f64() else {
        return;
    };
    if let Some(min) = num(schema, "minimum")
        && x < min
    {
        causes.push(invalid(
            v,
            path,
            &format!("{path} in body should be greater than or equal to {min}"),
        ));
    }
    if let Some(max) = num(schema, "maximum")
        && x > max
    {
        causes.push(invalid(
            v,
            path,
            &format!("{path} in body should be less than or equal to {max}"),
        ));
    }
}

/// Checks `min{what}` and `max{what}` (`what`: `Length`, `Items` or `Properties`)
/// against the length `len` of `v`.
fn check_len(
    v: &Value,
    schema: &Value,
    path: &str,
    causes: &mut Vec<Cause>,
    len: usize,
    what: &str,
) {
    // Lengths of API values are far below 2^52, so the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let len_f = len as f64;
    if let Some(min) = num(schema, &format!("min{what}"))
        && len_f < min
    {
        causes.push(invalid(
            v,
            path,
            &format!(
                "{path} in body should have at least {min} {}",
                what.to_lowercase()
            ),
        ));
    }
    if let Some(max) = num(schema, &format!("max{what}"))
        && len_f > max
    {
        causes.push(invalid(
            v,
            path,
            &format!(
                "{path} in body should have at most {max} {}",
                what.to_lowercase()
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "replicas": {"type": "integer", "default": 1, "minimum": 0},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "opt": {"type": "string", "nullable": true},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                },
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
            }
        })
    }

    #[test]
    fn prunes_defaults_and_validates() {
        let mut obj = json!({
            "apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"},
            "spec": {"name": "n", "bogus": 1, "opt": null, "tags": {"a": "b"}, "free": {"x": {"y": 1}}, "mode": null},
            "junk": true,
        });
        let pruned = prune(&mut obj, &schema());
        assert_eq!(pruned, vec!["junk".to_string(), "spec.bogus".to_string()]);
        apply_defaults(&mut obj, &schema());
        assert_eq!(obj["spec"]["replicas"], json!(1));
        assert_eq!(obj["spec"]["opt"], Value::Null);
        assert!(obj["spec"].get("mode").is_none());
        assert!(validate(&obj, &schema()).is_empty());

        let bad = json!({"spec": {"replicas": "x", "mode": "c", "name": ""}});
        let causes = validate(&bad, &schema());
        let fields: Vec<&str> = causes.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(fields, vec!["spec.mode", "spec.name", "spec.replicas"]);
        let missing = validate(&json!({"spec": {}}), &schema());
        assert_eq!(missing[0].0, "spec.name");
        assert_eq!(missing[0].1, "FieldValueRequired");
    }
}
