//! Pagination across upstreams: the gateway's cursor carries each upstream's own cursor.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::BTreeMap;

/// Encodes the pending upstream cursors as one opaque cursor.
pub fn encode(pending: &BTreeMap<String, String>) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(pending).expect("strings serialize"))
}

/// Decodes a cursor made by [`encode`]; `None` if it was not.
pub fn decode(cursor: &str) -> Option<BTreeMap<String, String>> {
    if cursor.len() > 16 * 1024 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&bytes).ok()?;
    (!map.is_empty()).then_some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let mut m = BTreeMap::new();
        m.insert("a".to_owned(), "page-2".to_owned());
        assert_eq!(decode(&encode(&m)), Some(m));
        assert_eq!(decode("not base64!"), None);
        assert_eq!(decode(&URL_SAFE_NO_PAD.encode(b"{}")), None);
    }
}
