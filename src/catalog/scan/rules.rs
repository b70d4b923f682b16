//! The built-in rules: their ids, severities and explanations; the patterns each pattern rule
//! matches and where it applies; the hosts that make a destination an exfiltration target; and
//! the filters that reject benign look-alikes of a pattern.

use super::Severity;

/// Ignore/disregard previous instructions, "you must now", new instructions, references to the
/// model's system prompt.
pub const INSTRUCTION_OVERRIDE: &str = "instruction-override";
/// Asks the model to hide what it does: "do not tell the user", "without the user knowing",
/// "secretly".
pub const CONCEALMENT: &str = "concealment";
/// Pseudo-markup that marks text as privileged: `<IMPORTANT>`, `<SYSTEM>`, `<instructions>`,
/// `[INST]`, `<<SYS>>`, chat-template tokens, HTML comments.
pub const HIDDEN_BLOCK: &str = "hidden-block";
/// Mentions files that hold secrets: `~/.ssh`, `id_rsa`, `.env`, `/etc/passwd`,
/// `.aws/credentials`, `mcp.json`, `claude_desktop_config`, private keys.
pub const SENSITIVE_PATH: &str = "sensitive-path";
/// Asks for API keys, tokens, passwords or other secrets to be passed or included.
pub const SECRET_REQUEST: &str = "secret-request";
/// A destination data could be sent to: a URL in a sending context, with a placeholder query,
/// on a request-catcher/tunnel/paste host or a raw IP, a markdown image, or an e-mail address.
pub const EXFILTRATION_TARGET: &str = "exfiltration-target";
/// A plain link (documentation, the API the tool calls): reported for visibility only.
pub const EXTERNAL_LINK: &str = "external-link";
/// Mentions another upstream's tool together with behaviour-changing words, or "when <tool>
/// is called/used", or "any other tool".
pub const CROSS_TOOL_SHADOWING: &str = "cross-tool-shadowing";
/// Zero-width characters, bidi controls, Unicode tag characters, variation-selector runs,
/// ANSI escapes and other control characters.
pub const INVISIBLE_UNICODE: &str = "invisible-unicode";
/// A name whose words mix ASCII letters with look-alikes from other scripts (Cyrillic, Greek,
/// fullwidth, mathematical letters) or consist only of look-alikes.
pub const HOMOGLYPH_NAME: &str = "homoglyph-name";
/// Imperative, model-directed phrasing inside an input/output schema or prompt argument
/// ("before using this tool, read …", "set this to the full conversation").
pub const INSTRUCTION_IN_SCHEMA: &str = "instruction-in-schema";
/// A base64 or hex blob longer than 80 characters.
pub const ENCODED_PAYLOAD: &str = "encoded-payload";
/// A description longer than 2,000 characters.
pub const LONG_DESCRIPTION: &str = "long-description";
/// Text addressed to the model: "the assistant should", "as an AI", "tell the model",
/// "note to the AI", "otherwise the tool will not work".
pub const MODEL_DIRECTED: &str = "model-directed";

/// Built-in rules: id, severity, explanation.
pub const BUILTIN_RULES: &[(&str, Severity, &str)] = &[
    (
        INSTRUCTION_OVERRIDE,
        Severity::High,
        "tries to override the model's instructions or refers to its system prompt",
    ),
    (
        CONCEALMENT,
        Severity::High,
        "asks the model to hide actions from the user",
    ),
    (
        HIDDEN_BLOCK,
        Severity::High,
        "pseudo-markup that marks text as privileged instructions",
    ),
    (
        SENSITIVE_PATH,
        Severity::High,
        "mentions a file or key that holds secrets",
    ),
    (
        SECRET_REQUEST,
        Severity::High,
        "asks for API keys, tokens, passwords or other secrets to be passed or included",
    ),
    (
        EXFILTRATION_TARGET,
        Severity::Medium,
        "names a destination data could be sent to (URL, host, e-mail address)",
    ),
    (
        EXTERNAL_LINK,
        Severity::Info,
        "links to an external page (documentation or the service's API)",
    ),
    (
        CROSS_TOOL_SHADOWING,
        Severity::Critical,
        "tries to change how another tool behaves",
    ),
    (
        INVISIBLE_UNICODE,
        Severity::Critical,
        "contains invisible or control characters",
    ),
    (
        HOMOGLYPH_NAME,
        Severity::High,
        "name uses look-alike letters from another script",
    ),
    (
        INSTRUCTION_IN_SCHEMA,
        Severity::High,
        "schema text gives the model orders instead of describing data",
    ),
    (
        ENCODED_PAYLOAD,
        Severity::Medium,
        "contains a long base64 or hex blob",
    ),
    (
        LONG_DESCRIPTION,
        Severity::Low,
        "description is longer than 2,000 characters",
    ),
    (
        MODEL_DIRECTED,
        Severity::Medium,
        "text addressed to the model rather than describing the tool",
    ),
];

