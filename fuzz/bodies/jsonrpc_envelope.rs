// The body of the `jsonrpc_envelope` fuzz target (fuzz/fuzz_targets/jsonrpc_envelope.rs), included there and by
// tests/fuzz_seeds.rs, which replays every seed through it in the ordinary test run.

use gatehouse::protocol::jsonrpc::{Message, MessageKind};

pub fn fuzz_one(data: &[u8]) {
    let m = match Message::parse(data) {
        Ok(m) => m,
        Err(e) => {
            let _ = (e.code(), e.to_string());
            return;
        }
    };
    match m.kind {
        MessageKind::Request => assert!(m.id.is_some() && m.method.is_some()),
        MessageKind::Notification => assert!(m.id.is_none() && m.method.is_some()),
        MessageKind::Response => assert!(m.id.is_some() && m.result.is_some()),
        MessageKind::Error => assert!(m.error.is_some()),
    }
    let _ = (m.method(), m.error_code());
    let bytes = m.to_bytes();
    let again = Message::parse(&bytes).expect("a serialized message parses again");
    assert_eq!(again.kind, m.kind);
    assert_eq!(again.id, m.id);
    assert_eq!(again.method, m.method);
    let raw = |v: &Option<Box<serde_json::value::RawValue>>| v.as_ref().map(|r| r.get().to_owned());
    assert_eq!(raw(&again.params), raw(&m.params));
    assert_eq!(raw(&again.result), raw(&m.result));
    assert_eq!(raw(&again.error), raw(&m.error));
}
