//! Splitting configuration text into Kubernetes objects, the one way every crate that reads
//! Istio resources does it: security policies here, the service registry's networking kinds in
//! `trustmesh-registry`. Users keep all kinds side by side in one folder (often one file), so
//! both readers must agree on what a document is, where it is (`file:document:items[n]`), and
//! what is wrong with the text around the objects.
//!
//! Handles multi-document files and `kind: List` (as `kubectl get -o yaml` prints); the text is
//! bounded by [`crate::shape`] first. What each object means is the caller's business.

use serde::Deserialize;

use crate::problem::{Location, Problem};

/// One piece of a file, in file order.
#[derive(Debug)]
pub enum Piece {
    /// One object (a YAML mapping). `location.field` is empty, or `items[n]` inside a List.
    Object(Location, serde_yaml::Value),
    /// Something around the objects is wrong (a document that is not a mapping, a List without
    /// items); the rest of the file is still read.
    Problem(Problem),
    /// The text is not YAML from this point: nothing after it was read (the problem is marked
    /// [`Problem::unreadable`]).
    Unreadable(Problem),
}

/// Splits one file's text; `file` only labels locations.
pub fn split(file: &str, text: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    // Bounded before the YAML parser, whose cost is quadratic in bracket nesting: such text is
    // unreadable, like text that is not YAML.
    if let Err(message) = crate::shape::check(text) {
        let problem = Problem::new(
            Location::new(file, 1, ""),
            format!("not valid YAML: {message}"),
        )
        .hint("nothing in this file was read")
        .unreadable();
        out.push(Piece::Unreadable(problem));
        return out;
    }
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let value = match serde_yaml::Value::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                let problem =
                    Problem::new(Location::new(file, doc, ""), format!("not valid YAML: {e}"))
                        .hint("fix the YAML syntax; nothing after this point in the file was read")
                        .unreadable();
                out.push(Piece::Unreadable(problem));
                return out;
            }
        };
        if value.is_null() {
            continue;
        }
        let loc = Location::new(file, doc, "");
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
            match value.get("items").and_then(|i| i.as_sequence()) {
                Some(items) => {
                    for (n, item) in items.iter().enumerate() {
                        object(loc.at(format!("items[{n}]")), item.clone(), &mut out);
                    }
                }
                None => out.push(Piece::Problem(
                    Problem::new(loc.at("items"), "a List must have an `items` sequence")
                        .hint("use the output of `kubectl get ... -o yaml` unchanged"),
                )),
            }
        } else {
            object(loc, value, &mut out);
        }
    }
    out
}

fn object(loc: Location, value: serde_yaml::Value, out: &mut Vec<Piece>) {
    if value.is_mapping() {
        out.push(Piece::Object(loc, value));
    } else {
        out.push(Piece::Problem(
            Problem::new(
                loc,
                "expected a Kubernetes object (a mapping with apiVersion and kind)",
            )
            .hint("each YAML document must be one resource"),
        ));
    }
}

/// The `kind` and `apiVersion` of an object (empty when absent).
pub fn kind_and_api(value: &serde_yaml::Value) -> (String, String) {
    let get = |k: &str| {
        value
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    (get("kind"), get("apiVersion"))
}