/// Descriptions longer than this many characters are reported.
pub(super) const LONG_DESCRIPTION_CHARS: usize = 2000;

/// Where a pattern rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every string.
    All,
    /// Every string except URL-valued structural members (`uri`, `$schema`, icon `src`…).
    NotUrl,
    /// Strings inside `inputSchema`, `outputSchema` or prompt `arguments`.
    Schema,
}

/// Decides, given the normalized text and a match's byte range, that the match is benign.
pub(super) type Reject = fn(&str, usize, usize) -> bool;

pub(super) struct Spec {
    pub(super) id: &'static str,
    pub(super) severity: Severity,
    pub(super) scope: Scope,
    pub(super) patterns: &'static [(&'static str, Option<Reject>)],
}

/// Words that name a secret.
macro_rules! secret_noun {
    () => {
        r"(?:api[_\s-]?keys?|access[_\s-]?tokens?|refresh[_\s-]?tokens?|auth(?:entication|orization)?[_\s-]?tokens?|bearer[_\s-]?tokens?|oauth[_\s-]?tokens?|session[_\s-]?(?:tokens?|cookies?)|secret[_\s-]?keys?|client[_\s-]?secrets?|secrets|passwords?|passphrases?|passcodes?|credentials|cookies|private[_\s-]?keys?|ssh[_\s-]?keys?|seed[_\s-]?phrases?|recovery[_\s-]?phrases?|mnemonics?|env(?:ironment)?[_\s-]?variables|(?-i:\$?[A-Z][A-Z0-9]*_(?:API_KEY|KEY|TOKEN|SECRET|SECRET_KEY|ACCESS_KEY|PASSWORD|PAT)))"
    };
}

/// Phrases addressed to the model; shared by `model-directed` (everywhere) and
/// `instruction-in-schema` (inside schemas).
macro_rules! model_directed_patterns {
    () => {
        [
            (
                r"\b(?:the|an?)\s+(?:ai|assistant|model|llm|language\s+model|ai\s+assistant|ai\s+agent|chatbot|claude|chatgpt|gpt|copilot)\s+(?:should|must|shall|needs?\s+to|has\s+to|is\s+required\s+to|will\s+need\s+to|ought\s+to|may\s+not|must\s+not|should\s+not|is\s+instructed\s+to)\b",
                Some(reject_passive_data as Reject),
            ),
            (
                r"\bas\s+an?\s+(?:ai|language\s+model|llm|ai\s+assistant|ai\s+model|large\s+language\s+model)\b",
                None,
            ),
            (
                r"\b(?:tell|instruct|remind|direct|order|force)\s+(?:the\s+)?(?:model|assistant|ai|llm|agent|chatbot|language\s+model)\b",
                None,
            ),
            (
                r"\b(?:note|reminder|attention|notice|important|info)\s+(?:for|to)\s+(?:the\s+)?(?:ai|assistant|model|llm|agent|language\s+model|claude|chatgpt)\b",
                None,
            ),
            (
                r"\b(?:hey|dear|attention|hello|hi)\s*,?\s+(?:ai|assistant|claude|chatgpt|gpt|model|llm|agent|copilot)\b",
                None,
            ),
            (
                r"\b(?:if|when)\s+you\s+are\s+an?\s+(?:ai|llm|language\s+model|assistant|agent|ai\s+assistant)\b",
                None,
            ),
            (
                r"\byou\s+are\s+an?\s+(?:ai|llm|large\s+language\s+model|language\s+model|ai\s+assistant|helpful\s+assistant)\b",
                None,
            ),
            (
                r"\b(?:ai|llm|assistant|model)s?\s+(?:reading|processing|seeing)\s+this\b",
                None,
            ),
            (
                r"\b(?:before|prior\s+to)\s+(?:using|calling|invoking|running|executing)\s+(?:this|the)\s+(?:tool|function)\b[^.\n]{0,30}?\b(?:fetch|collect|gather|upload|send|include|append|attach|copy|paste|forward|exfiltrate)\b",
                None,
            ),
            (
                r"\botherwise\b[^.\n]{0,40}\b(?:tool|function|request|call|system|it)\b[^.\n]{0,12}\b(?:will|would|won'?t|may|might|can)\s+(?:not\s+work|fail|break|crash|error|be\s+rejected|stop\s+working)",
                None,
            ),
        ]
    };
}

