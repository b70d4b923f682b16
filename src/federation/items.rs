//! Listed items kept as the JSON text their upstream sent. A merged listing reads of each item
//! only its identifier (and, for tools, the `inputSchema` and `_meta` members it must look
//! at) and rewrites only the members it changes; every other member is copied as it came.
//! Parsing every item of every member into a `serde_json::Value` and serializing it back was
//! most of what a federated `tools/list` cost (issue 16).

use crate::protocol::jsonrpc::to_raw;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One listed item, as its upstream sent it.
pub type RawItem = Box<RawValue>;

/// The top-level members of one item, each still JSON text borrowed from the item, in the
/// order the upstream sent them.
pub(super) struct Fields<'a> {
    item: &'a RawValue,
    members: Vec<(String, &'a RawValue)>,
    /// A key given twice: the item is then written anew, the last one winning, as when it
    /// was read into a `Value` (a client that kept the first could see another name).
    repeated: bool,
}

impl<'a> Fields<'a> {
    /// The members of `item`; `None` when it is not a JSON object (such items are skipped).
    pub(super) fn of(item: &'a RawValue) -> Option<Fields<'a>> {
        struct Members<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Members<'a> {
            type Value = (Vec<(String, &'a RawValue)>, bool);
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members: Vec<(String, &'a RawValue)> = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                    members.push((k, v));
                }
                // Sorted rather than compared pairwise: an upstream chooses how many members
                // an item has, and pairwise comparison would be quadratic in that.
                let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                let repeated = keys.windows(2).any(|w| w[0] == w[1]);
                Ok((members, repeated))
            }
        }
        let mut de = serde_json::Deserializer::from_str(item.get());
        let (members, repeated) =
            serde::Deserializer::deserialize_map(&mut de, Members(std::marker::PhantomData))
                .ok()?;
        Some(Fields {
            item,
            members,
            repeated,
        })
    }

    /// A member, as JSON text (the last one of a repeated key, as a `Value` would keep).
    pub(super) fn raw(&self, key: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }

    /// A member that is a JSON string, unescaped.
    pub(super) fn string(&self, key: &str) -> Option<String> {
        serde_json::from_str(self.raw(key)?.get()).ok()
    }

    /// The item with some members replaced (`replaced` holds their new JSON text): the
    /// item's own text with those values spliced in, every other byte as it came.
    pub(super) fn with(&self, replaced: &[(&str, RawItem)]) -> RawItem {
        let text = self.item.get();
        let base = text.as_ptr() as usize;
        let mut spans: Vec<(usize, usize, &str)> = Vec::with_capacity(replaced.len());
        for (k, v) in replaced {
            match self.raw(k) {
                Some(old) if !self.repeated => {
                    let start = old.get().as_ptr() as usize - base;
                    spans.push((start, start + old.get().len(), v.get()));
                }
                _ => return self.rewritten(replaced),
            }
        }
        spans.sort_unstable_by_key(|s| s.0);
        let mut out = String::with_capacity(text.len() + 64);
        let mut at = 0;
        for (start, end, new) in spans {
            out.push_str(&text[at..start]);
            out.push_str(new);
            at = end;
        }
        out.push_str(&text[at..]);
        // SAFETY: `text` is one well-formed JSON object without surrounding whitespace (the
        // text of a `RawValue`), and each splice puts a whole JSON value (a `RawValue`'s text)
        // exactly where one of its members' values was, so `out` is one too. Checking it
        // again would cost as much as writing the item anew.
        unsafe { RawValue::from_string_unchecked(out) }
    }

    /// The item written anew from its members (keys sorted, the last of a repeated one kept).
    fn rewritten(&self, replaced: &[(&str, RawItem)]) -> RawItem {
        let mut map: BTreeMap<&str, &RawValue> = BTreeMap::new();
        for (k, v) in &self.members {
            map.insert(k, v);
        }
        for (k, v) in replaced {
            map.insert(k, v);
        }
        serde_json::value::to_raw_value(&map).expect("JSON text serializes")
    }
}

/// Items as `Value`s (for the catalog, which pins whole definitions).
pub(super) fn values(items: Vec<RawItem>) -> Vec<Value> {
    items
        .iter()
        .filter_map(|i| serde_json::from_str(i.get()).ok())
        .collect()
}

/// `Value`s as items.
pub(super) fn raw(items: Vec<Value>) -> Vec<RawItem> {
    items.iter().map(to_raw).collect()
}

/// A list result: the items, kept as JSON text, and the result's other members.
#[derive(Debug, Clone)]
pub struct ListResult {
    items_key: &'static str,
    items: Vec<RawItem>,
    fields: Map<String, Value>,
}

impl ListResult {
    /// A result listing `items` under `items_key` (`tools`, `prompts`…).
    pub fn new(items_key: &'static str, items: Vec<RawItem>) -> ListResult {
        ListResult {
            items_key,
            items,
            fields: Map::new(),
        }
    }

