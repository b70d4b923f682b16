//! The authenticated caller, as policy and audit see it. Only the verifiers in this module's
//! parent can build one, so holding a `Principal` means a credential was checked.

use crate::config::ClaimPaths;
use serde_json::Value;

/// What kind of credential proved the principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A signed JWT access token.
    Jwt,
    /// An opaque token the issuer confirmed by introspection.
    Introspected,
    /// A gateway API key.
    ApiKey,
    /// Claims supplied by an operator to `gatehouse policy explain`; never verified, never
    /// used for a request.
    Hypothetical,
}

/// An authenticated caller.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Principal {
    subject: String,
    issuer: String,
    client_id: Option<String>,
    scopes: Vec<String>,
    groups: Vec<String>,
    roles: Vec<String>,
    tenant: Option<String>,
    #[serde(skip)]
    audiences: Vec<String>,
    /// Seconds since the epoch.
    #[serde(skip)]
    expires_at: Option<u64>,
    kind: CredentialKind,
    #[serde(skip)]
    claims: Value,
    #[serde(skip)]
    binding: String,
    /// The principal as policy conditions see it, built on first use (principals are cached
    /// with their credential, so this happens once per token).
    #[serde(skip)]
    policy_view: std::sync::OnceLock<std::sync::Arc<dyn cel::common::value::Val>>,
}

impl Principal {
    /// Builds a principal from verified claims.
    pub(super) fn from_claims(
        claims: Value,
        paths: &ClaimPaths,
        kind: CredentialKind,
    ) -> Result<Principal, String> {
        let subject = string_at(&claims, &paths.subject)
            .ok_or_else(|| format!("the token has no subject claim {:?}", paths.subject))?;
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let first_string = |list: &[String]| list.iter().find_map(|p| string_at(&claims, p));
        let first_list = |list: &[String]| {
            list.iter()
                .find_map(|p| strings_at(&claims, p))
                .unwrap_or_default()
        };
        // Memberships are the union of every path: an IdP puts different kinds in different
        // claims (Keycloak's realm roles and each client's roles), and one must not hide another.
        // A hash set keeps this linear: an IdP may send hundreds of groups.
        let every_list = |list: &[String]| {
            let mut all: Vec<String> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for found in list.iter().filter_map(|p| strings_at(&claims, p)) {
                for item in found {
                    if seen.insert(item.clone()) {
                        all.push(item);
                    }
                }
            }
            all
        };
        // Gatehouse's own tokens say which IdP vouched for the user (`idp_iss`): two IdPs may
        // use the same subject, and must not share sessions or per-user credentials.
        let vouched = match claims.get("idp_iss").and_then(Value::as_str) {
            Some(idp) => format!("{issuer}\u{0}{idp}"),
            None => issuer.clone(),
        };
        Ok(Principal {
            binding: binding_of(&vouched, &subject),
            policy_view: Default::default(),
            subject,
            issuer,
            client_id: first_string(&paths.client_id),
            scopes: first_list(&paths.scopes),
            groups: every_list(&paths.groups),
            roles: every_list(&paths.roles),
            tenant: first_string(&paths.tenant),
            audiences: strings_at(&claims, "aud").unwrap_or_default(),
            expires_at: claims.get("exp").and_then(Value::as_u64),
            kind,
            claims,
        })
    }

    /// A principal built from claims nobody verified, for explaining policy decisions offline
    /// (`gatehouse policy explain`). Request handling never builds one.
    pub fn hypothetical(claims: Value, paths: &ClaimPaths) -> Result<Principal, String> {
        Principal::from_claims(claims, paths, CredentialKind::Hypothetical)
    }

    /// A principal for a gateway API key.
    pub(super) fn for_api_key(key: &crate::store::ApiKeyRecord) -> Principal {
        Principal {
            binding: binding_of(super::API_KEY_ISSUER, &key.subject),
            policy_view: Default::default(),
            subject: key.subject.clone(),
            issuer: super::API_KEY_ISSUER.into(),
            client_id: Some(key.id.clone()),
            scopes: key.scopes.clone(),
            groups: key.groups.clone(),
            roles: Vec::new(),
            tenant: None,
            audiences: Vec::new(),
            expires_at: key.expires_at.map(|e| e.max(0) as u64),
            kind: CredentialKind::ApiKey,
            claims: serde_json::json!({"sub": key.subject, "client_id": key.id}),
        }
    }

