// The body of the `passthrough_rewriter` fuzz target (fuzz/fuzz_targets/passthrough_rewriter.rs), included there and by
// tests/fuzz_seeds.rs, which replays every seed through it in the ordinary test run.

use gatehouse::protocol::jsonrpc::{Message, MessageKind, RequestId};
use gatehouse::protocol::passthrough::{PassthroughError, Progress, ResponseRewriter};
use serde_json::Value;

struct Run {
    result: Result<Progress, PassthroughError>,
    out: Vec<u8>,
    head: Vec<u8>,
}

fn run(
    input: &[u8],
    chunk: usize,
    expect: &RequestId,
    replace: &Option<RequestId>,
    inject: bool,
    max: usize,
) -> Run {
    let mut r = ResponseRewriter::new(expect, replace, inject, max);
    let mut out = Vec::new();
    let mut result = Ok(Progress::Undecided);
    for piece in input.chunks(chunk.max(1)) {
        result = r.feed(piece, &mut out);
        match result {
            Ok(Progress::NotStreamable) => {
                assert!(out.is_empty(), "nothing is sent before streaming starts");
                break;
            }
            Err(_) => break,
            Ok(_) => {}
        }
    }
    if let Ok(Progress::Streaming) = result {
        result = r.finish().map(|()| Progress::Streaming);
    }
    Run {
        result,
        out,
        head: r.take_head(),
    }
}

pub fn fuzz_one(data: &[u8]) {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let inject = flags & 1 != 0;
    let expect = if flags & 2 != 0 {
        RequestId::String("a".into())
    } else {
        RequestId::Number(7)
    };
    let replace = if flags & 4 != 0 {
        None
    } else {
        Some(RequestId::String("down-1".into()))
    };
    let max = if flags & 8 != 0 { 64 } else { 1 << 20 };
    let chunk = usize::from(flags >> 4) + 1;

    let whole = run(input, input.len(), &expect, &replace, inject, max);
    let cut = run(input, chunk, &expect, &replace, inject, max);
    assert!(!whole.out.contains(&b'\n') && !whole.out.contains(&b'\r'));
    assert!(!cut.out.contains(&b'\n') && !cut.out.contains(&b'\r'));
    // Chunking only changes where a refusal is noticed, not whether there is one. (Past 4 KiB
    // undecided the rewriter gives up at a chunk boundary, which depends on the chunking.)
    match (&whole.result, &cut.result) {
        _ if input.len() > 4096 => {}
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "chunks of {chunk}");
            if *a == Progress::Streaming {
                assert_eq!(whole.out, cut.out, "chunks of {chunk}");
            }
        }
        (Err(PassthroughError::TooLarge(_)), _) | (_, Err(PassthroughError::TooLarge(_))) => {}
        (a, b) => assert_eq!(a.is_ok(), b.is_ok(), "chunks of {chunk}: {a:?} / {b:?}"),
    }
    if let Ok(Progress::NotStreamable) = whole.result {
        assert_eq!(
            whole.head, input,
            "the head is the input, for the whole parser"
        );
    }
    if let Ok(Progress::NotStreamable) = cut.result {
        assert!(
            input.starts_with(&cut.head),
            "the head is a prefix of the input"
        );
    }
    if whole.result != Ok(Progress::Streaming) {
        return;
    }
    // A streamed, well-formed response: the output is that response, rewritten.
    let Ok(Value::Object(mut want)) = serde_json::from_slice::<Value>(input) else {
        return;
    };
    let parsed = Message::parse(input).expect("what streams is a valid message");
    assert_eq!(parsed.kind, MessageKind::Response);
    assert_eq!(parsed.id.as_ref(), Some(&expect));
    let got: Value = serde_json::from_slice(&whole.out).expect("the output is JSON");
    want.insert("id".into(), serde_json::to_value(&replace).unwrap());
    if inject
        && let Some(Value::Object(result)) = want.get_mut("result")
        && !result.contains_key("resultType")
    {
        result.insert("resultType".into(), "complete".into());
    }
    assert_eq!(got, Value::Object(want));
    if replace.is_some() {
        let m = Message::parse(&whole.out).expect("the output is a valid message");
        assert_eq!(m.id, replace);
    }
}