    /// The items, as JSON text.
    pub fn items(&self) -> &[RawItem] {
        &self.items
    }

    /// The result's members other than the items (`nextCursor`, `resultType`, hints…).
    pub fn fields_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.fields
    }

    /// The whole result as a `Value` (tests, and callers that edit items).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(to_raw(self).get()).expect("a list result is JSON")
    }
}

impl crate::protocol::stateless::ResultFields for ListResult {
    fn fields(&mut self) -> &mut Map<String, Value> {
        &mut self.fields
    }
}

impl Serialize for ListResult {
    /// Members in key order, the items among them where their key sorts, as a `Map` would.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.fields.len() + 1))?;
        let mut items = Some(&self.items);
        for (k, v) in &self.fields {
            if k.as_str() == self.items_key {
                continue; // the items win, as a later insert of the same key would
            }
            if k.as_str() > self.items_key
                && let Some(i) = items.take()
            {
                map.serialize_entry(self.items_key, i)?;
            }
            map.serialize_entry(k, v)?;
        }
        if let Some(i) = items {
            map.serialize_entry(self.items_key, i)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_keep_their_text_and_order_and_replaced_ones_change() {
        let item = to_raw(&serde_json::json!({"name": "echo", "b": {"x": [1, 2.5]}, "a": "é"}));
        let f = Fields::of(&item).unwrap();
        assert_eq!(f.string("name").as_deref(), Some("echo"));
        let renamed = [("name", to_raw(&Value::String("p__echo".into())))];
        let out = f.with(&renamed);
        assert_eq!(out.get(), r#"{"a":"é","b":{"x":[1,2.5]},"name":"p__echo"}"#);
        // Spliced into the upstream's own text, spacing and order kept.
        let spaced = RawValue::from_string(r#"{ "name" : "echo", "z": 1 }"#.into()).unwrap();
        let renamed = [("name", to_raw(&Value::String("p__echo".into())))];
        let out = Fields::of(&spaced).unwrap().with(&renamed);
        assert_eq!(out.get(), r#"{ "name" : "p__echo", "z": 1 }"#);
        // A repeated key is written anew, the last one kept.
        let twice = RawValue::from_string(r#"{"name":"a","name":"b"}"#.into()).unwrap();
        let f = Fields::of(&twice).unwrap();
        assert_eq!(f.string("name").as_deref(), Some("b"));
        assert_eq!(f.with(&renamed).get(), r#"{"name":"p__echo"}"#);
        assert!(Fields::of(&to_raw(&serde_json::json!([1]))).is_none());
    }

    #[test]
    fn an_item_with_many_members_is_read_and_a_late_repeat_is_found() {
        // An upstream chooses how many members an item has: finding a repeated key must not
        // compare every pair (100,000 members would be 5·10⁹ comparisons).
        let mut text = String::from(r#"{"name":"n""#);
        for i in 0..100_000 {
            text.push_str(&format!(r#","k{i}":0"#));
        }
        let distinct = RawValue::from_string(format!("{text}}}")).unwrap();
        let f = Fields::of(&distinct).unwrap();
        assert!(!f.repeated);
        assert_eq!(f.members.len(), 100_001);
        let repeated = RawValue::from_string(format!(r#"{text},"k7":1}}"#)).unwrap();
        assert!(Fields::of(&repeated).unwrap().repeated);
    }

    #[test]
    fn a_result_serializes_like_the_map_it_replaces() {
        let items = vec![to_raw(&serde_json::json!({"name": "a"}))];
        let mut r = ListResult::new("tools", items);
        r.fields_mut().insert("nextCursor".into(), "c".into());
        r.fields_mut().insert("ttlMs".into(), 5.into());
        r.fields_mut().insert("_meta".into(), serde_json::json!({}));
        let expected = serde_json::json!({"_meta": {}, "nextCursor": "c", "tools": [{"name": "a"}], "ttlMs": 5});
        assert_eq!(to_raw(&r).get(), to_raw(&expected).get());
        assert_eq!(r.to_value(), expected);
    }
}
