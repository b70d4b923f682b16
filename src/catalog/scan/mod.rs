//! Tool-poisoning scan: reads every string an upstream offers a model (names, titles,
//! descriptions, annotations, schema descriptions, defaults, enum values, examples, prompt
//! arguments) and reports text that tries to steer the model rather than describe the tool:
//! hidden instructions, concealment, exfiltration targets, requests for secrets, references to
//! sensitive files, shadowing of other upstreams' tools, invisible characters and look-alike
//! names.
//!
//! The scan is a set of patterns, so it is a triage aid for the catalog's approval step, not a
//! proof of safety: each [`Finding`] names the rule, the JSON path and the offending text so an
//! operator can judge it. Text is normalized before matching (ANSI escapes and zero-width
//! characters removed, Unicode tag characters decoded, look-alike letters folded to ASCII), so
//! `ig\u{200b}nore previous instructions` still matches; excerpts are cut from the original
//! text with invisible characters shown escaped.

mod mentions;
mod rules;
#[cfg(test)]
mod tests;
mod text;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use mentions::Special;
pub use rules::{
    BUILTIN_RULES, CONCEALMENT, CROSS_TOOL_SHADOWING, ENCODED_PAYLOAD, EXFILTRATION_TARGET,
    EXTERNAL_LINK, HIDDEN_BLOCK, HOMOGLYPH_NAME, INSTRUCTION_IN_SCHEMA, INSTRUCTION_OVERRIDE,
    INVISIBLE_UNICODE, LONG_DESCRIPTION, MODEL_DIRECTED, SECRET_REQUEST, SENSITIVE_PATH,
};
use rules::{LONG_DESCRIPTION_CHARS, Reject, SPECS, Scope};
use text::{Norm, escape_into, excerpt, homoglyph, invisible_span, normalize};

/// How serious a finding is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth showing, not worth blocking (e.g. a link to documentation).
    Info,
    /// Unusual but usually harmless.
    Low,
    /// Needs a look before approval.
    Medium,
    /// Very likely an attempt to steer the model.
    High,
    /// An attack shape with no benign reading.
    Critical,
}

/// One thing the scanner noticed in a definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Stable rule id, e.g. `instruction-override`.
    pub rule: String,
    /// How serious it is.
    pub severity: Severity,
    /// JSON path in the definition, e.g. `description` or
    /// `inputSchema.properties.path.description`.
    pub field: String,
    /// The offending text (cut to about 200 characters around the match; invisible
    /// characters shown escaped as `\u{200b}`).
    pub excerpt: String,
}

/// An operator-defined rule from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    /// Rule id reported in findings.
    pub id: String,
    /// A regular expression, matched case-insensitively against every string.
    pub pattern: String,
    /// Severity reported in findings.
    pub severity: Severity,
    /// Explanation shown to operators.
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone)]
struct PatternRule {
    id: &'static str,
    severity: Severity,
    scope: Scope,
    patterns: Vec<(Regex, Option<Reject>)>,
}

#[derive(Debug, Clone)]
struct CompiledCustom {
    id: String,
    severity: Severity,
    message: Option<String>,
    regex: Regex,
}

/// The scanner: built-in rules plus custom ones (compiled once).
#[derive(Debug, Clone)]
pub struct Scanner {
    rules: Vec<PatternRule>,
    special: Special,
    custom: Vec<CompiledCustom>,
    /// Every injection pattern in one set, built on first use (results only).
    injection_set: std::sync::OnceLock<Regex>,
}

fn ci(pattern: &str) -> Regex {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .build()
        .unwrap_or_else(|e| panic!("built-in pattern {pattern:?} does not compile: {e}"))
}

/// Checks operator-defined rules without building the built-in ones (configuration
/// validation needs only this, and the built-ins take tens of milliseconds to compile).
pub fn check_custom_rules(custom: &[CustomRule]) -> Result<(), String> {
    compile_custom(custom).map(drop)
}

