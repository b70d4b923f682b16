//! The output guardrails' scanner in process: MB/s of the default rule set (`guardrails: {}`,
//! the catalog scanner's injection rules included) over 1 MiB results of different shapes,
//! whole and in 16 KiB pieces as a streamed result arrives.

use gatehouse::config::guardrails::Guardrails;
use std::time::Instant;

/// The bodies scanned: a name and the JSON-RPC response.
fn bodies() -> Vec<(&'static str, String)> {
    let wrap = |content: String| format!(r#"{{"jsonrpc":"2.0","id":1,"result":{content}}}"#);
    let sentence = "The committee met on Tuesday to review the quarterly figures and, after a long discussion of budgets, staffing and next year's roadmap, agreed to publish version 1.2.3 of the report.\\n";
    let prose = sentence.repeat((1 << 20) / sentence.len());
    // A fixed pseudo-random base64 blob, as an image's data is.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let blob: String = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % 64) as usize] as char
        })
        .collect();
    let mut rows = Vec::new();
    let mut n = 0;
    while rows.iter().map(String::len).sum::<usize>() < 1 << 20 {
        rows.push(format!(
            r#"{{"id":{n},"name":"Customer {n}","city":"Springfield","status":"active","created":"2026-12-03T10:20:30Z"}}"#
        ));
        n += 1;
    }
    let letters = "x".repeat(1 << 20);
    vec![
        // What the fixture's `big` tool returns, which the bench's large rows scan.
        (
            "one letter repeated",
            wrap(format!(
                r#"{{"content":[{{"type":"text","text":"{letters}"}}]}}"#
            )),
        ),
        (
            "prose",
            wrap(format!(
                r#"{{"content":[{{"type":"text","text":"{prose}"}}]}}"#
            )),
        ),
        (
            "base64 image",
            wrap(format!(
                r#"{{"content":[{{"type":"image","data":"{blob}","mimeType":"image/png"}}]}}"#
            )),
        ),
        (
            "records",
            wrap(format!(
                r#"{{"structuredContent":{{"rows":[{}]}}}}"#,
                rows.join(",")
            )),
        ),
    ]
}

/// (body, MB/s whole, MB/s in 16 KiB pieces) with the default rule set.
pub fn run(rounds: u32) -> Vec<(&'static str, f64, f64)> {
    let guard =
        gatehouse::guardrail::build(&Guardrails::default(), &[]).expect("the default rules");
    bodies()
        .into_iter()
        .map(|(name, body)| {
            let mb = body.len() as f64 / 1e6 * f64::from(rounds);
            let start = Instant::now();
            for _ in 0..rounds {
                let _ = guard.scan_whole(body.as_bytes());
            }
            let whole = mb / start.elapsed().as_secs_f64();
            let start = Instant::now();
            for _ in 0..rounds {
                let mut scan = guard.scan();
                for piece in body.as_bytes().chunks(16 * 1024) {
                    let _ = scan.push(piece);
                }
                let _ = scan.finish();
            }
            let pieces = mb / start.elapsed().as_secs_f64();
            (name, whole, pieces)
        })
        .collect()
}
