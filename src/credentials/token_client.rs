//! The gateway as an OAuth client of one authorization server: where its token endpoint is
//! (configured, discovered from the issuer, or found through an upstream's RFC 9728 metadata),
//! how the gateway authenticates there, and one grant request.

use super::CredentialError;
use crate::config::{OAuthClient, Secret, TokenClientAuth};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;

/// Where the token endpoint is to be found.
#[derive(Debug, Clone)]
enum Location {
    TokenEndpoint(String),
    Issuer(String),
    /// The upstream's protected-resource metadata names the authorization server.
    ResourceMetadata(String),
}

enum ClientAuth {
    Basic(Secret),
    Post(Secret),
    PrivateKeyJwt {
        key: EncodingKey,
        alg: Algorithm,
        kid: Option<String>,
    },
}

/// A client registration, ready to request tokens.
pub struct TokenClient {
    location: Location,
    endpoint: tokio::sync::OnceCell<Endpoint>,
    client_id: String,
    auth: ClientAuth,
}

/// A discovered token endpoint and the issuer it belongs to (the audience of assertions).
#[derive(Debug, Clone)]
struct Endpoint {
    token_endpoint: String,
    issuer: Option<String>,
    authorization_endpoint: Option<String>,
}

/// A successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1).
#[derive(Deserialize)]
pub struct TokenResponse {
    /// The token (an ID-JAG for that exchange).
    pub access_token: String,
    /// A refresh token, when the server issued one.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// An OpenID Connect ID token (authorization code grant with `openid`).
    #[serde(default)]
    pub id_token: Option<String>,
    /// RFC 8693: what was issued.
    #[serde(default)]
    pub issued_token_type: Option<String>,
    /// Lifetime in seconds.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("issued_token_type", &self.issued_token_type)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct ServerMetadata {
    #[serde(default)]
    issuer: Option<String>,
    token_endpoint: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
}

#[derive(Deserialize)]
struct ResourceMetadata {
    #[serde(default)]
    authorization_servers: Vec<String>,
}

impl TokenClient {
    /// Builds the client; `upstream_url` is where RFC 9728 metadata is looked up when the
    /// configuration names no server.
    pub fn new(cfg: &OAuthClient, upstream_url: Option<&str>) -> Result<Self, String> {
        let location = match (&cfg.token_endpoint, &cfg.issuer, upstream_url) {
            (Some(t), _, _) => Location::TokenEndpoint(t.clone()),
            (None, Some(i), _) => Location::Issuer(i.clone()),
            (None, None, Some(u)) => Location::ResourceMetadata(u.to_owned()),
            (None, None, None) => return Err("set issuer or token_endpoint".into()),
        };
        let secret = || {
            cfg.client_secret
                .as_ref()
                .ok_or("client_secret is missing")?
                .resolve()
        };
        let auth = match cfg.method() {
            TokenClientAuth::ClientSecretBasic => ClientAuth::Basic(secret()?),
            TokenClientAuth::ClientSecretPost => ClientAuth::Post(secret()?),
            TokenClientAuth::PrivateKeyJwt => {
                let pem = cfg
                    .private_key
                    .as_ref()
                    .ok_or("private_key is missing")?
                    .resolve()?;
                let (key, alg) = signing_key(pem.expose().as_bytes())?;
                ClientAuth::PrivateKeyJwt {
                    key,
                    alg,
                    kid: cfg.key_id.clone(),
                }
            }
        };
        Ok(TokenClient {
            location,
            endpoint: tokio::sync::OnceCell::new(),
            client_id: cfg.client_id.clone(),
            auth,
        })
    }

    /// The client id at this server.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The authorization endpoint (from the server's metadata).
    pub async fn authorization_endpoint(
        &self,
        http: &reqwest::Client,
    ) -> Result<String, CredentialError> {
        self.endpoint(http)
            .await?
            .authorization_endpoint
            .clone()
            .ok_or_else(|| {
                CredentialError::Discovery(
                    "the authorization server's metadata names no authorization_endpoint".into(),
                )
            })
    }

    /// The issuer of this server, once known (the audience of an ID-JAG meant for it).
    pub async fn issuer(&self, http: &reqwest::Client) -> Result<String, CredentialError> {
        let e = self.endpoint(http).await?;
        Ok(e.issuer.clone().unwrap_or_else(|| e.token_endpoint.clone()))
    }

    async fn endpoint(&self, http: &reqwest::Client) -> Result<&Endpoint, CredentialError> {
        self.endpoint
            .get_or_try_init(|| async {
                match &self.location {
                    Location::TokenEndpoint(t) => Ok(Endpoint {
                        token_endpoint: t.clone(),
                        issuer: None,
                        authorization_endpoint: None,
                    }),
                    Location::Issuer(i) => discover(http, i).await,
                    Location::ResourceMetadata(u) => {
                        let url = resource_metadata_url(u).ok_or_else(|| {
                            CredentialError::Discovery(format!("{u:?} is not a URL"))
                        })?;
                        let doc: ResourceMetadata = crate::auth::fetch_json(http, &url, None)
                            .await
                            .map_err(|e| {
                                CredentialError::Discovery(format!(
                                    "the upstream's metadata {url}: {e}"
                                ))
                            })?;
                        let issuer = doc.authorization_servers.first().ok_or_else(|| {
                            CredentialError::Discovery(format!(
                                "the upstream's metadata {url} names no authorization server"
                            ))
                        })?;
                        discover(http, issuer).await
                    }
                }
            })
            .await
    }

