//! Text preparation and character checks: normalization for matching (each byte mapped back to
//! the original text), runs of invisible characters, scripts and look-alike letters, and
//! excerpts.

/// Excerpts are cut to about this many characters.
pub(super) const EXCERPT_CHARS: usize = 200;

// ---------------------------------------------------------------------------------------------
// Normalization

/// Text prepared for matching, with each byte's origin in the original string.
pub(super) struct Norm {
    pub(super) text: String,
    start: Vec<usize>,
    end: Vec<usize>,
}

impl Norm {
    fn push(&mut self, c: char, from: usize, to: usize) {
        let before = self.text.len();
        self.text.push(c);
        for _ in before..self.text.len() {
            self.start.push(from);
            self.end.push(to);
        }
    }

    /// The original byte range behind a normalized one (non-empty).
    pub(super) fn original(&self, s: usize, e: usize) -> (usize, usize) {
        (self.start[s], self.end[e - 1])
    }
}

/// Drops ANSI escape sequences, invisible and control characters; decodes tag characters to
/// the ASCII they encode; turns Unicode spaces into spaces; folds look-alike letters to ASCII.
pub(super) fn normalize(s: &str) -> Norm {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let pos = |j: usize| chars.get(j).map_or(s.len(), |x| x.0);
    let mut n = Norm {
        text: String::with_capacity(s.len()),
        start: Vec::with_capacity(s.len()),
        end: Vec::with_capacity(s.len()),
    };
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if c == '\u{1b}' {
            i += 1;
            match chars.get(i).map(|x| x.1) {
                Some('[') => {
                    i += 1;
                    while i < chars.len() && !('\u{40}'..='\u{7e}').contains(&chars[i].1) {
                        i += 1;
                    }
                    i += 1;
                }
                Some(']') => {
                    i += 1;
                    while i < chars.len() && !matches!(chars[i].1, '\u{7}' | '\u{1b}') {
                        i += 1;
                    }
                    if chars.get(i).map(|x| x.1) == Some('\u{1b}') {
                        i += 1; // the '\' of ST
                    }
                    i += 1;
                }
                Some(_) => i += 1,
                None => {}
            }
            continue;
        }
        let to = pos(i + 1);
        i += 1;
        if let Some(a) = tag_ascii(c) {
            n.push(a, at, to);
        } else if is_hidden_char(c) || (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
            // dropped
        } else if c != ' ' && c.is_whitespace() && c != '\n' {
            n.push(' ', at, to);
        } else if let Some(a) = confusable(c) {
            n.push(a, at, to);
        } else {
            n.push(c, at, to);
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Characters

/// Characters that render as nothing (or only change rendering): removed before matching,
/// escaped in excerpts.
fn is_hidden_char(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE007F | 0xE0100..=0xE01EF)
}

fn is_tag(c: char) -> bool {
    matches!(c as u32, 0xE0000..=0xE007F)
}

/// The ASCII character a printable tag character stands for.
fn tag_ascii(c: char) -> Option<char> {
    match c as u32 {
        v @ 0xE0020..=0xE007E => char::from_u32(v - 0xE0000),
        _ => None,
    }
}

fn is_variation_selector(c: char) -> bool {
    matches!(c as u32, 0xFE00..=0xFE0F)
}

fn is_emojiish(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0x2190..=0x21FF | 0x2300..=0x23FF
        | 0xFE0F | 0x00A9 | 0x00AE | 0x2122)
}

/// The byte range of the first run of invisible or control characters that is not part of an
/// ordinary emoji sequence.
pub(super) fn invisible_span(text: &str) -> Option<(usize, usize)> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let flagged = |i: usize| -> bool {
        let c = chars[i].1;
        if c.is_control() {
            return !matches!(c, '\t' | '\n' | '\r');
        }
        if !is_hidden_char(c) {
            return false;
        }
        let prev = i.checked_sub(1).map(|j| chars[j].1);
        let next = chars.get(i + 1).map(|x| x.1);
        if c == '\u{200D}' {
            // zero-width joiner inside an emoji sequence (👩‍💻)
            return !(prev.is_some_and(is_emojiish) && next.is_some_and(is_emojiish));
        }
        if is_variation_selector(c) {
            // one selector is ordinary emoji presentation; runs smuggle data
            return prev.is_some_and(is_variation_selector)
                || next.is_some_and(is_variation_selector);
        }
        if is_tag(c) {
            // subdivision flags: U+1F3F4 followed by lowercase/digit tags and CANCEL TAG
            let mut j = i;
            while j > 0 && is_tag(chars[j - 1].1) {
                j -= 1;
            }
            let mut k = i;
            while k + 1 < chars.len() && is_tag(chars[k + 1].1) {
                k += 1;
            }
            let flag = j > 0
                && chars[j - 1].1 == '\u{1F3F4}'
                && chars[k].1 == '\u{E007F}'
                && k - j <= 7
                && chars[j..k]
                    .iter()
                    .all(|x| matches!(x.1 as u32, 0xE0030..=0xE0039 | 0xE0061..=0xE007A));
            return !flag;
        }
        true
    };
    let first = (0..chars.len()).find(|&i| flagged(i))?;
    let mut last = first;
    while last + 1 < chars.len() {
        let c = chars[last + 1].1;
        if is_hidden_char(c) || (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
            last += 1;
        } else {
            break;
        }
    }
    let end = chars.get(last + 1).map_or(text.len(), |x| x.0);
    Some((chars[first].0, end))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    Latin,
    Greek,
    Cyrillic,
    Armenian,
    Cherokee,
    /// Fullwidth forms and mathematical alphanumerics: always look-alikes of ASCII.
    Styled,
    Other,
}