const MODEL_DIRECTED_PATTERNS: &[(&str, Option<Reject>)] = &model_directed_patterns!();

const SCHEMA_PATTERNS: &[(&str, Option<Reject>)] = &{
    let own: [(&str, Option<Reject>); 7] = [
        (
            r"\b(?:before|prior\s+to)\s+(?:using|calling|invoking|running|executing)\s+(?:this|the)\s+(?:tool|function)\b[^.\n]{0,30}?\b(?:read|open|cat|load|access|upload|send|include|append|copy|fetch|collect|gather|attach|paste|look\s+up)\b",
            None,
        ),
        (
            r"\b(?:read|open|cat|load|access|upload|send|include|append|copy|fetch|collect|gather|attach|paste)\b[^.\n]{0,80}\bbefore\s+(?:using|calling|invoking|running)\s+(?:this|the)\s+(?:tool|function)\b",
            None,
        ),
        (
            r"\b(?:read|open|cat|load|fetch|collect|gather)\b[^.\n]{0,80}?\band\s+(?:then\s+)?(?:pass|send|put|include|insert|append|paste|copy|use|provide|add)\s+(?:its|their|the|all|that|this)\s+(?:full\s+|entire\s+|whole\s+|raw\s+)?(?:contents?|text|data|output|value|results?)\b",
            None,
        ),
        (
            r"\b(?:always|must)\s+(?:be\s+)?(?:set|fill|filled|populate|populated|include|included|put|pass|passed|provide|provided|send|sent)\b[^.\n]{0,40}\b(?:conversation|chat\s+history|previous\s+messages|message\s+history|system\s+prompt|all\s+(?:files|messages|emails|previous)|entire\s+(?:conversation|history|chat|context|inbox|directory)|full\s+(?:conversation|history|chat|context))\b",
            None,
        ),
        (
            r"\b(?:set|fill|populate)\s+(?:this|it)\s+(?:field\s+|parameter\s+|argument\s+)?(?:to|with)\s+(?:the\s+)?(?:contents?|full|entire|whole|conversation|chat|history|system|all)\b",
            None,
        ),
        (
            r"\byou\s+(?:must|should|need\s+to|have\s+to|are\s+required\s+to)\s+(?:now|read|send|include|append|ignore|forward|copy|upload|exfiltrate|secretly|silently|first\s+read|also\s+(?:read|send|include|append|forward|copy|upload)|not\s+(?:tell|mention|inform|reveal))\b",
            None,
        ),
        (
            r"\b(?:the\s+)?(?:tool|function)\s+(?:will|would)\s+(?:not\s+work|fail|crash|break|error)\s+(?:unless|if\s+(?:you\s+)?(?:do\s+not|don'?t))",
            None,
        ),
    ];
    let shared: [(&str, Option<Reject>); 10] = model_directed_patterns!();
    let mut all: [(&str, Option<Reject>); 17] = [("", None); 17];
    let mut i = 0;
    while i < 7 {
        all[i] = own[i];
        i += 1;
    }
    while i < 17 {
        all[i] = shared[i - 7];
        i += 1;
    }
    all
};