fn compile_custom(custom: &[CustomRule]) -> Result<Vec<CompiledCustom>, String> {
    let mut compiled: Vec<CompiledCustom> = Vec::with_capacity(custom.len());
    for rule in custom {
        if rule.id.trim().is_empty() {
            return Err(format!(
                "custom rule with pattern {:?}: the id is empty",
                rule.pattern
            ));
        }
        if BUILTIN_RULES.iter().any(|(id, _, _)| *id == rule.id) {
            return Err(format!(
                "custom rule {:?}: the id is already used by a built-in rule",
                rule.id
            ));
        }
        if compiled.iter().any(|c| c.id == rule.id) {
            return Err(format!("custom rule {:?}: the id is used twice", rule.id));
        }
        if rule.pattern.is_empty() {
            return Err(format!("custom rule {:?}: the pattern is empty", rule.id));
        }
        let regex = RegexBuilder::new(&rule.pattern)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                format!(
                    "custom rule {:?}: the pattern {:?} is not a valid regular expression: {e}",
                    rule.id, rule.pattern
                )
            })?;
        if regex.is_match("") {
            return Err(format!(
                "custom rule {:?}: the pattern {:?} matches the empty string, so it would match everything",
                rule.id, rule.pattern
            ));
        }
        compiled.push(CompiledCustom {
            id: rule.id.clone(),
            severity: rule.severity,
            message: rule.message.clone(),
            regex,
        });
    }
    Ok(compiled)
}

impl Scanner {
    /// Compiles the built-in rules and `custom`. The error names the custom rule and what is
    /// wrong with it.
    pub fn new(custom: &[CustomRule]) -> Result<Self, String> {
        let compiled = compile_custom(custom)?;
        let rules = SPECS
            .iter()
            .map(|s| PatternRule {
                id: s.id,
                severity: s.severity,
                scope: s.scope,
                patterns: s.patterns.iter().map(|(p, r)| (ci(p), *r)).collect(),
            })
            .collect();
        Ok(Scanner {
            rules,
            special: Special::new(),
            custom: compiled,
            injection_set: std::sync::OnceLock::new(),
        })
    }

    /// An explanation of a rule (built-in or custom) for operators.
    pub fn describe(&self, rule: &str) -> Option<&str> {
        BUILTIN_RULES
            .iter()
            .find(|(id, _, _)| *id == rule)
            .map(|(_, _, text)| *text)
            .or_else(|| {
                self.custom.iter().find(|c| c.id == rule).map(|c| {
                    c.message
                        .as_deref()
                        .unwrap_or("matches an operator-defined rule")
                })
            })
    }

    /// Scans one definition. `kind` is "tool", "prompt", "resource" or "resourceTemplate";
    /// `definition` is the JSON object as the upstream listed it; `other_tools` are tool names
    /// offered by OTHER upstreams (for shadowing checks).
    pub fn scan(&self, kind: &str, definition: &Value, other_tools: &[String]) -> Vec<Finding> {
        let own = definition.get("name").and_then(Value::as_str).unwrap_or("");
        let mut others: Vec<&str> = other_tools
            .iter()
            .map(String::as_str)
            .filter(|t| !t.is_empty() && *t != own)
            .collect();
        others.sort_unstable();
        others.dedup();
        let mut items = Vec::new();
        collect(definition, String::new(), Ctx::default(), &mut items);
        let mut out = Findings(Vec::new());
        for item in &items {
            self.scan_item(kind, item, own, &others, &mut out);
        }
        out.0
    }