fn script(c: char) -> Script {
    match c as u32 {
        0x41..=0x5A
        | 0x61..=0x7A
        | 0xC0..=0x24F
        | 0x250..=0x2AF
        | 0x1D00..=0x1D7F
        | 0x1E00..=0x1EFF
        | 0x2C60..=0x2C7F
        | 0xA720..=0xA7FF => Script::Latin,
        0x370..=0x3FF | 0x1F00..=0x1FFF => Script::Greek,
        0x400..=0x52F | 0x1C80..=0x1C8F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F => Script::Cyrillic,
        0x530..=0x58F => Script::Armenian,
        0x13A0..=0x13FF | 0xAB70..=0xABBF => Script::Cherokee,
        0xFF10..=0xFF19
        | 0xFF21..=0xFF3A
        | 0xFF41..=0xFF5A
        | 0x1D400..=0x1D7FF
        | 0x2100..=0x214F
        | 0x2160..=0x217F => Script::Styled,
        _ => Script::Other,
    }
}

/// The ASCII letter or digit a look-alike character is commonly mistaken for.
fn confusable(c: char) -> Option<char> {
    let v = c as u32;
    let mapped = match v {
        0xFF10..=0xFF19 => char::from_u32(v - 0xFF10 + u32::from(b'0')),
        0xFF21..=0xFF3A => char::from_u32(v - 0xFF21 + u32::from(b'A')),
        0xFF41..=0xFF5A => char::from_u32(v - 0xFF41 + u32::from(b'a')),
        0x1D400..=0x1D6A3 => {
            let k = (v - 0x1D400) % 52;
            if k < 26 {
                char::from_u32(u32::from(b'A') + k)
            } else {
                char::from_u32(u32::from(b'a') + k - 26)
            }
        }
        0x1D7CE..=0x1D7FF => char::from_u32(u32::from(b'0') + (v - 0x1D7CE) % 10),
        _ => None,
    };
    if mapped.is_some() {
        return mapped;
    }
    if c.is_ascii() {
        return None;
    }
    CONFUSABLES
        .iter()
        .flat_map(|row| row.split_whitespace())
        .find_map(|pair| {
            let mut it = pair.chars();
            (it.next() == Some(c)).then(|| it.next()).flatten()
        })
}

/// Look-alike letters and the ASCII letter each is mistaken for, as two-character pairs.
const CONFUSABLES: &[&str] = &[
    // Cyrillic
    "аa еe оo рp сc уy хx ѕs іi јj ԁd ԛq ԝw һh ӏl үy ѵv",
    "АA ВB ЕE КK МM НH ОO РP СC ТT ХX УY ЅS ІI ЈJ",
    // Greek
    "αa οo ρp νv ιi κk υu χx γy εe",
    "ΑA ΒB ΕE ΖZ ΗH ΙI ΚK ΜM ΝN ΟO ΡP ΤT ΥY ΧX",
    // Armenian
    "օo սu հh ոn",
    // Latin look-alikes outside ASCII, letter-like symbols, Roman numerals
    "ıi ȷj ɑa ɡg ǀl ℓl ⅠI ⅰi ⅼl",
];

/// A name whose words mix ASCII letters with look-alikes, or (for identifier-like names of
/// tools and prompts) consist only of look-alikes.
pub(super) fn homoglyph(name: &str, kind: &str) -> bool {
    if name.is_ascii() {
        return false;
    }
    let identifier_like =
        !name.chars().any(char::is_whitespace) && matches!(kind, "tool" | "prompt");
    for word in name.split(|c: char| !c.is_alphanumeric()) {
        let mut ascii_letter = false;
        let mut lookalike = false;
        let mut non_ascii = false;
        let mut all_confusable = true;
        for c in word.chars() {
            if c.is_ascii() {
                ascii_letter |= c.is_ascii_alphabetic();
                continue;
            }
            non_ascii = true;
            let sc = script(c);
            if sc == Script::Styled {
                return true;
            }
            let conf = confusable(c).is_some();
            all_confusable &= conf;
            // accented Latin letters (é, ñ) are fine; other scripts and Latin look-alikes not
            lookalike |= sc != Script::Latin || conf;
        }
        if ascii_letter && lookalike {
            return true;
        }
        if identifier_like && non_ascii && all_confusable {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Excerpts

/// About [`EXCERPT_CHARS`] characters around `[s, e)` of `text`, with invisible characters (or,
/// with `all_non_ascii`, every non-ASCII character) escaped.
pub(super) fn excerpt(text: &str, s: usize, e: usize, all_non_ascii: bool) -> String {
    let len = text[s..e].chars().count();
    let (from, to) = if len >= EXCERPT_CHARS {
        (s, advance(text, s, EXCERPT_CHARS))
    } else {
        let room = (EXCERPT_CHARS - len) / 2;
        (back(text, s, room), advance(text, e, room))
    };
    let mut out = String::with_capacity(to - from + 8);
    if from > 0 {
        out.push('…');
    }
    for c in text[from..to].chars() {
        escape_into(&mut out, c, all_non_ascii);
    }
    if to < text.len() {
        out.push('…');
    }
    out
}

fn advance(text: &str, pos: usize, n: usize) -> usize {
    text[pos..]
        .char_indices()
        .nth(n)
        .map_or(text.len(), |(i, _)| pos + i)
}

fn back(text: &str, pos: usize, n: usize) -> usize {
    if n == 0 {
        return pos;
    }
    text[..pos]
        .char_indices()
        .rev()
        .take(n)
        .last()
        .map_or(pos, |(i, _)| i)
}

pub(super) fn escape_into(out: &mut String, c: char, all_non_ascii: bool) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_control()
            || is_hidden_char(c)
            || matches!(c, '\u{2028}' | '\u{2029}')
            || (all_non_ascii && !c.is_ascii()) =>
        {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
        c => out.push(c),
    }
}