pub(super) const SPECS: &[Spec] = &[
    Spec {
        id: INSTRUCTION_OVERRIDE,
        severity: Severity::High,
        scope: Scope::All,
        patterns: &[
            (
                r"\b(?:ignore|disregard|forget|override|bypass|skip)\s+(?:all\s+|any\s+|each\s+)?(?:of\s+)?(?:the\s+|your\s+|my\s+|these\s+|those\s+)?(?:previous|prior|above|earlier|preceding|foregoing|original|initial|existing|system|safety|security|other)\s+(?:instructions?|prompts?|rules|directions|directives|guidelines|guidance|context|messages?|constraints|policies|restrictions|guardrails|commands)\b",
                None,
            ),
            (
                r"\b(?:ignore|disregard|forget)\s+(?:all|everything|anything)\s+(?:you\s+(?:were|have\s+been)\s+told|(?:that\s+)?(?:was\s+|you\s+were\s+)?(?:said|stated|written|given)\s+(?:before|above|earlier|previously))",
                None,
            ),
            (
                r"\bdisregard\s+(?:all|any|your|previous|prior|above|earlier|everything|safety|security|the\s+(?:user|previous|above|prior|system|safety|security|instructions?|rules|guidelines))\b",
                None,
            ),
            (r"\byou\s+must\s+now\b", None),
            (
                r"\bfrom\s+now\s+on,?\s+(?:you|the\s+(?:assistant|model|ai))\b",
                None,
            ),
            (
                r"\byou\s+are\s+now\s+(?:a|an|in|the|my|operating|acting|free|no\s+longer|unrestricted|jailbroken)\b",
                None,
            ),
            (
                r"\b(?:new|updated|real|true|actual|revised|override)\s+(?:system\s+)?instructions?\s*:",
                None,
            ),
            (
                r"\byour\s+(?:real|true|actual|new|primary|hidden|secret)\s+(?:task|instructions?|purpose|goal|objective|mission|directive)\b",
                None,
            ),
            (
                r"\b(?:your|the\s+(?:assistant|model|ai|llm)'?s?)\s+system\s+(?:prompt|message|instructions)\b",
                None,
            ),
            (
                r"\b(?:reveal|print|output|repeat|leak|disclose|send|dump|include|append|share|show|copy|ignore|override|bypass|forget|replace)\b[^.\n]{0,25}\bsystem\s+(?:prompt|message|instructions)\b",
                None,
            ),
            (
                r"\b(?:instead\s+of|rather\s+than)\s+(?:following|obeying)\s+(?:the\s+)?(?:user|instructions)",
                None,
            ),
            (
                r"\bdo\s+not\s+follow\s+(?:the\s+)?(?:user'?s?|previous|prior|above|original|system)\b",
                None,
            ),
            (
                r"\bignore\s+(?:the\s+)?user'?s?\s+(?:request|instructions?|wishes|question)",
                None,
            ),
        ],
    },
    Spec {
        id: CONCEALMENT,
        severity: Severity::High,
        scope: Scope::All,
        patterns: &[
            (
                r"\b(?:do\s+not|don'?t|never|must\s+not|should\s+not|shouldn'?t|mustn'?t|without)\s+(?:ever\s+)?(?:tell(?:ing)?|inform(?:ing)?|ask(?:ing)?)\s+(?:the\s+|your\s+)?(?:user|users|human|operator|customer|person|anyone|anybody)\b",
                None,
            ),
            (
                r"\b(?:do\s+not|don'?t|never|must\s+not|should\s+not|shouldn'?t|mustn'?t)\s+(?:ever\s+)?(?:mention|reveal|disclose|explain|say|report|admit|show|display|acknowledge|reference)\b[^.\n]{0,60}?\b(?:to|with)\s+(?:the\s+|your\s+)?(?:user|users|human|operator|customer|person|anyone|anybody)\b",
                None,
            ),
            (
                r"\b(?:do\s+not|don'?t|never)\s+(?:ever\s+)?(?:mention|reveal|disclose|acknowledge|reference|talk\s+about|discuss)\s+(?:this|these|that|it|the\s+(?:above|following|instructions?|note|sidenote|side\s+note|step|request|data|file|contents?))\b",
                None,
            ),
            (
                r"\b(?:without|before)\s+(?:the\s+)?(?:user|users|human|operator)(?:'s)?\s+(?:knowing|knowledge|noticing|awareness|seeing|realizing|being\s+aware|finding\s+out|consent|approval|permission)\b",
                None,
            ),
            (
                r"\b(?:secretly|covertly|surreptitiously|stealthily|clandestinely|(?:quietly|silently)\s+(?:send|forward|copy|upload|include|add|read|exfiltrate|bcc|cc|attach|transmit|post))\b",
                None,
            ),
            (
                r"\b(?:hide|conceal|keep|hidden)\s+(?:this|it|these|them|that|the\s+\w+)?\s*(?:secret\s+)?from\s+(?:the\s+)?(?:user|users|human|operator)\b",
                None,
            ),
            (
                r"\b(?:the\s+)?(?:user|human)\s+(?:must|should|need|needs|shall)\s+(?:not|never)\s+(?:know|see|notice|find\s+out|learn|be\s+(?:told|informed|aware|notified))",
                None,
            ),
            (
                r"\b(?:do\s+not|don'?t|never)\s+let\s+(?:the\s+)?(?:user|users|human|anyone)\s+(?:know|see|notice|find\s+out)",
                None,
            ),
        ],
    },
    Spec {
        id: HIDDEN_BLOCK,
        severity: Severity::High,
        scope: Scope::All,
        patterns: &[
            (
                r"<\s*/?\s*(?:important|system|instructions?|secret|hidden|admin|override|critical|system[-_ ]?(?:prompt|message|instructions?)|assistant[-_ ]?instructions?|ai[-_ ]?instructions?|note[-_ ]?to[-_ ]?(?:ai|assistant|model|llm))(?:\s[^<>]*)?/?>",
                None,
            ),
            (r"\[\s*/?\s*(?:INST|SYS|SYSTEM)\s*\]", None),
            (r"<<\s*/?\s*SYS\s*>>", None),
            (
                r"<\|\s*(?:im_start|im_end|system|user|assistant|endoftext|start_header_id|end_header_id|eot_id)\s*\|>",
                None,
            ),
            (r"<!--\s*[a-z@#\[<{]", None),
        ],
    },
    Spec {
        id: SENSITIVE_PATH,
        severity: Severity::High,
        scope: Scope::All,
        patterns: &[
            (
                r"~/\.ssh\b|\$HOME/\.ssh\b|/\.ssh/|\.ssh/(?:id_|authorized_keys|known_hosts|config)",
                None,
            ),
            (r"\bid_(?:rsa|dsa|ecdsa|ed25519)(?:\.pub)?\b", None),
            (
                r#"(?:^|[\s/\\"'`(=:~])\.env(?:\.(?:local|production|prod|development|dev|staging|test))?\b"#,
                Some(reject_env_template as Reject),
            ),
            (
                r"/etc/(?:passwd|shadow|sudoers|master\.passwd|gshadow)\b",
                None,
            ),
            (
                r"\.aws/(?:credentials|config)\b|\baws_secret_access_key\b",
                None,
            ),
            (
                r"\bmcp\.json\b|\bclaude_desktop_config(?:\.json)?\b|\.cursor/mcp|\bmcp_config\.json\b",
                None,
            ),
            (r"-----BEGIN\s+(?:[A-Z]+\s+)*PRIVATE\s+KEY-----", None),
            (
                r"\b(?:read|cat|open|load|include|send|upload|copy|print|output|return|pass|attach|extract|fetch|collect|dump|exfiltrate|leak)\b[^.\n]{0,40}\bprivate\s+keys?\b",
                None,
            ),
            (
                r"\.kube/config\b|\.docker/config\.json\b|(?:^|[\s/~])\.(?:npmrc|pypirc|netrc|pgpass|git-credentials|bash_history|zsh_history)\b|\.gnupg\b|/proc/self/environ\b|\.config/gcloud\b|\bwallet\.dat\b|\.password-store\b",
                None,
            ),
        ],
    },
    Spec {
        id: SECRET_REQUEST,
        severity: Severity::High,
        scope: Scope::All,
        patterns: &[
            (
                concat!(
                    r"\b(?:include|pass|send|append|attach|add|provide|put|insert|embed|copy|paste|forward|share|supply|output|print|reveal|leak|enter|give|submit|collect|gather|extract|dump)\b[^.\n]{0,50}?\b(?:your|the\s+user'?s|users'?|all|any|every|their|his|her|current|stored|saved|cached|available|existing|relevant|known|the\s+(?:value|contents?)\s+of(?:\s+the)?)\s+(?:[\w-]+\s+){0,2}?",
                    secret_noun!(),
                    r"\b"
                ),
                Some(reject_secret_topic as Reject),
            ),
            (
                concat!(
                    r"\b",
                    secret_noun!(),
                    r"\b[^.\n]{0,60}?\b(?:as|in|into|via|through|inside)\s+(?:the\s+|this\s+|a\s+)?[`'\x22]?[\w-]+[`'\x22]?\s+(?:parameter|argument|arg|field|param|property|input)\b"
                ),
                None,
            ),
            (
                concat!(
                    r"\b(?:include|send|append|attach|embed|copy|paste|forward|share|output|print|reveal|leak)\b[^.\n]{0,30}?(?:the\s+(?:value|contents?)\s+of\s+)?",
                    r"(?-i:\$?[A-Z][A-Z0-9]*_(?:API_KEY|KEY|TOKEN|SECRET|SECRET_KEY|ACCESS_KEY|PASSWORD|PAT))\b"
                ),
                None,
            ),
        ],
    },
    Spec {
        id: MODEL_DIRECTED,
        severity: Severity::Medium,
        scope: Scope::All,
        patterns: MODEL_DIRECTED_PATTERNS,
    },
    Spec {
        id: INSTRUCTION_IN_SCHEMA,
        severity: Severity::High,
        scope: Scope::Schema,
        patterns: SCHEMA_PATTERNS,
    },
    Spec {
        id: ENCODED_PAYLOAD,
        severity: Severity::Medium,
        scope: Scope::NotUrl,
        patterns: &[(
            r"[A-Za-z0-9+/_-]{81,}={0,2}",
            Some(reject_not_blob as Reject),
        )],
    },
];

