//! IAM policy documents compared by meaning, not by text: keys sorted, one-item
//! lists as their item, list order ignored, whitespace gone.

use serde_json::Value as Json;

/// The canonical text of a policy document.
pub fn canonical(doc: &Json) -> String {
    normalize(doc).to_string()
}

fn normalize(v: &Json) -> Json {
    match v {
        Json::Object(m) => {
            let sorted: std::collections::BTreeMap<String, Json> =
                m.iter().map(|(k, v)| (k.clone(), normalize(v))).collect();
            Json::Object(sorted.into_iter().collect())
        }
        Json::Array(items) if items.len() == 1 => normalize(&items[0]),
        Json::Array(items) => {
            let mut items: Vec<Json> = items.iter().map(normalize).collect();
            items.sort_by_key(|i| i.to_string());
            Json::Array(items)
        }
        other => other.clone(),
    }
}

/// A policy as IAM returns it: URL-encoded JSON (the raw API), or plain JSON.
pub fn canonical_from_aws(text: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()?;
    let doc: Json = serde_json::from_str(&decoded)
        .or_else(|_| serde_json::from_str(text))
        .ok()?;
    Some(canonical(&doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_meaning_same_text() {
        let a: Json = serde_json::from_str(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":["eks.amazonaws.com"]},"Action":"sts:AssumeRole"}]}"#).unwrap();
        let b: Json = serde_json::from_str(
            r#"{ "Statement": { "Action": ["sts:AssumeRole"], "Principal": { "Service": "eks.amazonaws.com" }, "Effect": "Allow" },
                 "Version": "2012-10-17" }"#,
        )
        .unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        let c: Json = serde_json::from_str(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":{"Service":"eks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#).unwrap();
        assert_ne!(canonical(&a), canonical(&c));
    }

    #[test]
    fn list_order_does_not_count() {
        let a: Json = serde_json::from_str(r#"{"Action":["b","a"]}"#).unwrap();
        let b: Json = serde_json::from_str(r#"{"Action":["a","b"]}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
    }

    #[test]
    fn url_encoded_documents_are_read() {
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(
            canonical_from_aws(encoded).unwrap(),
            r#"{"Statement":[],"Version":"2012-10-17"}"#
        );
    }
}
