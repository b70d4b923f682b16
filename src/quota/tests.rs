//! The quota rules and both stores. The Redis tests use the machine's Redis at
//! 127.0.0.1:6379 (`GATEHOUSE_TEST_REDIS` overrides it), each under a key prefix of its own.

use super::*;
use crate::config::quotas::Quotas as Config;

fn config(yaml: &str) -> Config {
    serde_saphyr::from_str(yaml).expect("quota yaml")
}

fn req<'a>(who: &'a str, target: Option<&'a str>) -> Request<'a> {
    Request {
        who,
        server: "main",
        tenant: Some("acme"),
        target,
    }
}

fn exceeded(e: QuotaError) -> (String, Kind, u64, u64) {
    match e {
        QuotaError::Exceeded {
            rule,
            kind,
            limit,
            retry_after_secs,
            ..
        } => (rule.to_string(), kind, limit, retry_after_secs),
        other => panic!("expected a quota refusal, got {other}"),
    }
}

fn redis_url() -> String {
    std::env::var("GATEHOUSE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique_prefix() -> String {
    let mut id = [0u8; 6];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
    format!("gatehouse-test:{}:", crate::hex::encode(&id))
}

/// The same checks against either store.
async fn rate_concurrency_and_daily(q: &Quotas) {
    // rate: 2 at once, then one every 10 s.
    assert!(q.admit(&req("alice", Some("echo"))).await.is_ok());
    assert!(q.admit(&req("alice", Some("echo"))).await.is_ok());
    let (rule, kind, limit, retry) =
        exceeded(q.admit(&req("alice", Some("echo"))).await.err().unwrap());
    assert_eq!((rule.as_str(), kind, limit), ("per-user", Kind::Rate, 6));
    assert!((9..=10).contains(&retry), "retry after {retry}s");
    // Another principal has buckets of its own.
    assert!(q.admit(&req("bob", Some("echo"))).await.is_ok());
    // concurrent: one `slow` at a time per principal, given back with the permit.
    let held = q
        .admit(&req("carol", Some("slow")))
        .await
        .expect("first slow call");
    let (rule, kind, ..) = exceeded(q.admit(&req("carol", Some("slow"))).await.err().unwrap());
    assert_eq!(
        (rule.as_str(), kind),
        ("slow-one-at-a-time", Kind::Concurrent)
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(q.admit(&req("carol", Some("slow"))).await.is_ok());
    // daily: 3 `paid` calls a day for the whole tenant, whoever calls.
    for who in ["dave", "erin", "frank"] {
        assert!(q.admit(&req(who, Some("paid"))).await.is_ok(), "{who}");
    }
    let (rule, kind, limit, retry) =
        exceeded(q.admit(&req("gina", Some("paid"))).await.err().unwrap());
    assert_eq!(
        (rule.as_str(), kind, limit),
        ("paid-per-tenant", Kind::Daily, 3)
    );
    assert!(retry <= 86_400, "resets by the next UTC midnight: {retry}s");
}

const RULES: &str = "  - { name: per-user, rate: { requests: 6, per: 1m, burst: 2 } }\n  - { name: slow-one-at-a-time, tools: slow, concurrent: 1 }\n  - { name: paid-per-tenant, per: [tenant], tools: paid, daily: 3 }\n";

#[tokio::test]
async fn in_process_counters_limit_rate_concurrency_and_days() {
    let q = Quotas::new(&config(&format!("rules:\n{RULES}")), None, None).unwrap();
    rate_concurrency_and_daily(&q).await;
}

#[tokio::test]
async fn redis_counters_limit_rate_concurrency_and_days() {
    let yaml = format!(
        "redis: {{ url: \"{}\", key_prefix: \"{}\" }}\nrules:\n{RULES}",
        redis_url(),
        unique_prefix()
    );
    let q = Quotas::new(&config(&yaml), None, None).unwrap();
    rate_concurrency_and_daily(&q).await;
    assert_eq!(q.readiness().await, Some((true, "ok".into())));
}

#[tokio::test]
async fn a_refused_request_takes_from_no_counter() {
    // The per-tool rule refuses the third call; the daily counter it also passes must not
    // have counted the refused ones, in either store.
    let rules = "  - { name: day, daily: 4 }\n  - { name: tool, tools: t, concurrent: 1 }\n";
    for yaml in [
        format!("rules:\n{rules}"),
        format!(
            "redis: {{ url: \"{}\", key_prefix: \"{}\" }}\nrules:\n{rules}",
            redis_url(),
            unique_prefix()
        ),
    ] {
        let q = Quotas::new(&config(&yaml), None, None).unwrap();
        let held = q.admit(&req("a", Some("t"))).await.unwrap();
        for _ in 0..5 {
            let (rule, ..) = exceeded(q.admit(&req("a", Some("t"))).await.err().unwrap());
            assert_eq!(rule, "tool");
        }
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // One taken so far: three more fit the day, the fourth does not.
        for _ in 0..3 {
            assert!(q.admit(&req("a", Some("u"))).await.is_ok());
        }
        let (rule, kind, ..) = exceeded(q.admit(&req("a", Some("u"))).await.err().unwrap());
        assert_eq!((rule.as_str(), kind), ("day", Kind::Daily));
    }
}

#[tokio::test]
async fn in_process_counters_are_capped() {
    let q = Quotas::new(
        &config("max_counters: 3\nrules:\n  - { name: c, concurrent: 1 }\n"),
        None,
        None,
    )
    .unwrap();
    let held: Vec<Permit> = futures_util::future::join_all(
        ["a", "b", "c"].map(|w| async { q.admit(&req(w, None)).await.unwrap() }),
    )
    .await;
    match q.admit(&req("d", None)).await {
        Err(QuotaError::Unavailable(StoreError::CountersFull)) => {}
        other => panic!("expected the counters to be full, got {:?}", other.err()),
    }
    // Counters holding nothing are swept to make room.
    drop(held);
    assert!(q.admit(&req("d", None)).await.is_ok());
    match &*q.store {
        Store::Local(l) => assert!(l.len() <= 3),
        Store::Redis(_) => unreachable!(),
    }
}

#[tokio::test]
async fn an_unreachable_redis_fails_as_configured() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (mode, admitted) in [("open", true), ("closed", false)] {
        let yaml = format!(
            "redis: {{ url: \"redis://127.0.0.1:{port}\", timeout: 100ms, on_outage: {mode} }}\nrules:\n  - {{ name: r, rate: {{ requests: 1 }} }}\n"
        );
        let q = Quotas::new(&config(&yaml), None, None).unwrap();
        for _ in 0..3 {
            match q.admit(&req("a", None)).await {
                Ok(_) => assert!(admitted, "{mode}: admitted"),
                Err(QuotaError::Unavailable(StoreError::Redis(_))) => {
                    assert!(!admitted, "{mode}: refused")
                }
                Err(e) => panic!("{mode}: {e}"),
            }
        }
        let (ready, said) = q.readiness().await.unwrap();
        assert_eq!(ready, admitted, "{mode}: {said}");
        assert!(said.contains(&format!("on_outage: {mode}")), "{said}");
    }
}

#[test]
fn keys_never_hold_who_or_what() {
    let q = Rule::compile(
        &config("rules:\n  - { name: r, per: [principal, tool], rate: { requests: 1 } }\n").rules
            [0],
    );
    let key = q
        .key(&req("alice@example.com", Some("secret-tool")))
        .unwrap();
    assert!(key.starts_with("r:"), "{key}");
    assert!(!key.contains("alice") && !key.contains("secret"), "{key}");
    // A rule per tool does not apply to a request naming none (a listing).
    assert!(q.key(&req("alice", None)).is_none());
}

#[tokio::test]
async fn a_reload_keeps_the_counters_and_applies_the_new_numbers() {
    let before = config("rules:\n  - { name: r, rate: { requests: 2, per: 1h } }\n");
    let q = Quotas::new(&before, None, None).unwrap();
    assert!(q.admit(&req("a", None)).await.is_ok());
    assert!(q.admit(&req("a", None)).await.is_ok());
    assert!(q.admit(&req("a", None)).await.is_err());
    // The same rule after a reload: what was taken stays taken.
    let same = Quotas::new(&before, Some(&q), Some(&before)).unwrap();
    assert!(same.admit(&req("a", None)).await.is_err());
    // A larger burst: room for one more at once, counted on the same bucket.
    let after = config("rules:\n  - { name: r, rate: { requests: 2, per: 1h, burst: 3 } }\n");
    let bigger = Quotas::new(&after, Some(&same), Some(&before)).unwrap();
    assert!(bigger.admit(&req("a", None)).await.is_ok());
    assert!(bigger.admit(&req("a", None)).await.is_err());
}
