use super::*;

/// A resolved hit: (start, end, red, rule, continues).
type Part = (usize, usize, (usize, usize), &'static str, bool);

fn resolved(mut hits: Vec<Hit>) -> Vec<Part> {
    hits.sort_unstable_by_key(|h| (h.start, h.rule));
    resolve(&mut hits, &mut Vec::new(), &mut Vec::new());
    let out = hits.iter();
    out.map(|h| (h.start, h.end, h.red, h.rule(), h.continues))
        .collect()
}

#[test]
fn the_stronger_match_keeps_an_overlap_and_the_weaker_keeps_the_rest() {
    let r = Action::Redact;
    let hit = Hit::new;
    // Apart: unchanged.
    assert_eq!(
        resolved(vec![hit(0, 5, R_EMAIL, r), hit(5, 9, R_PHONE, r)]),
        [(0, 5, (0, 5), EMAIL, false), (5, 9, (5, 9), PHONE, false)]
    );
    // Sticking out after, and before.
    assert_eq!(
        resolved(vec![hit(10, 20, R_JWT, r), hit(15, 40, R_HIGH_ENTROPY, r)]),
        [
            (10, 20, (10, 20), JWT, false),
            (20, 40, (20, 40), HIGH_ENTROPY, false)
        ]
    );
    assert_eq!(
        resolved(vec![
            hit(0, 12, R_HIGH_ENTROPY, r),
            hit(8, 20, R_CLOUD_KEY, r)
        ]),
        [
            (0, 8, (0, 8), HIGH_ENTROPY, false),
            (8, 20, (8, 20), CLOUD_KEY, false)
        ]
    );
    // On both sides: two parts of one match, the second counted with the first.
    assert_eq!(
        resolved(vec![
            hit(0, 50, R_HIGH_ENTROPY, r),
            hit(10, 20, R_CLOUD_KEY, r)
        ]),
        [
            (0, 10, (0, 10), HIGH_ENTROPY, false),
            (10, 20, (10, 20), CLOUD_KEY, false),
            (20, 50, (20, 50), HIGH_ENTROPY, true)
        ]
    );
    // A chain: each keeps what no stronger one has.
    assert_eq!(
        resolved(vec![
            hit(0, 10, R_PHONE, Action::Flag),
            hit(5, 15, R_EMAIL, r),
            hit(12, 20, R_CARD, Action::Block)
        ]),
        [
            (0, 5, (0, 5), PHONE, false),
            (5, 12, (5, 12), EMAIL, false),
            (12, 20, (12, 20), CARD, false)
        ]
    );
    // The action before the rule: a flagged key yields to a redacted email.
    assert_eq!(
        resolved(vec![
            hit(0, 10, R_CLOUD_KEY, Action::Flag),
            hit(5, 15, R_EMAIL, r)
        ]),
        [
            (0, 5, (0, 5), CLOUD_KEY, false),
            (5, 15, (5, 15), EMAIL, false)
        ]
    );
    // A part with nothing left to redact goes: "Bearer " before a JWT's credential.
    let bearer = Hit {
        red: (7, 30),
        ..hit(0, 30, R_BEARER, r)
    };
    assert_eq!(
        resolved(vec![bearer, hit(7, 30, R_JWT, r)]),
        [(7, 30, (7, 30), JWT, false)]
    );
    // The rest of a redaction range stays the redaction range of the part.
    let key = Hit {
        red: (11, 40),
        ..hit(0, 40, R_CLOUD_KEY, r)
    };
    assert_eq!(
        resolved(vec![key, hit(30, 60, R_PRIVATE_KEY, r)]),
        [
            (0, 30, (11, 30), CLOUD_KEY, false),
            (30, 60, (30, 60), PRIVATE_KEY, false)
        ]
    );
}
