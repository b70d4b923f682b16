//! Each IdP section of docs/identity-providers.md, judged with a token shaped like that IdP's
//! (its claim names, its `aud` habits, its role and group claims): the documented configuration
//! must accept the token for the right reasons and map its attributes as the section says.
//! `gatehouse policy explain` judges the claims with the gateway's own guard (issuer, times,
//! audience) and principal mapping; signatures are covered by tests/auth.rs.

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// The first ```yaml block after the heading `## {section}` of the IdP guide.
fn documented(section: &str) -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/identity-providers.md"),
    )
    .unwrap();
    let start = doc
        .find(&format!("\n## {section}"))
        .unwrap_or_else(|| panic!("no section {section:?}"));
    let block = &doc[start..];
    let open = block.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let close = block[open..].find("```").unwrap();
    block[open..open + close].to_owned()
}

fn exp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600
}

/// Explains a call of `tool` for `claims` under the section's configuration.
fn explain(section: &str, claims: &Value, tool: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatehouse.yaml");
    std::fs::write(&config, documented(section)).unwrap();
    let file = dir.path().join("claims.json");
    std::fs::write(&file, claims.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["policy", "explain", "--config"])
        .arg(&config)
        .arg("--token-claims")
        .arg(&file)
        .args(["--tool", tool])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{section}: {text}"
    );
    (out.status.code() == Some(0), text)
}

const RESOURCE: &str = "https://gatehouse.example.com/mcp";

#[test]
fn okta_scp_array_cid_and_groups() {
    let token = |scp: Value| {
        json!({
            "iss": "https://example.okta.com/oauth2/aus1gatehouse", "aud": RESOURCE,
            "sub": "alice@example.com", "uid": "00u1abcd", "cid": "0oa1mcpclient",
            "scp": scp, "groups": ["mcp-sales"], "exp": exp(), "iat": exp() - 600,
        })
    };
    let (ok, out) = explain(
        "Okta",
        &token(json!(["mcp:tools", "crm:write"])),
        "delete_contact",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(r#"sub=alice@example.com groups=["mcp-sales"]"#)
            && out.contains(r#"scopes=["mcp:tools", "crm:write"]"#),
        "{out}"
    );
    let (ok, out) = explain("Okta", &token(json!(["mcp:tools"])), "delete_contact");
    assert!(!ok && out.contains("missing crm:write"), "{out}");
    // The org authorization server's tokens are not this issuer's.
    let mut org = token(json!(["mcp:tools"]));
    org["iss"] = json!("https://example.okta.com");
    let (ok, out) = explain("Okta", &org, "search");
    assert!(!ok && out.contains("is not trusted"), "{out}");
}

#[test]
fn auth0_permissions_namespaced_claims_and_userinfo_in_aud() {
    let token = json!({
        "iss": "https://example.eu.auth0.com/",
        "aud": [RESOURCE, "https://example.eu.auth0.com/userinfo"],
        "sub": "auth0|64f1", "azp": "mcpclient", "scope": "openid mcp:tools",
        "permissions": ["mcp:tools", "crm:read"],
        "https://gatehouse.example/groups": ["sales"], "exp": exp(),
    });
    let (ok, out) = explain("Auth0", &token, "search");
    assert!(ok, "{out}");
    assert!(
        out.contains(
            r#"groups=["sales"] roles=["mcp:tools", "crm:read"] scopes=["openid", "mcp:tools"]"#
        ),
        "{out}"
    );
    // Without the trailing slash the issuer is another one (Auth0's `iss` has it).
    let mut bare = token.clone();
    bare["iss"] = json!("https://example.eu.auth0.com");
    assert!(!explain("Auth0", &bare, "search").0);
    // A token for the userinfo endpoint only is not for Gatehouse.
    let mut userinfo = token;
    userinfo["aud"] = json!("https://example.eu.auth0.com/userinfo");
    let (ok, out) = explain("Auth0", &userinfo, "search");
    assert!(!ok && out.contains("is not this server"), "{out}");
}

#[test]
fn keycloak_realm_and_client_roles_both_count_and_account_in_aud() {
    let token = json!({
        "iss": "https://kc.example.com/realms/corp", "aud": [RESOURCE, "account"],
        "sub": "5b3e0c9a-1f2d-4e8b-9c7a-6d5e4f3a2b1c", "azp": "mcp-client",
        "scope": "openid mcp:tools", "groups": ["/mcp-admins"],
        "realm_access": {"roles": ["admin", "offline_access"]},
        "resource_access": {"gatehouse": {"roles": ["crm-reader"]}, "account": {"roles": ["manage-account"]}},
        "exp": exp(),
    });
    let (ok, out) = explain("Keycloak", &token, "search");
    assert!(ok, "{out}");
    // A client role must not hide the realm roles: a realm admin stays an admin.
    assert!(
        out.contains(r#"roles=["crm-reader", "admin", "offline_access"]"#),
        "{out}"
    );
    assert!(out.contains(r#"groups=["/mcp-admins"]"#), "{out}");
    // `account` alone (Keycloak's default audience) is not this server.
    let mut account = token;
    account["aud"] = json!("account");
    let (ok, out) = explain("Keycloak", &account, "search");
    assert!(!ok && out.contains("is not this server"), "{out}");
}

#[test]
fn entra_v2_scp_roles_tid_and_the_api_client_id_audience() {
    let token = |aud: &str, iss: &str| {
        json!({
            "iss": iss, "aud": aud, "ver": "2.0",
            "oid": "9f8e7d6c-0000-4000-8000-000000000001", "sub": "pairwise-sub",
            "tid": "3f6b5c1a-7d2e-4c3b-9a10-5e8f2d4c6b7a", "azp": "c0ffee00-0000-4000-8000-000000000002",
            "scp": "mcp.tools crm.write", "roles": ["Gatehouse.Admin"],
            "groups": ["1a2b3c4d-0000-4000-8000-000000000003"], "exp": exp(), "nbf": exp() - 900,
        })
    };
    let v2 = "https://login.microsoftonline.com/3f6b5c1a-7d2e-4c3b-9a10-5e8f2d4c6b7a/v2.0";
    let (ok, out) = explain(
        "Microsoft Entra ID",
        &token("0b7f2c1e-5d1a-4c39-9a57-3f2f4d6c8e10", v2),
        "delete_contact",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("sub=9f8e7d6c-0000-4000-8000-000000000001")
            && out.contains(r#"roles=["Gatehouse.Admin"] scopes=["mcp.tools", "crm.write"] tenant="3f6b5c1a-7d2e-4c3b-9a10-5e8f2d4c6b7a""#),
        "{out}"
    );
    // A v1 token (App ID URI audience, sts.windows.net issuer) needs its own issuer entry.
    let (ok, out) = explain(
        "Microsoft Entra ID",
        &token(
            "api://gatehouse",
            "https://sts.windows.net/3f6b5c1a-7d2e-4c3b-9a10-5e8f2d4c6b7a/",
        ),
        "search",
    );
    assert!(!ok && out.contains("is not trusted"), "{out}");
    let (ok, out) = explain(
        "Microsoft Entra ID",
        &token("api://gatehouse", v2),
        "search",
    );
    assert!(!ok && out.contains("is not this server"), "{out}");
}