    /// The subject (`sub`, or the configured claim).
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// The issuer (`iss`), or `gatehouse:api-key`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// The OAuth client the credential was issued to.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }
    /// Granted scopes.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
    /// Whether every one of `needed` was granted.
    pub fn has_scopes(&self, needed: &[String]) -> bool {
        needed.iter().all(|n| self.scopes.contains(n))
    }
    /// Group memberships.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }
    /// Roles.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }
    /// Tenant or organisation.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }
    /// Audiences the credential was issued for.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }
    /// When the credential expires, in seconds since the epoch.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }
    /// The credential's kind.
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }
    /// Every verified claim, for rules that need one not mapped above.
    pub fn claims(&self) -> &Value {
        &self.claims
    }
    /// A short stable digest of issuer and subject, to bind sessions to their principal
    /// without putting the identity into the session id.
    pub(crate) fn policy_view(
        &self,
        build: impl FnOnce(&Principal) -> std::sync::Arc<dyn cel::common::value::Val>,
    ) -> std::sync::Arc<dyn cel::common::value::Val> {
        self.policy_view.get_or_init(|| build(self)).clone()
    }

    /// A short stable digest of issuer and subject (see [`Principal::binding`]'s callers).
    pub fn binding(&self) -> &str {
        &self.binding
    }
}

/// The digest a session is bound to, computed once per principal (principals are cached).
fn binding_of(issuer: &str, subject: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(issuer.as_bytes());
    h.update([0]);
    h.update(subject.as_bytes());
    crate::hex::encode(&h.finalize()[..12])
}

/// The value at a dotted path.
fn value_at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    // A claim whose name itself contains dots (e.g. a namespaced URL claim) wins over descent.
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

/// A string (or number) at a dotted claim path.
pub(crate) fn string_at(claims: &Value, path: &str) -> Option<String> {
    match value_at(claims, path)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A list at a path: a JSON array of strings, or a space-separated string (OAuth `scope`).
pub(crate) fn strings_at(claims: &Value, path: &str) -> Option<Vec<String>> {
    match value_at(claims, path)? {
        Value::String(s) => Some(
            s.split(' ')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_are_mapped_by_configurable_paths() {
        let claims = json!({
            "iss": "https://kc.example/realms/corp", "sub": "u1", "azp": "cli",
            "scope": "mcp:tools  crm:read", "realm_access": {"roles": ["admin"]},
            "tid": "t-9", "aud": "https://gw.example/mcp", "exp": 99
        });
        let p =
            Principal::from_claims(claims, &ClaimPaths::default(), CredentialKind::Jwt).unwrap();
        assert_eq!(p.subject(), "u1");
        assert_eq!(p.client_id(), Some("cli"));
        assert_eq!(p.scopes(), ["mcp:tools", "crm:read"]);
        assert_eq!(p.roles(), ["admin"]);
        assert_eq!(p.tenant(), Some("t-9"));
        assert_eq!(p.audiences(), ["https://gw.example/mcp"]);
        assert!(p.groups().is_empty());
        assert!(p.has_scopes(&["crm:read".into()]));
        assert!(!p.has_scopes(&["crm:write".into()]));
    }

    #[test]
    fn the_same_subject_vouched_for_by_two_idps_is_two_principals() {
        let of = |claims| {
            Principal::from_claims(claims, &ClaimPaths::default(), CredentialKind::Jwt)
                .unwrap()
                .binding()
                .to_owned()
        };
        let gw = "https://gw.example";
        let a = of(json!({"iss": gw, "sub": "u1", "idp_iss": "https://idp-a.example"}));
        let b = of(json!({"iss": gw, "sub": "u1", "idp_iss": "https://idp-b.example"}));
        let plain = of(json!({"iss": gw, "sub": "u1"}));
        assert_ne!(a, b);
        assert_ne!(a, plain);
        assert_eq!(
            a,
            of(json!({"iss": gw, "sub": "u1", "idp_iss": "https://idp-a.example"}))
        );
    }

    #[test]
    fn entra_style_scp_and_missing_subject() {
        let paths = ClaimPaths {
            subject: "oid".into(),
            ..ClaimPaths::default()
        };
        let p = Principal::from_claims(
            json!({"oid": "o-1", "scp": "a b", "roles": ["r"]}),
            &paths,
            CredentialKind::Jwt,
        )
        .unwrap();
        assert_eq!(
            (p.subject(), p.scopes().len(), p.roles()),
            ("o-1", 2, &["r".to_string()][..])
        );
        let err =
            Principal::from_claims(json!({"sub": "x"}), &paths, CredentialKind::Jwt).unwrap_err();
        assert!(err.contains("oid"), "{err}");
    }
}
