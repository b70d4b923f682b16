//! Whether a detector's candidate is what it looks for, where a pattern alone would match
//! too much: checksums (Luhn for cards, ISO 7064 mod 97 for IBANs), the shapes a phone
//! number can take and the numbers that look like one (dates, versions, IP addresses), the
//! entropy of a token, and where a private key ends.

use super::text::floor_boundary;

/// Where a private key that begins at `s` (its BEGIN line ending at `e`) ends: after its END
/// line if that is within the window, else after the base64 body that follows the BEGIN line.
pub(super) fn private_key_end(text: &str, s: usize, e: usize, window: usize) -> usize {
    let limit = floor_boundary(text, (s + window).min(text.len()));
    let body = &text[e.min(limit)..limit];
    let kind = |k: &[u8]| {
        k.iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b' ')
    };
    if let Some(i) = body.find("-----END ")
        && let after = e + i + "-----END ".len()
        && let Some(j) = text[after..limit].find("PRIVATE KEY-----")
        && kind(&text.as_bytes()[after..after + j])
    {
        return after + j + "PRIVATE KEY-----".len();
    }
    let pem = |b: &u8| b.is_ascii_alphanumeric() || b"+/=:,-. \r\n\t".contains(b);
    let n = body.as_bytes().iter().take_while(|b| pem(b)).count();
    // Cut by the window: end at a line break, so that the next line is a whole token for
    // the high-entropy detector.
    match body[..n].rfind('\n') {
        Some(nl) if n == body.len() && e + n < text.len() => e + nl + 1,
        _ => e + n,
    }
}

pub(super) fn high_entropy(token: &[u8]) -> bool {
    let (mut letter, mut digit, mut non_hex) = (false, false, false);
    let mut counts = [0u32; 128];
    for &c in token {
        letter |= c.is_ascii_alphabetic();
        digit |= c.is_ascii_digit();
        non_hex |= !(c.is_ascii_hexdigit() || c == b'-');
        counts[usize::from(c & 0x7f)] += 1;
    }
    if !(letter && digit && non_hex) {
        return false;
    }
    let n = token.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    bits >= 4.0
}

/// The Luhn checksum over ASCII digits.
fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// The ends of the digit groups of `b[s..e]`, longest first.
pub(super) fn group_ends(b: &[u8], s: usize, e: usize) -> impl Iterator<Item = usize> + '_ {
    let ends = (s + 1..e).filter(move |&i| b[i - 1].is_ascii_digit() && !b[i].is_ascii_digit());
    let mut ends: Vec<usize> = ends.collect();
    ends.push(e);
    ends.into_iter().rev()
}

/// The length of the card number at the start of `candidate`: the whole candidate, or if that
/// fails the check, the longest prefix ending before a separator (a card followed by another
/// number).
pub(super) fn card_len(candidate: &str) -> Option<usize> {
    let b = candidate.as_bytes();
    let ends = (0..b.len())
        .filter(|&i| !b[i].is_ascii_digit())
        .chain([b.len()]);
    let ends: Vec<usize> = ends.collect();
    ends.into_iter().rev().find(|&end| {
        let digits: Vec<u8> = b[..end]
            .iter()
            .copied()
            .filter(u8::is_ascii_digit)
            .collect();
        (13..=19).contains(&digits.len()) && luhn(&digits)
    })
}

/// IBAN lengths by country, for the countries that use one.
const IBAN_LENGTHS: &str = "AD24 AE23 AT20 BE16 BG22 BH22 BR29 CH21 CY28 CZ24 DE22 DK18 EE20 ES24 \
    FI18 FO18 FR27 GB22 GI23 GL18 GR27 HR21 HU28 IE22 IL23 IS26 IT27 KW30 KZ20 LB28 LI21 LT20 LU20 \
    LV21 MC27 MT31 NL18 NO15 PL28 PT25 QA29 RO24 SA24 SE24 SI19 SK24 SM27 TN24 TR26 UA29";