    fn scan_item(
        &self,
        kind: &str,
        item: &Item<'_>,
        own: &str,
        others: &[&str],
        out: &mut Findings,
    ) {
        let text = item.text;
        if let Some((s, e)) = invisible_span(text) {
            out.push(
                INVISIBLE_UNICODE,
                Severity::Critical,
                &item.path,
                excerpt(text, s, e, false),
            );
        }
        if item.is_key {
            return;
        }
        let norm = normalize(text);
        for rule in &self.rules {
            let applies = match rule.scope {
                Scope::All => true,
                Scope::NotUrl => !item.url_field,
                Scope::Schema => item.in_schema,
            };
            if !applies {
                continue;
            }
            if let Some((s, e)) = first_match(&norm, &rule.patterns) {
                out.push(
                    rule.id,
                    rule.severity,
                    &item.path,
                    excerpt(text, s, e, false),
                );
            }
        }
        if !item.url_field {
            let (bad, link) = self.special.links(&norm, item.example_field);
            if let Some((s, e)) = bad {
                let (s, e) = norm.original(s, e);
                out.push(
                    EXFILTRATION_TARGET,
                    Severity::Medium,
                    &item.path,
                    excerpt(text, s, e, false),
                );
            }
            if let Some((s, e)) = link {
                let (s, e) = norm.original(s, e);
                out.push(
                    EXTERNAL_LINK,
                    Severity::Info,
                    &item.path,
                    excerpt(text, s, e, false),
                );
            }
            if let Some((s, e)) = self.special.shadowing(&norm, own, others) {
                let (s, e) = norm.original(s, e);
                out.push(
                    CROSS_TOOL_SHADOWING,
                    Severity::Critical,
                    &item.path,
                    excerpt(text, s, e, false),
                );
            }
        }
        if item.key == Some("description") && text.chars().count() > LONG_DESCRIPTION_CHARS {
            out.push(
                LONG_DESCRIPTION,
                Severity::Low,
                &item.path,
                excerpt(text, 0, text.len(), false),
            );
        }
        if item.path == "name" && homoglyph(text, kind) {
            out.push(
                HOMOGLYPH_NAME,
                Severity::High,
                &item.path,
                excerpt(text, 0, text.len(), true),
            );
        }
        for c in &self.custom {
            if let Some(m) = c.regex.find_iter(&norm.text).find(|m| !m.is_empty()) {
                let (s, e) = norm.original(m.start(), m.end());
                out.push(&c.id, c.severity, &item.path, excerpt(text, s, e, false));
            }
        }
    }
}

/// The rules whose match in a result is text addressed to the model rather than to its
/// user (indirect prompt injection), which the output guardrails apply to results.
pub const INJECTION_RULES: [&str; 5] = [
    INSTRUCTION_OVERRIDE,
    CONCEALMENT,
    HIDDEN_BLOCK,
    MODEL_DIRECTED,
    SECRET_REQUEST,
];

impl Scanner {
    /// The first injection-shaped text in `text` (a string of a result): the rule (one of
    /// [`INJECTION_RULES`] or a custom rule) and where it matched in `text`.
    pub fn injection(&self, text: &str) -> Option<(String, usize, usize)> {
        // Results are long and rarely match: one pass of every pattern at once rules most
        // text out. Plain ASCII text is what normalizing would make it, so it is not copied
        // first; other text is normalized, then tested.
        let set = self.injection_set.get_or_init(|| self.injection_patterns());
        let plain = text
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r'));
        if plain && !set.is_match(text) {
            return None;
        }
        let norm = normalize(text);
        if !plain && !set.is_match(&norm.text) {
            return None;
        }
        for rule in &self.rules {
            if !INJECTION_RULES.contains(&rule.id) {
                continue;
            }
            if let Some((s, e)) = first_match(&norm, &rule.patterns) {
                return Some((rule.id.to_owned(), s, e));
            }
        }
        self.custom.iter().find_map(|c| {
            let m = c.regex.find_iter(&norm.text).find(|m| !m.is_empty())?;
            let (s, e) = norm.original(m.start(), m.end());
            Some((c.id.clone(), s, e))
        })
    }
}

