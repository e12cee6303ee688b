//! RFC 7386 merge patch, RFC 6902 JSON patch, and the approximation of
//! server-side apply used by the fake server.

use serde_json::{Map, Value};

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// Why a JSON patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonPatchError {
    /// The patch document itself is malformed (HTTP 400).
    Malformed(String),
    /// An operation failed against the document (HTTP 422), e.g. a failed `test`.
    Failed(String),
}

fn parse_pointer(path: &str) -> Result<Vec<String>, JsonPatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(JsonPatchError::Malformed(format!(
            "JSON pointer {path:?} does not start with '/'"
        )));
    };
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for seg in path {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(parse_index(seg, a.len())?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn parse_index(seg: &str, _len: usize) -> Option<usize> {
    if seg.len() > 1 && seg.starts_with('0') {
        return None;
    }
    seg.parse().ok()
}

fn parent_mut<'a>(
    doc: &'a mut Value,
    path: &[String],
    original: &str,
) -> Result<(&'a mut Value, String), JsonPatchError> {
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| JsonPatchError::Failed("cannot address the root here".into()))?;
    let mut cur = doc;
    for seg in parents {
        cur = match cur {
            Value::Object(m) => m.get_mut(seg),
            Value::Array(a) => {
                let len = a.len();
                parse_index(seg, len).and_then(move |i| a.get_mut(i))
            }
            _ => None,
        }
        .ok_or_else(|| JsonPatchError::Failed(format!("doc is missing path: {original:?}")))?;
    }
    Ok((cur, last.clone()))
}

fn add(
    doc: &mut Value,
    path: &[String],
    value: Value,
    original: &str,
) -> Result<(), JsonPatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(doc, path, original)?;
    match parent {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            match parse_index(&last, a.len()) {
                Some(i) if i <= a.len() => {
                    a.insert(i, value);
                    Ok(())
                }
                _ => Err(JsonPatchError::Failed(format!(
                    "add operation does not apply: index out of bounds: {original:?}"
                ))),
            }
        }
        _ => Err(JsonPatchError::Failed(format!(
            "add operation does not apply: doc is missing path: {original:?}"
        ))),
    }
}

fn remove(doc: &mut Value, path: &[String], original: &str) -> Result<Value, JsonPatchError> {
    let missing = || {
        JsonPatchError::Failed(format!(
            "remove operation does not apply: doc is missing path: {original:?}"
        ))
    };
    let (parent, last) = parent_mut(doc, path, original)?;
    match parent {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => match parse_index(&last, a.len()) {
            Some(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

/// Applies an RFC 6902 JSON patch (all or nothing).
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| JsonPatchError::Malformed("a JSON patch must be an array".into()))?;
    let mut work = doc.clone();
    for op in ops {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| JsonPatchError::Malformed("operation has no 'op'".into()))?;
        let path_str = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| JsonPatchError::Malformed(format!("operation {kind} has no 'path'")))?;
        let target = parse_pointer(path_str)?;
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                JsonPatchError::Malformed(format!("operation {kind} has no 'value'"))
            })
        };
        let from = || -> Result<(String, Vec<String>), JsonPatchError> {
            let f = op.get("from").and_then(Value::as_str).ok_or_else(|| {
                JsonPatchError::Malformed(format!("operation {kind} has no 'from'"))
            })?;
            Ok((f.to_string(), parse_pointer(f)?))
        };
        match kind {
            "add" => add(&mut work, &target, value()?, path_str)?,
            "remove" => {
                remove(&mut work, &target, path_str)?;
            }
            "replace" => {
                let v = value()?;
                if target.is_empty() {
                    work = v;
                } else {
                    if get(&work, &target).is_none() {
                        return Err(JsonPatchError::Failed(format!(
                            "replace operation does not apply: doc is missing key: {path_str}"
                        )));
                    }
                    remove(&mut work, &target, path_str)?;
                    add(&mut work, &target, v, path_str)?;
                }
            }
            "move" => {
                let (from_str, from) = from()?;
                if target.len() > from.len() && target[..from.len()] == from[..] {
                    return Err(JsonPatchError::Failed(format!(
                        "move operation does not apply: cannot move {from_str:?} into its child {path_str:?}"
                    )));
                }
                let v = remove(&mut work, &from, &from_str)?;
                add(&mut work, &target, v, path_str)?;
            }
            "copy" => {
                let (from_str, from) = from()?;
                let v = get(&work, &from).cloned().ok_or_else(|| {
                    JsonPatchError::Failed(format!(
                        "copy operation does not apply: doc is missing from path: {from_str:?}"
                    ))
                })?;
                add(&mut work, &target, v, path_str)?;
            }
            "test" => {
                let expected = op.get("value").cloned().unwrap_or(Value::Null);
                // Like evanphx/json-patch (used by the real server): a missing
                // value tests equal to null.
                let actual = get(&work, &target).cloned().unwrap_or(Value::Null);
                if actual != expected {
                    return Err(JsonPatchError::Failed(format!(
                        "testing value {path_str} failed: test failed"
                    )));
                }
            }
            other => {
                return Err(JsonPatchError::Malformed(format!(
                    "unexpected kind of operation: {other:?}"
                )));
            }
        }
    }
    *doc = work;
    Ok(())
}