/// ISO 13616: the country's length where known, and the ISO 7064 mod-97 check.
pub(super) fn iban_valid(candidate: &str) -> bool {
    let iban: Vec<u8> = candidate.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&iban.len()) || !iban.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let known = IBAN_LENGTHS
        .split_ascii_whitespace()
        .find(|e| e.as_bytes()[..2] == iban[..2]);
    if known.is_some_and(|e| e[2..].parse() != Ok(iban.len())) {
        return false;
    }
    let mut rem = 0u32;
    for &c in iban[4..].iter().chain(&iban[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            _ => u32::from(c.to_ascii_uppercase() - b'A') + 10,
        };
        rem = (rem * if v >= 10 { 100 } else { 10 } + v) % 97;
    }
    rem == 1
}

/// Whether `text[s..e]`, a run of digits and separators, is a phone number: E.164 with a
/// `+`, or a national form with separators (North American, or a trunk prefix 0); never a
/// date, an IP address, a time, or part of a longer number or word.
pub(super) fn phone_valid(text: &str, s: usize, e: usize) -> bool {
    let b = text.as_bytes();
    if s > 0 && (b[s - 1].is_ascii_alphanumeric() || b"._-/+".contains(&b[s - 1])) {
        return false;
    }
    match b.get(e) {
        Some(c) if c.is_ascii_alphanumeric() || *c == b':' => return false,
        Some(c) if b".-/".contains(c) && b.get(e + 1).is_some_and(u8::is_ascii_digit) => {
            return false;
        }
        _ => {}
    }
    let cand = &b[s..e];
    let mut groups: Vec<&[u8]> = Vec::new();
    let (mut run, mut parens, mut dots_only) = (0, 0, true);
    for part in cand.split(|c| !c.is_ascii_digit()) {
        if !part.is_empty() {
            groups.push(part);
        }
    }
    for &c in cand {
        if c.is_ascii_digit() {
            run = 0;
            continue;
        }
        run += 1;
        parens += usize::from(c == b'(' || c == b')');
        dots_only &= c == b'.' || c == b'+';
        if run > 2 {
            return false;
        }
    }
    if parens > 2 {
        return false;
    }
    let digits: usize = groups.iter().map(|g| g.len()).sum();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let mut seps = cand.iter().filter(|c| !c.is_ascii_digit() && **c != b'+');
    let date_seps = seps.by_ref().take(2).filter(|c| b"-/.".contains(c)).count() == 2;
    let date = date_seps
        && lens.len() >= 3
        && lens[1] <= 2
        && ((lens[0] == 4 && lens[2] <= 2) || (lens[0] <= 2 && lens[2] == 4));
    if date || (dots_only && lens.len() == 4 && lens.iter().all(|&n| n <= 3)) {
        return false;
    }
    if cand[0] == b'+' {
        return (8..=15).contains(&digits) && cand.get(1).is_some_and(|c| *c != b'0');
    }
    if groups.len() < 2 {
        return false;
    }
    let nanp = match lens.as_slice() {
        [1, rest @ ..] if groups[0] == b"1" => rest,
        all => all,
    };
    if nanp == [3, 3, 4] && groups[groups.len() - 3][0] >= b'2' {
        return true;
    }
    groups[0][0] == b'0' && (9..=11).contains(&digits) && lens[1..].iter().all(|&n| n >= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_check() {
        for ok in ["4111111111111111", "5500000000000004", "378282246310005"] {
            assert!(luhn(ok.as_bytes()), "{ok}");
        }
        assert!(!luhn(b"4111111111111112"));
        assert_eq!(card_len("4111 1111 1111 1111"), Some(19));
        assert_eq!(card_len("5500-0000-0000-0004"), Some(19));
        assert_eq!(card_len("4111111111111112"), None);
        // A card followed by another number.
        assert_eq!(card_len("4111 1111 1111 1111 12"), Some(19));
    }

    #[test]
    fn iban_check() {
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(iban_valid("DE89370400440532013000"));
        assert!(iban_valid("DE89 3704 0044 0532 0130 00"));
        assert!(!iban_valid("GB83WEST12345698765432"));
        assert!(!iban_valid("DE88370400440532013000"));
        // Valid checksum shape but the wrong length for Germany.
        assert!(!iban_valid("DE8937040044053201300"));
    }
}
