//! A filter's `event_fields`: which fields of each room event a client
//! wants. Each entry is a dotted path (`content.body`); a literal `.` or
//! `\` in a field name is escaped with `\` (`content.m\.relates_to`). The
//! spec lets a server include more than was asked for; Myelin includes
//! exactly the fields named, and leaves out paths that lead nowhere.

use serde_json::{Map, Value};

/// Parsed `event_fields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFields {
    paths: Vec<Vec<String>>,
}

impl EventFields {
    /// Parses the filter's entries; `None` for an empty list, which
    /// (as in Synapse) selects nothing away.
    pub fn new(fields: &[String]) -> Option<Self> {
        (!fields.is_empty()).then(|| Self {
            paths: fields.iter().map(|field| split_path(field)).collect(),
        })
    }

    /// The named fields of `event`, an event object, at their places.
    pub fn project(&self, event: &Value) -> Value {
        let mut projected = Map::new();
        for path in &self.paths {
            if let Some(value) = lookup(event, path) {
                insert(&mut projected, path, value.clone());
            }
        }
        Value::Object(projected)
    }
}

/// Splits `a.b\.c` into `["a", "b.c"]`: a `\` takes the next character
/// literally.
fn split_path(field: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => part.extend(chars.next()),
            '.' => parts.push(std::mem::take(&mut part)),
            c => part.push(c),
        }
    }
    parts.push(part);
    parts
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |value, key| value.as_object()?.get(key))
}

/// Puts `value` at `path` in `target`, making the objects on the way. A
/// field already copied whole (`content` before `content.body`) is kept.
fn insert(target: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut object = target;
    for key in parents {
        let entry = object
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        match entry {
            Value::Object(inner) => object = inner,
            // A whole value is already there, with everything below it.
            _ => return,
        }
    }
    object.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(paths: &[&str]) -> EventFields {
        EventFields::new(&paths.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>())
            .expect("some fields")
    }

    #[test]
    fn paths_split_on_unescaped_dots() {
        assert_eq!(split_path("content.body"), ["content", "body"]);
        assert_eq!(
            split_path(r"content.m\.relates_to"),
            ["content", "m.relates_to"]
        );
        assert_eq!(split_path(r"a\\.b"), [r"a\", "b"]);
        assert_eq!(split_path("type"), ["type"]);
        assert_eq!(split_path(r"trailing\"), ["trailing"]);
    }

    #[test]
    fn only_the_named_fields_are_kept() {
        let event = json!({
            "type": "m.room.message",
            "sender": "@a:x",
            "content": { "body": "hi", "msgtype": "m.text", "m.relates_to": { "rel_type": "x" } },
            "unsigned": { "age": 5 },
        });
        assert_eq!(
            fields(&["type", "content.body", r"content.m\.relates_to.rel_type"]).project(&event),
            json!({
                "type": "m.room.message",
                "content": { "body": "hi", "m.relates_to": { "rel_type": "x" } },
            })
        );
        // A whole object and a field inside it, in either order.
        let whole = json!({ "content": event["content"].clone() });
        assert_eq!(fields(&["content", "content.body"]).project(&event), whole);
        assert_eq!(fields(&["content.body", "content"]).project(&event), whole);
        // Paths that lead nowhere, or through a non-object, add nothing.
        assert_eq!(
            fields(&["nope", "type.inner", "content.body.x", ""]).project(&event),
            json!({})
        );
        assert_eq!(EventFields::new(&[]), None);
    }
}