/// Server-side apply, approximated: fields this manager applied before but
/// omits now are removed; then maps are merged recursively and lists are
/// replaced, except `metadata.finalizers` (a set) and
/// `metadata.ownerReferences` (keyed by uid), which are merged with what
/// other managers put there.
pub fn apply_merge(live: &mut Value, applied: &Value, previous: Option<&Value>) {
    if let Some(prev) = previous {
        remove_dropped(live, applied, prev, 0, "");
        merge_owned_lists(live, applied, prev);
    }
    apply_rec(live, applied, &mut Vec::new());
}

fn remove_dropped(live: &mut Value, applied: &Value, prev: &Value, depth: usize, parent: &str) {
    let (Some(live_m), Some(prev_m)) = (live.as_object_mut(), prev.as_object()) else {
        return;
    };
    for (k, pv) in prev_m {
        if depth == 0 && matches!(k.as_str(), "apiVersion" | "kind") {
            continue;
        }
        if depth == 1
            && parent == "metadata"
            && matches!(
                k.as_str(),
                "name" | "namespace" | "resourceVersion" | "finalizers" | "ownerReferences"
            )
        {
            continue;
        }
        match applied.get(k) {
            None => {
                live_m.remove(k);
            }
            Some(av) if av.is_object() && pv.is_object() => {
                if let Some(lv) = live_m.get_mut(k) {
                    remove_dropped(lv, av, pv, depth + 1, k);
                }
            }
            Some(_) => {}
        }
    }
}

fn list_key(item: &Value, field: &str) -> Value {
    if field == "ownerReferences" {
        item.get("uid").cloned().unwrap_or(Value::Null)
    } else {
        item.clone()
    }
}

/// For the merged lists, drop the items this manager applied before and omits now.
fn merge_owned_lists(live: &mut Value, applied: &Value, prev: &Value) {
    for field in ["finalizers", "ownerReferences"] {
        let prev_items: Vec<Value> = prev
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|i| list_key(i, field)).collect())
            .unwrap_or_default();
        let now_items: Vec<Value> = applied
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|i| list_key(i, field)).collect())
            .unwrap_or_default();
        if let Some(arr) = live
            .pointer_mut(&format!("/metadata/{field}"))
            .and_then(Value::as_array_mut)
        {
            arr.retain(|i| {
                let k = list_key(i, field);
                !prev_items.contains(&k) || now_items.contains(&k)
            });
        }
    }
}

fn apply_rec(live: &mut Value, applied: &Value, path: &mut Vec<String>) {
    match applied {
        Value::Object(am) => {
            if !live.is_object() {
                *live = Value::Object(Map::new());
            }
            if let Value::Object(lm) = live {
                for (k, v) in am {
                    if v.is_null() {
                        lm.remove(k);
                        continue;
                    }
                    path.push(k.clone());
                    apply_rec(lm.entry(k.clone()).or_insert(Value::Null), v, path);
                    path.pop();
                }
            }
        }
        Value::Array(items)
            if path.len() == 2
                && path[0] == "metadata"
                && (path[1] == "finalizers" || path[1] == "ownerReferences") =>
        {
            let field = path[1].clone();
            let mut merged: Vec<Value> = live.as_array().cloned().unwrap_or_default();
            for item in items {
                let key = list_key(item, &field);
                if let Some(existing) = merged.iter_mut().find(|i| list_key(i, &field) == key) {
                    *existing = item.clone();
                } else {
                    merged.push(item.clone());
                }
            }
            *live = Value::Array(merged);
        }
        other => *live = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_patch(&mut t, &json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"a": {"b": [1, 2]}, "x": 1});
        json_patch(
            &mut d,
            &json!([
                {"op": "add", "path": "/a/b/-", "value": 3},
                {"op": "add", "path": "/a/b/0", "value": 0},
                {"op": "remove", "path": "/x"},
                {"op": "replace", "path": "/a/b/1", "value": 10},
                {"op": "copy", "from": "/a/b", "path": "/c"},
                {"op": "move", "from": "/c", "path": "/d"},
                {"op": "test", "path": "/d", "value": [0, 10, 2, 3]},
                {"op": "test", "path": "/missing", "value": null},
                {"op": "add", "path": "/e~1f", "value": true},
            ]),
        )
        .unwrap();
        assert_eq!(
            d,
            json!({"a": {"b": [0, 10, 2, 3]}, "d": [0, 10, 2, 3], "e/f": true})
        );
    }

    #[test]
    fn json_patch_failures_leave_doc_unchanged() {
        let mut d = json!({"a": 1});
        let err = json_patch(
            &mut d,
            &json!([{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 2}]),
        )
        .unwrap_err();
        assert!(matches!(err, JsonPatchError::Failed(_)));
        assert_eq!(d, json!({"a": 1}));
        assert!(matches!(
            json_patch(&mut d, &json!([{"op": "remove", "path": "/zzz"}])),
            Err(JsonPatchError::Failed(_))
        ));
        assert!(matches!(
            json_patch(&mut d, &json!({"op": "remove"})),
            Err(JsonPatchError::Malformed(_))
        ));
        assert!(matches!(
            json_patch(&mut d, &json!([{"op": "frobnicate", "path": "/a"}])),
            Err(JsonPatchError::Malformed(_))
        ));
    }

    #[test]
    fn apply_removes_fields_dropped_by_same_manager() {
        let mut live = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]}, "spec": {"p": 1, "q": 2}});
        let prev = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]}, "spec": {"p": 1, "q": 2}});
        let now = json!({"metadata": {"labels": {}}, "spec": {"p": 5}});
        apply_merge(&mut live, &now, Some(&prev));
        assert_eq!(
            live,
            json!({"metadata": {"labels": {"b": "2"}, "finalizers": ["y"]}, "spec": {"p": 5}})
        );
    }
}
