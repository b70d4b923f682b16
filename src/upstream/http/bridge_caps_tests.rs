//! The bridge's caps, hit against a scripted 2026-07-28 upstream that keeps asking: a call
//! ends with a clear failure after `MAX_ROUNDS` rounds, and a round of more than
//! `MAX_QUESTIONS` questions is refused before any reaches the client, and at most
//! `MAX_WAITING` questions wait for answers at once.

use super::*;
use crate::testing::{Script, discover, result, scripted_upstream, stateless_client};
use serde_json::json;

/// An upstream whose `tools/call` always answers with an `InputRequiredResult` of `n`
/// sampling questions, however many rounds came before.
fn always_asking(n: usize) -> Script {
    Arc::new(move |method, _| match method {
        "server/discover" => discover(),
        "tools/call" => {
            let questions: Map<String, Value> = (0..n)
                .map(|i| {
                    (
                        format!("q{i}"),
                        json!({"method": "sampling/createMessage", "params": {
                            "messages": [], "maxTokens": 1
                        }}),
                    )
                })
                .collect();
            result(json!({"resultType": "input_required", "inputRequests": questions}))
        }
        _ => (404, json!({})),
    })
}

async fn bridged(n: usize) -> (Arc<UpstreamClient>, UpstreamSession) {
    let url = scripted_upstream(always_asking(n)).await;
    let client = stateless_client("asker", &url);
    let who = ClientIdentity {
        version: crate::protocol::ProtocolVersion::V2025_11_25,
        client_info: json!({"name": "c", "version": "1"}),
        capabilities: json!({"sampling": {}}),
    };
    let (session, _) = client
        .open(&CallContext::gateway(), &who)
        .await
        .expect("a bridged session");
    assert!(
        session.bridge.is_some(),
        "a stateless-only upstream is bridged"
    );
    (client, session)
}

fn call() -> Message {
    Message::request(
        RequestId::Number(1),
        "tools/call",
        Some(to_raw(&json!({"name": "t", "arguments": {}}))),
    )
}

/// Answers every question of the call like a client would, until the call ends; the final
/// frame and how many questions were relayed.
async fn answer_all(client: &Arc<UpstreamClient>, mut stream: CallStream) -> (Frame, usize) {
    let mut asked = 0;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the call ends")
            .expect("a frame");
        match frame {
            Frame::Request { message, route } => {
                asked += 1;
                let answer = Message::response(
                    message.id.clone().expect("an id"),
                    to_raw(
                        &json!({"role": "assistant", "content": {"type": "text", "text": "ok"}, "model": "m"}),
                    ),
                );
                client
                    .respond(&CallContext::gateway(), &route, answer)
                    .await
                    .expect("delivered");
            }
            f if f.is_final() => return (f, asked),
            _ => {}
        }
    }
}

#[tokio::test]
async fn an_upstream_that_never_stops_asking_ends_after_the_round_cap() {
    let (client, session) = bridged(1).await;
    let stream = client
        .call(&CallContext::gateway(), &session, call(), Delivery::Whole)
        .await
        .expect("the call starts");
    let (last, asked) = answer_all(&client, stream).await;
    assert_eq!(
        asked, MAX_ROUNDS,
        "one question per round, every round relayed"
    );
    match last {
        Frame::Failed(e) => assert!(
            e.to_string()
                .contains(&format!("after {MAX_ROUNDS} rounds")),
            "{e}"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_round_of_too_many_questions_is_refused_before_any_is_relayed() {
    let (client, session) = bridged(MAX_QUESTIONS + 1).await;
    let stream = client
        .call(&CallContext::gateway(), &session, call(), Delivery::Whole)
        .await
        .expect("the call starts");
    let (last, asked) = answer_all(&client, stream).await;
    assert_eq!(asked, 0);
    match last {
        Frame::Failed(e) => assert!(e.to_string().contains("questions at once"), "{e}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    // At the cap itself the round goes through.
    let (client, session) = bridged(MAX_QUESTIONS).await;
    let stream = client
        .call(&CallContext::gateway(), &session, call(), Delivery::Whole)
        .await
        .expect("the call starts");
    let (_, asked) = answer_all(&client, stream).await;
    assert_eq!(asked, MAX_QUESTIONS * MAX_ROUNDS);
}

#[test]
fn questions_waiting_for_answers_are_capped_per_upstream() {
    let waiting = Waiting::default();
    let held: Vec<_> = (0..MAX_WAITING as i64)
        .map(|i| waiting.register(RequestId::Number(i)).expect("room"))
        .collect();
    assert!(waiting.register(RequestId::Number(-1)).is_none(), "full");
    drop(held);
}
