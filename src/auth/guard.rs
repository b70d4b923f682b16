//! What one virtual server requires: whose tokens, for which audience, with which scopes; and
//! how it says so (RFC 9728 metadata and RFC 6750 challenges).

use super::{AuthError, Authenticator, CredentialKind, Principal};
use crate::config::{ChallengeScopes, Config, ScopeRule, ServerAuth, VirtualServer};
use crate::protocol::FunctionKind;
use bytes::Bytes;
use http::HeaderMap;
use std::collections::HashMap;
use std::sync::Arc;

/// Longest credential looked at; anything longer is refused before hashing or parsing.
const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;

/// The path prefix of protected resource metadata (RFC 9728 §3).
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// The authentication requirements of one virtual server.
pub struct ServerGuard {
    auth: Arc<Authenticator>,
    server_path: String,
    resource: String,
    metadata_url: String,
    /// Accepted `iss` values, each with the audiences accepted from it.
    accepted: HashMap<String, Vec<String>>,
    /// Names (under `auth.issuers`) of the accepted issuers: the only ones opaque tokens
    /// sent to this server are introspected by.
    issuer_names: Vec<String>,
    scopes: Vec<String>,
    /// What a 401 challenge names (`auth.challenge_scopes`).
    challenge_scopes: Vec<String>,
    rules: Vec<ScopeRule>,
    api_keys: bool,
    /// With `tenancy`: the server's tenant (API keys must be made for named servers), and the
    /// tenant claim values its tokens must carry (none: any).
    tenant: Option<(String, Vec<String>)>,
    metadata: Bytes,
}

impl ServerGuard {
    /// The guard of `server`, or `None` when it does not require authentication.
    pub fn new(
        config: &Config,
        server: &VirtualServer,
        auth: Arc<Authenticator>,
    ) -> Option<ServerGuard> {
        let sa = server.auth.as_ref()?;
        // Policy rules can require scopes too (step-up): they are scopes of this server.
        let policy_scopes: Vec<String> = server
            .policy
            .iter()
            .flat_map(|p| &p.rules)
            .flat_map(|r| r.require_scopes.iter().cloned())
            .collect();
        Some(Self::build(
            config,
            &server.name,
            &server.path,
            sa,
            config.resource_uri(server),
            auth,
            &policy_scopes,
            config.tenant_of(server),
        ))
    }

    /// The guard of any protected path (a virtual server, or the admin API) with its
    /// canonical resource URI.
    pub fn for_resource(
        config: &Config,
        name: &str,
        path: &str,
        sa: &ServerAuth,
        resource: String,
        auth: Arc<Authenticator>,
    ) -> ServerGuard {
        Self::build(config, name, path, sa, resource, auth, &[], None)
    }

    /// The guard; `step_up` are scopes that rules outside `sa` (policy) can require; `tenant`
    /// is the server's (its issuers are the most it may accept, its `public_url` its base).
    #[allow(clippy::too_many_arguments)]
    fn build(
        config: &Config,
        name: &str,
        path: &str,
        sa: &ServerAuth,
        resource: String,
        auth: Arc<Authenticator>,
        step_up: &[String],
        tenant: Option<(&str, &crate::config::tenants::Tenant)>,
    ) -> ServerGuard {
        // "Every issuer" means the IdPs configured under auth.issuers, never Gatehouse's own
        // authorization server: a server accepts its tokens only when it names it. A tenant's
        // server: its tenant's issuers, narrowed by its own list.
        let names: Vec<&String> = if let (true, Some((_, t))) = (sa.issuers.is_empty(), tenant) {
            t.issuers.iter().collect()
        } else if sa.issuers.is_empty() {
            config
                .auth
                .issuers
                .keys()
                .filter(|n| n.as_str() != crate::config::oauth_server::FACADE_ISSUER_NAME)
                .collect()
        } else {
            sa.issuers.iter().collect()
        };
        let mut accepted = HashMap::new();
        let mut authorization_servers = Vec::new();
        let mut issuer_names = Vec::new();
        for name in names {
            let Some(issuer) = auth.issuer(name) else {
                continue;
            };
            issuer_names.push(name.clone());
            let mut audiences = vec![resource.clone()];
            audiences.extend(issuer.config.audiences.iter().cloned());
            accepted.insert(issuer.config.issuer.clone(), audiences);
            authorization_servers.push(issuer.config.issuer.clone());
        }
        let mut every = sa.scopes.clone();
        for r in &sa.require {
            add_scopes(&mut every, &r.scopes);
        }
        add_scopes(&mut every, step_up);
        let challenge_scopes = match &sa.challenge_scopes {
            ChallengeScopes::Required => sa.scopes.clone(),
            ChallengeScopes::All => every.clone(),
            ChallengeScopes::These(listed) => {
                let mut named = sa.scopes.clone();
                add_scopes(&mut named, listed);
                named
            }
        };
        // Whatever a challenge names is a scope of this resource too.
        add_scopes(&mut every, &challenge_scopes);
        let metadata = serde_json::json!({
            "resource": resource,
            "authorization_servers": authorization_servers,
            "scopes_supported": every,
            "bearer_methods_supported": ["header"],
            "resource_name": name,
        });
        ServerGuard {
            auth,
            server_path: path.to_owned(),
            metadata_url: format!(
                "{}{METADATA_PREFIX}{path}",
                config.tenant_base(tenant.map(|(_, t)| t))
            ),
            resource,
            accepted,
            issuer_names,
            scopes: sa.scopes.clone(),
            challenge_scopes,
            rules: sa.require.clone(),
            api_keys: sa.api_keys,
            tenant: tenant.map(|(name, t)| (name.to_owned(), t.claim_values.clone())),
            metadata: Bytes::from(serde_json::to_vec(&metadata).expect("metadata serializes")),
        }
    }