/// Hosts that collect requests, tunnel to a laptop, or paste text: no documentation lives there.
pub(super) const EXFIL_HOSTS: &[&str] = &[
    "webhook.site webhook.cool ngrok.io ngrok.app ngrok.dev ngrok-free.app",
    "ngrok-free.dev pastebin.com paste.ee hastebin.com ghostbin.com dpaste.com",
    "dpaste.org rentry.co termbin.com 0x0.st requestbin.com requestbin.net",
    "pipedream.net burpcollaborator.net oastify.com oast.pro oast.live oast.site",
    "oast.online oast.fun oast.me interact.sh interactsh.com canarytokens.com",
    "transfer.sh file.io trycloudflare.com loca.lt localtunnel.me serveo.net",
    "beeceptor.com hookbin.com requestcatcher.com postb.in mockbin.org",
];

// ---------------------------------------------------------------------------------------------
// Rejections (benign look-alikes of a pattern)

/// `.env.example`, `.env.sample`, `.env.template`: templates without secrets.
fn reject_env_template(t: &str, _s: usize, e: usize) -> bool {
    let rest = t[e..].to_ascii_lowercase();
    [".example", ".sample", ".template", ".dist", ".defaults"]
        .iter()
        .any(|p| rest.starts_with(p))
}

/// "the user's password reset", "password policy": about a secret, not asking for one.
fn reject_secret_topic(t: &str, _s: usize, e: usize) -> bool {
    next_word(t, e).is_some_and(|w| {
        matches!(
            w.as_str(),
            "reset"
                | "policy"
                | "policies"
                | "requirements"
                | "requirement"
                | "strength"
                | "complexity"
                | "rotation"
                | "expiry"
                | "expiration"
                | "length"
                | "hint"
                | "manager"
                | "change"
                | "names"
                | "ids"
                | "metadata"
                | "count"
        )
    })
}