    /// Requests a token with `params` (the grant type and its parameters).
    pub async fn request(
        &self,
        http: &reqwest::Client,
        grant: &'static str,
        mut params: Vec<(&'static str, String)>,
    ) -> Result<TokenResponse, CredentialError> {
        let endpoint = self.endpoint(http).await?;
        let mut req = http.post(&endpoint.token_endpoint);
        match &self.auth {
            ClientAuth::Basic(secret) => {
                req = req.basic_auth(
                    form_encode(&self.client_id),
                    Some(form_encode(secret.expose())),
                );
            }
            ClientAuth::Post(secret) => {
                params.push(("client_id", self.client_id.clone()));
                params.push(("client_secret", secret.expose().to_owned()));
            }
            ClientAuth::PrivateKeyJwt { key, alg, kid } => {
                let assertion = self.client_assertion(key, *alg, kid, endpoint)?;
                params.push(("client_id", self.client_id.clone()));
                params.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                params.push(("client_assertion", assertion));
            }
        }
        let resp = req
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&params)
            .send()
            .await
            .map_err(|e| CredentialError::Unreachable {
                grant,
                reason: transport(&e),
            })?;
        let status = resp.status();
        let body = read_small(resp)
            .await
            .map_err(|reason| CredentialError::Unreachable { grant, reason })?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorResponse>(&body) {
                Ok(e) => CredentialError::Refused {
                    grant,
                    error: printable(&e.error, 64),
                    description: e.error_description.map(|d| printable(&d, 300)),
                },
                Err(_) => CredentialError::Refused {
                    grant,
                    error: format!("HTTP {}", status.as_u16()),
                    description: None,
                },
            });
        }
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| CredentialError::Invalid {
                grant,
                reason: format!("not a token response: {}", e.classify_name()),
            })?;
        if token.access_token.is_empty() {
            return Err(CredentialError::Invalid {
                grant,
                reason: "the access_token is empty".into(),
            });
        }
        Ok(token)
    }

    /// An RFC 7523 client assertion for this endpoint.
    fn client_assertion(
        &self,
        key: &EncodingKey,
        alg: Algorithm,
        kid: &Option<String>,
        endpoint: &Endpoint,
    ) -> Result<String, CredentialError> {
        let now = crate::audit::now_ms() / 1000;
        let mut jti = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut jti);
        let claims = serde_json::json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": endpoint.token_endpoint,
            "jti": crate::hex::encode(&jti),
            "iat": now,
            "exp": now + 60,
        });
        let mut header = Header::new(alg);
        header.kid = kid.clone();
        jsonwebtoken::encode(&header, &claims, key).map_err(|e| CredentialError::Invalid {
            grant: "client assertion",
            reason: e.to_string(),
        })
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Data => "a field is missing or has the wrong type",
            _ => "invalid JSON",
        }
    }
}

/// Reads a token endpoint's answer, refusing anything larger than an answer should be.
async fn read_small(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    const LIMIT: usize = 256 * 1024;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
        if body.len() + chunk.len() > LIMIT {
            return Err(format!("the answer is larger than {LIMIT} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// RFC 6749 §2.3.1: the Basic credentials are form-encoded first.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Text from an authorization server, cut short and stripped of control characters before it
/// is shown to a client or logged.
fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "HTTP error".into()
    }
}

async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Endpoint, CredentialError> {
    let mut last = String::from("no metadata location");
    for url in crate::auth::metadata_candidates(issuer) {
        match crate::auth::fetch_json::<ServerMetadata>(http, &url, None).await {
            Ok(m) => {
                if m.issuer.as_deref().is_some_and(|i| i != issuer) {
                    return Err(CredentialError::Discovery(format!(
                        "{url} names another issuer"
                    )));
                }
                return Ok(Endpoint {
                    token_endpoint: m.token_endpoint,
                    issuer: Some(issuer.to_owned()),
                    authorization_endpoint: m.authorization_endpoint,
                });
            }
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    Err(CredentialError::Discovery(format!(
        "no authorization server metadata for {issuer} ({last})"
    )))
}

/// RFC 9728 §3.1: the well-known path is inserted before the resource's path.
fn resource_metadata_url(resource: &str) -> Option<String> {
    let url = reqwest::Url::parse(resource).ok()?;
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    Some(format!(
        "{origin}/.well-known/oauth-protected-resource{path}"
    ))
}

/// A PEM private key and the algorithm it signs with.
fn signing_key(pem: &[u8]) -> Result<(EncodingKey, Algorithm), String> {
    if let Ok(k) = EncodingKey::from_ec_pem(pem) {
        return Ok((k, Algorithm::ES256));
    }
    if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = EncodingKey::from_ed_pem(pem) {
        return Ok((k, Algorithm::EdDSA));
    }
    Err("private_key is not a PEM EC (P-256), RSA or Ed25519 private key".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_metadata_is_looked_up_with_the_path_inserted() {
        assert_eq!(
            resource_metadata_url("https://crm.example/mcp/").as_deref(),
            Some("https://crm.example/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(
            resource_metadata_url("http://127.0.0.1:9/").as_deref(),
            Some("http://127.0.0.1:9/.well-known/oauth-protected-resource")
        );
    }

    #[test]
    fn server_text_is_cut_and_cleaned() {
        assert_eq!(printable("bad\r\nscope\u{7}", 100), "badscope");
        assert_eq!(printable(&"x".repeat(500), 10).len(), 10);
    }

    #[test]
    fn keys_of_each_type_are_recognized() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
        let es = std::fs::read(root.join("es256-a.pem")).unwrap();
        assert_eq!(signing_key(&es).unwrap().1, Algorithm::ES256);
        let ed = std::fs::read(root.join("ed25519.pem")).unwrap();
        assert_eq!(signing_key(&ed).unwrap().1, Algorithm::EdDSA);
        assert!(signing_key(b"not a key").is_err());
    }
}