    /// The canonical resource URI.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Scopes every request to this server needs.
    pub fn base_scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The protected resource metadata document (JSON).
    pub fn metadata_document(&self) -> Bytes {
        self.metadata.clone()
    }

    /// Authenticates a request from its `Authorization` header.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, AuthError> {
        let credential = bearer_credential(headers)?;
        let verified = self.auth.verify_for(credential, &self.issuer_names).await?;
        let p = verified.principal;
        if p.kind() == CredentialKind::ApiKey {
            if !self.api_keys {
                return Err(AuthError::Invalid(
                    "this server does not accept API keys".into(),
                ));
            }
            // A key for every server would cross tenants: a tenant's server takes only keys
            // restricted to servers (of its own tenant: paths are unique unless resolved by
            // host, where validation refuses keys on a shared path).
            if self.tenant.is_some() && verified.servers.is_empty() {
                return Err(AuthError::Invalid(
                    "this server belongs to a tenant: use an API key restricted to its servers (--server)".into(),
                ));
            }
            if !verified.servers.is_empty() && !verified.servers.contains(&self.server_path) {
                return Err(AuthError::Invalid(format!(
                    "this API key is not valid for {}",
                    self.server_path
                )));
            }
            return Ok(p);
        }
        self.admit(p)
    }

    /// Judges claims that nobody verified exactly as [`authenticate`](Self::authenticate)
    /// judges a verified token's (trusted issuer, times, this server's issuers and audiences),
    /// without the signature: for `gatehouse policy explain`, which must not call ALLOWED what
    /// the gateway would answer with 401.
    pub fn judge_unverified(&self, claims: serde_json::Value) -> Result<Arc<Principal>, AuthError> {
        let iss = claims
            .get("iss")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| AuthError::Invalid("the token has no issuer (iss)".into()))?;
        let issuer = self
            .auth
            .issuer_by_iss(iss)
            .ok_or_else(|| AuthError::Invalid(format!("issuer {iss:?} is not trusted")))?;
        super::jwt::check_times(&claims, self.auth.settings.clock_skew.0.as_secs())?;
        let p = Principal::from_claims(claims, &issuer.config.claims, CredentialKind::Hypothetical)
            .map_err(AuthError::Invalid)?;
        self.admit(Arc::new(p))
    }

    /// What every token must also be for this server: from an issuer it accepts, and issued
    /// for it (RFC 8707) or for one of that issuer's aliases.
    fn admit(&self, p: Arc<Principal>) -> Result<Arc<Principal>, AuthError> {
        let Some(audiences) = self.accepted.get(p.issuer()) else {
            return Err(AuthError::Invalid(format!(
                "tokens from issuer {:?} are not accepted by this server",
                p.issuer()
            )));
        };
        // RFC 8707: the token must have been issued for this resource (or a configured alias).
        if !p
            .audiences()
            .iter()
            .any(|a| audiences.iter().any(|ok| same_resource(a, ok)))
        {
            return Err(AuthError::Invalid(format!(
                "the token's audience {:?} is not this server ({})",
                p.audiences(),
                self.resource
            )));
        }
        if let Some((_, values)) = &self.tenant
            && !values.is_empty()
            && !p.tenant().is_some_and(|t| values.iter().any(|v| v == t))
        {
            return Err(AuthError::Invalid(match p.tenant() {
                Some(t) => format!("the token's tenant {t:?} is not this server's tenant"),
                None => "the token names no tenant (claims.tenant), and this server's tenant requires one".into(),
            }));
        }
        Ok(p)
    }

    /// Checks that `principal` holds every scope a call needs (the server's scopes plus those
    /// of matching `require` rules); `target` is the tool or prompt name or resource URI.
    pub fn check_scopes(
        &self,
        principal: &Principal,
        method: &str,
        target: Option<&str>,
    ) -> Result<(), AuthError> {
        let required = required_scopes(&self.scopes, &self.rules, method, target);
        if principal.has_scopes(&required) {
            Ok(())
        } else {
            Err(AuthError::InsufficientScope { required })
        }
    }

    /// The `WWW-Authenticate` value for a refusal (RFC 6750 §3, RFC 9728 §5.1); `None` for
    /// failures that are not the client's to fix.
    pub fn challenge(&self, err: &AuthError) -> Option<String> {
        let mut parts = Vec::new();
        match err {
            AuthError::Missing => {}
            AuthError::Invalid(why) => {
                parts.push(r#"error="invalid_token""#.to_owned());
                parts.push(format!(r#"error_description="{}""#, quotable(why)));
            }
            AuthError::InsufficientScope { .. } => {
                parts.push(r#"error="insufficient_scope""#.to_owned());
                parts.push(format!(
                    r#"error_description="{}""#,
                    quotable(&err.to_string())
                ));
            }
            AuthError::Unavailable(_) => return None,
        }
        parts.push(format!(r#"resource_metadata="{}""#, self.metadata_url));
        let scopes = match err {
            AuthError::InsufficientScope { required } => required,
            _ => &self.challenge_scopes,
        };
        if !scopes.is_empty() {
            parts.push(format!(r#"scope="{}""#, scopes.join(" ")));
        }
        Some(format!("Bearer {}", parts.join(", ")))
    }
}

/// Every scope a call needs: `base`, then the scopes of each rule whose pattern matches the
/// call's target (the tool or prompt name or resource URI), without repeats.
pub fn required_scopes(
    base: &[String],
    rules: &[ScopeRule],
    method: &str,
    target: Option<&str>,
) -> Vec<String> {
    let mut required = base.to_vec();
    let Some(target) = target else {
        return required;
    };
    let kind = crate::protocol::Method::parse(method).function_kind();
    for rule in rules {
        let pattern = match kind {
            Some(FunctionKind::Tool) => &rule.tools,
            Some(FunctionKind::Prompt) => &rule.prompts,
            Some(FunctionKind::Resource) => &rule.resources,
            None => &None,
        };
        if pattern.as_deref().is_some_and(|p| glob_match(p, target)) {
            add_scopes(&mut required, &rule.scopes);
        }
    }
    required
}

/// Appends the scopes of `more` that `scopes` does not hold yet.
pub fn add_scopes(scopes: &mut Vec<String>, more: &[String]) {
    for s in more {
        if !scopes.contains(s) {
            scopes.push(s.clone());
        }
    }
}

/// The credential of an `Authorization: Bearer` header.
/// The bearer credential of a request that authenticated already.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    bearer_credential(headers).ok()
}

fn bearer_credential(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::Invalid(
            "send exactly one Authorization header".into(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("the Authorization header is not visible ASCII".into()))?;
    let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Invalid(format!(
            "use the Bearer scheme (Authorization: Bearer <token>), not {scheme:?}"
        )));
    }
    let credential = credential.trim();
    if credential.is_empty() {
        return Err(AuthError::Invalid("the Bearer credential is empty".into()));
    }
    if credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(AuthError::Invalid(format!(
            "the credential is longer than {MAX_CREDENTIAL_BYTES} bytes"
        )));
    }
    // RFC 6750 b64token characters only.
    let token68 = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    if !credential.bytes().all(token68) {
        return Err(AuthError::Invalid(
            "the Bearer credential has characters a token cannot have".into(),
        ));
    }
    Ok(credential)
}

/// Resource URIs are compared exactly, except for one trailing `/`.
fn same_resource(a: &str, b: &str) -> bool {
    a == b || a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Text safe inside a quoted-string of a challenge (RFC 6750 §3: no `"` or `\`).
fn quotable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard of a server with base scope `mcp:tools`, a `require` rule (`crm:write`) and a
    /// policy rule requiring `crm:admin`; `challenge` is the `challenge_scopes` line, if any.
    fn guard(challenge: &str) -> ServerGuard {
        let yaml = format!(
            "auth:\n  issuers:\n    idp: {{ issuer: \"https://idp.example\" }}\nservers:\n  - name: s\n    path: /mcp\n    upstreams: [crm]\n    auth:\n      scopes: [mcp:tools]\n      require: [{{ tools: \"slow\", scopes: [crm:write] }}]\n{challenge}    policy:\n      default: allow\n      rules:\n        - {{ tools: \"admin*\", require_scopes: [crm:admin] }}\nupstreams:\n  crm: {{ kind: http, url: \"http://127.0.0.1:9/\" }}\n"
        );
        let config = Config::from_yaml(&yaml, std::path::Path::new("t.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let auth = Arc::new(Authenticator::new(&config.auth, None, None));
        ServerGuard::new(&config, &config.servers[0], auth).unwrap()
    }

    fn challenged_scope(g: &ServerGuard, err: &AuthError) -> String {
        let c = g.challenge(err).unwrap();
        let (_, rest) = c.split_once("scope=\"").unwrap_or_else(|| panic!("{c}"));
        rest.split('"').next().unwrap().to_owned()
    }

    fn supported(g: &ServerGuard) -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&g.metadata_document()).unwrap()
            ["scopes_supported"]
            .clone()
    }

    #[test]
    fn a_first_challenge_names_the_base_scopes_unless_told_to_name_every_scope() {
        let missing = AuthError::Missing;
        let invalid = AuthError::Invalid("expired".into());
        let every = serde_json::json!(["mcp:tools", "crm:write", "crm:admin"]);

        let default = guard("");
        assert_eq!(challenged_scope(&default, &missing), "mcp:tools");
        assert_eq!(challenged_scope(&default, &invalid), "mcp:tools");
        // Policy step-up scopes are scopes of the resource, with or without the option.
        assert_eq!(supported(&default), every);

        let all = guard("      challenge_scopes: all\n");
        assert_eq!(
            challenged_scope(&all, &missing),
            "mcp:tools crm:write crm:admin"
        );
        assert_eq!(
            challenged_scope(&all, &invalid),
            "mcp:tools crm:write crm:admin"
        );
        assert_eq!(supported(&all), every);

        let listed = guard("      challenge_scopes: [crm:write, crm:read]\n");
        assert_eq!(
            challenged_scope(&listed, &missing),
            "mcp:tools crm:write crm:read"
        );
        assert_eq!(
            supported(&listed),
            serde_json::json!(["mcp:tools", "crm:write", "crm:admin", "crm:read"])
        );

        // A step-up challenge names what the call needs, whatever the option says.
        let needed = AuthError::InsufficientScope {
            required: vec!["mcp:tools".into(), "crm:write".into()],
        };
        assert_eq!(challenged_scope(&all, &needed), "mcp:tools crm:write");
    }

    #[test]
    fn challenge_scopes_refuses_anything_but_required_all_or_scope_tokens() {
        for bad in ["some", "[\"a b\"]", "[\"\"]", "{ a: 1 }"] {
            let yaml = format!(
                "servers:\n  - {{ name: s, path: /mcp, upstreams: [crm], auth: {{ challenge_scopes: {bad} }} }}\nupstreams:\n  crm: {{ kind: http, url: \"http://127.0.0.1:9/\" }}\n"
            );
            let e = Config::from_yaml(&yaml, std::path::Path::new("t.yaml")).unwrap_err();
            assert!(e.to_string().contains("challenge_scopes"), "{bad}: {e}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("crm__*", "crm__delete"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(!glob_match("crm__*", "xcrm__a"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn bearer_header_rules() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_credential(&h), Err(AuthError::Missing));
        h.insert("authorization", "bearer abc.def-ghi".parse().unwrap());
        assert_eq!(bearer_credential(&h), Ok("abc.def-ghi"));
        h.insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
        assert!(
            matches!(bearer_credential(&h), Err(AuthError::Invalid(m)) if m.contains("Bearer"))
        );
        h.insert("authorization", "Bearer a\"b".parse().unwrap());
        assert!(bearer_credential(&h).is_err());
        h.append("authorization", "Bearer x".parse().unwrap());
        assert!(
            matches!(bearer_credential(&h), Err(AuthError::Invalid(m)) if m.contains("exactly one"))
        );
    }
}