/// "the model should be one of …", "the model must exist": describing data, not the reader.
fn reject_passive_data(t: &str, _s: usize, e: usize) -> bool {
    next_word(t, e).is_some_and(|w| {
        matches!(
            w.as_str(),
            "be" | "exist"
                | "exists"
                | "match"
                | "support"
                | "supports"
                | "have"
                | "contain"
                | "accept"
                | "return"
        )
    })
}

fn next_word(t: &str, e: usize) -> Option<String> {
    let w: String = t[e..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect();
    (!w.is_empty()).then(|| w.to_lowercase())
}

/// Runs that are paths, identifiers or repeated letters rather than encoded data.
fn reject_not_blob(t: &str, s: usize, e: usize) -> bool {
    let run = &t[s..e];
    let body = run
        .strip_prefix("0x")
        .or_else(|| run.strip_prefix("0X"))
        .unwrap_or(run)
        .trim_end_matches('=');
    let n = body.len();
    let separators = body
        .bytes()
        .filter(|b| matches!(b, b'/' | b'-' | b'_' | b'+'))
        .count();
    if separators * 12 > n {
        return true;
    }
    if body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let digit = body.bytes().any(|b| b.is_ascii_digit());
    let upper = body.bytes().any(|b| b.is_ascii_uppercase());
    let lower = body.bytes().any(|b| b.is_ascii_lowercase());
    !(digit && upper && lower)
}
