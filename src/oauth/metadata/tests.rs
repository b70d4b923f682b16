//! The field and redirect URI rules, one case per rule.

use super::*;
use serde_json::json;

const PUBLIC: FieldRules<'static> = FieldRules {
    auth_methods: &[AuthMethod::None],
    default_auth_method: AuthMethod::None,
    redirect_hosts: &[],
};

fn parse(v: Value) -> Result<ClientMetadata, MetadataError> {
    parse_metadata(v.as_object().unwrap(), "id", &PUBLIC)
}

#[test]
fn oauth_redirect_uri_rules() {
    let ok = |u: &str| check_redirect_uri(u, &[]);
    assert!(ok("https://app.example/cb").is_ok());
    assert!(ok("http://127.0.0.1:3000/cb").is_ok());
    assert!(ok("http://[::1]/cb").is_ok());
    assert!(ok("http://localhost:9/cb").is_ok());
    assert!(ok("cursor://anysphere.cursor-retrieval/oauth/callback").is_ok());
    assert!(ok("com.example.app:/oauth2redirect").is_ok());
    assert!(
        ok("http://app.example/cb")
            .unwrap_err()
            .contains("loopback")
    );
    assert!(ok("http://127.0.0.1.evil.example/cb").is_err());
    assert!(
        ok("https://app.example/cb#x")
            .unwrap_err()
            .contains("fragment")
    );
    for bad in [
        "javascript:alert(1)",
        "data:text/html,x",
        "file:///etc/passwd",
        "JavaScript:x",
    ] {
        assert!(ok(bad).unwrap_err().contains("never allowed"), "{bad}");
    }
    assert!(ok("/relative/cb").unwrap_err().contains("absolute"));
    assert!(
        ok("https://app.example/cb\n")
            .unwrap_err()
            .contains("whitespace")
    );
    assert!(
        ok("https://u:p@app.example/cb")
            .unwrap_err()
            .contains("user name")
    );
    let hosts = vec!["app.example".to_owned(), "*.corp.example".to_owned()];
    assert!(check_redirect_uri("https://APP.example/cb", &hosts).is_ok());
    assert!(check_redirect_uri("https://a.corp.example/cb", &hosts).is_ok());
    assert!(check_redirect_uri("https://corp.example/cb", &hosts).is_err());
    assert!(check_redirect_uri("https://evilcorp.example/cb", &hosts).is_err());
    assert!(check_redirect_uri("http://127.0.0.1:1/cb", &hosts).is_ok());
}

#[test]
fn oauth_loopback_redirects_match_on_any_port_only() {
    assert!(redirect_matches(
        "https://a.example/cb",
        "https://a.example/cb"
    ));
    assert!(!redirect_matches(
        "https://a.example/cb",
        "https://a.example:444/cb"
    ));
    assert!(!redirect_matches(
        "https://a.example/cb",
        "https://a.example/cb/"
    ));
    assert!(redirect_matches(
        "http://127.0.0.1/cb",
        "http://127.0.0.1:51234/cb"
    ));
    assert!(redirect_matches(
        "http://127.0.0.1:3000/cb",
        "http://127.0.0.1:4000/cb"
    ));
    assert!(redirect_matches(
        "http://[::1]/cb?x=1",
        "http://[::1]:7/cb?x=1"
    ));
    assert!(redirect_matches(
        "http://localhost/cb",
        "http://localhost:7/cb"
    ));
    assert!(!redirect_matches(
        "http://127.0.0.1/cb",
        "http://localhost:7/cb"
    ));
    assert!(!redirect_matches(
        "http://127.0.0.1/cb",
        "http://127.0.0.1:7/other"
    ));
    assert!(!redirect_matches(
        "http://127.0.0.1/cb",
        "http://127.0.0.1:7/x/../cb"
    ));
    assert!(!redirect_matches(
        "http://127.0.0.1/cb",
        "http://127.0.0.1:7/cb#f"
    ));
    assert!(!redirect_matches(
        "http://127.0.0.1/cb",
        "http://u@127.0.0.1:7/cb"
    ));
}

#[test]
fn oauth_metadata_fields_are_checked() {
    let m = parse(json!({"redirect_uris": ["http://127.0.0.1/cb"],
        "client_name": " Tool\u{202e}\u{7}X ", "scope": "a  b", "grant_types": ["authorization_code", "refresh_token", "refresh_token"]}))
    .unwrap();
    assert_eq!(m.client_name.as_deref(), Some("ToolX"));
    assert_eq!(m.scope.as_deref(), Some("a b"));
    assert_eq!(m.grant_types, ["authorization_code", "refresh_token"]);
    assert_eq!(m.response_types, ["code"]);
    assert_eq!(m.token_endpoint_auth_method, AuthMethod::None);

    assert_eq!(parse(json!({})), Err(MetadataError::MissingRedirectUris));
    assert_eq!(
        parse(json!({"redirect_uris": []})),
        Err(MetadataError::MissingRedirectUris)
    );
    assert!(matches!(
        parse(json!({"redirect_uris": [1]})),
        Err(MetadataError::BadRedirectUri { index: 0, .. })
    ));
    let e = parse(
        json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"]}),
    );
    assert!(
        e.unwrap_err()
            .to_string()
            .contains("grant_types contains client_credentials")
    );
    let e =
        parse(json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["refresh_token"]}));
    assert!(
        e.unwrap_err()
            .to_string()
            .contains("must include authorization_code")
    );
    let e = parse(json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}));
    assert!(
        e.unwrap_err()
            .to_string()
            .starts_with("response_types contains token")
    );
    let e =
        parse(json!({"redirect_uris": ["https://a.example/cb"], "client_name": "x".repeat(201)}));
    assert!(e.unwrap_err().to_string().contains("longer than 200"));
    let e = parse(
        json!({"redirect_uris": ["https://a.example/cb"], "logo_uri": "javascript:alert(1)"}),
    );
    assert!(
        e.unwrap_err()
            .to_string()
            .starts_with("logo_uri must be an https://")
    );
    let e = parse(json!({"redirect_uris": ["https://a.example/cb"], "scope": "a\"b"}));
    assert!(e.unwrap_err().to_string().starts_with("scope contains"));
    let e = parse(
        json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "client_secret_basic"}),
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "token_endpoint_auth_method client_secret_basic is not accepted here; use none"
    );
    let many: Vec<String> = (0..21).map(|i| format!("https://a.example/{i}")).collect();
    assert!(
        parse(json!({"redirect_uris": many}))
            .unwrap_err()
            .to_string()
            .contains("at most 20")
    );
}

#[test]
fn oauth_shown_strips_quotes_and_truncates() {
    assert_eq!(shown("a\"b\\c\u{1}é"), "a?b?c??");
    assert_eq!(shown(&"x".repeat(100)).chars().count(), 81);
}