impl Scanner {
    /// The injection rules' patterns and the custom ones as one set. Word boundaries are
    /// ASCII ones here, which lets the set run as a DFA (a Unicode `\b` cannot): a prefilter
    /// that may let through what the exact patterns then refuse, never the other way round
    /// on the normalized text, whose letters the patterns name are ASCII.
    fn injection_patterns(&self) -> Regex {
        let patterns: Vec<String> = self
            .rules
            .iter()
            .filter(|r| INJECTION_RULES.contains(&r.id))
            .flat_map(|r| r.patterns.iter())
            .map(|(re, _)| re.as_str().replace(r"\b", r"(?-u:\b)"))
            .chain(self.custom.iter().map(|c| c.regex.as_str().to_owned()))
            .map(|p| format!("(?:{p})"))
            .collect();
        RegexBuilder::new(&patterns.join("|"))
            .case_insensitive(true)
            .size_limit(64 << 20)
            .dfa_size_limit(64 << 20)
            .build()
            .expect("the rules' patterns compile, with ASCII word boundaries too")
    }
}

/// Findings, at most one per (rule, field).
struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, rule: &str, severity: Severity, field: &str, excerpt: String) {
        if self.0.iter().any(|f| f.rule == rule && f.field == field) {
            return;
        }
        self.0.push(Finding {
            rule: rule.to_owned(),
            severity,
            field: field.to_owned(),
            excerpt,
        });
    }
}

/// The highest severity among findings (None when empty).
pub fn worst(findings: &[Finding]) -> Option<Severity> {
    findings.iter().map(|f| f.severity).max()
}

fn first_match(norm: &Norm, patterns: &[(Regex, Option<Reject>)]) -> Option<(usize, usize)> {
    patterns.iter().find_map(|(re, reject)| {
        re.find_iter(&norm.text)
            .find(|m| !m.is_empty() && !reject.is_some_and(|r| r(&norm.text, m.start(), m.end())))
            .map(|m| norm.original(m.start(), m.end()))
    })
}

// ---------------------------------------------------------------------------------------------
// Walking the definition

#[derive(Debug, Clone, Copy, Default)]
struct Ctx<'a> {
    in_schema: bool,
    in_icons: bool,
    example: bool,
    key: Option<&'a str>,
}

struct Item<'a> {
    path: String,
    text: &'a str,
    /// The member name this string is the value of (or, inside an array, the array's).
    key: Option<&'a str>,
    in_schema: bool,
    url_field: bool,
    example_field: bool,
    /// The string is an object key, not a value.
    is_key: bool,
}

fn collect<'a>(v: &'a Value, path: String, ctx: Ctx<'a>, out: &mut Vec<Item<'a>>) {
    match v {
        Value::String(s) => {
            let url_field = ctx.in_icons
                || matches!(
                    ctx.key,
                    Some("uri" | "uriTemplate" | "$schema" | "$id" | "$ref" | "src" | "websiteUrl")
                );
            out.push(Item {
                path,
                text: s,
                key: ctx.key,
                in_schema: ctx.in_schema,
                url_field,
                example_field: ctx.example,
                is_key: false,
            });
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect(x, format!("{path}[{i}]"), ctx, out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let p = join(&path, k);
                if !k.is_ascii() || k.chars().any(char::is_control) {
                    out.push(Item {
                        path: p.clone(),
                        text: k,
                        key: None,
                        in_schema: ctx.in_schema,
                        url_field: false,
                        example_field: false,
                        is_key: true,
                    });
                }
                let top = path.is_empty();
                let child = Ctx {
                    in_schema: ctx.in_schema
                        || (top
                            && matches!(k.as_str(), "inputSchema" | "outputSchema" | "arguments")),
                    in_icons: ctx.in_icons || (top && k == "icons"),
                    example: ctx.example || matches!(k.as_str(), "examples" | "example"),
                    key: Some(k),
                };
                collect(x, p, child, out);
            }
        }
        _ => {}
    }
}

/// `path.key`, or `path["key"]` when the key is not a plain identifier.
fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$' | '@'));
    if plain {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    } else {
        let mut quoted = String::from("[\"");
        for c in key.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                c => escape_into(&mut quoted, c, false),
            }
        }
        quoted.push_str("\"]");
        format!("{path}{quoted}")
    }
}
