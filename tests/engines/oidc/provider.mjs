// A small, real OpenID Connect provider for tests: panva's oidc-provider 9.x
// (a certified OP implementation) with one confidential client, three test
// accounts and our own username/password login form. Plain http on loopback.
//
// Started by ../oidc_up.sh, which copies this file next to its node_modules
// ($OIDC_DIR) and runs it with `node provider.mjs`. Environment:
//   OIDC_PORT            port on 127.0.0.1 (default 59000); issuer http://127.0.0.1:PORT
//   OIDC_CLIENT_ID       client id (default himalia)
//   OIDC_CLIENT_SECRET   client secret (default himalia-test-secret)
//   OIDC_REDIRECT_URIS   comma separated (default http://127.0.0.1:8000/hub/oauth_callback)
//   OIDC_TOKEN_TTL       ID token and access token lifetime, s (default 300)
//   OIDC_REFRESH_TTL     refresh token, grant and session lifetime, s (default 3600)
//   OIDC_CONSENT         1 = show a consent page; default 0 = the client is
//                        first party and every requested scope is granted
//   OIDC_KEYS_FILE       private JWKS (default ./jwks.json); created if missing
//   OIDC_ROTATE_KEYS     1 = make a new signing key at this start; it signs, and
//                        the previous key stays in /jwks for verification
//
// Himalia's copy (from shared/engines/oidc) adds two things for its tests:
// - redirect URIs on http://127.0.0.1 match whatever the port (RFC 8252 §7.3 style),
//   because test hubs listen on ephemeral ports;
// - POST /test/mutate {"mode": M} makes the next token responses carry a doctored
//   id_token until POST /test/mutate {"mode": ""}: "tamper" (a changed payload under
//   the real signature), "alg-none" (unsigned), or re-signed with the real key and
//   a wrong "nonce", "aud" or "iss", or already "expired". Only on loopback, test only.
//
// For https: terminate TLS in front (or use https.createServer below), make
// the issuer https://..., and set provider.proxy = true behind a proxy so that
// X-Forwarded-Proto is trusted; cookies then get the Secure flag by themselves.
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';
import * as jose from 'jose';

const env = (name, dflt) => (process.env[name] ?? '') || dflt;
const PORT = Number(env('OIDC_PORT', '59000'));
const ISSUER = `http://127.0.0.1:${PORT}`;
const CLIENT_ID = env('OIDC_CLIENT_ID', 'himalia');
const CLIENT_SECRET = env('OIDC_CLIENT_SECRET', 'himalia-test-secret');
const REDIRECT_URIS = env('OIDC_REDIRECT_URIS', 'http://127.0.0.1:8000/hub/oauth_callback')
  .split(',').map((s) => s.trim()).filter(Boolean);
const TOKEN_TTL = Number(env('OIDC_TOKEN_TTL', '300'));
const REFRESH_TTL = Number(env('OIDC_REFRESH_TTL', '3600'));
const CONSENT = env('OIDC_CONSENT', '0') === '1';
const KEYS_FILE = env('OIDC_KEYS_FILE', new URL('./jwks.json', import.meta.url).pathname);
const ROTATE = env('OIDC_ROTATE_KEYS', '0') === '1';

// --- test accounts: password = username + "-pw" -----------------------------
const ACCOUNTS = {
  alice: { name: 'Alice Andersen', groups: ['students', 'gpu'] },
  bob: { name: 'Bob Berg', groups: ['students'] },
  carol: { name: 'Carol Castro', groups: ['staff', 'hub-admins'] },
};
const checkPassword = (user, pw) => Object.hasOwn(ACCOUNTS, user) && pw === `${user}-pw`;

async function findAccount(ctx, id) {
  if (!Object.hasOwn(ACCOUNTS, id)) return undefined;
  const a = ACCOUNTS[id];
  return {
    accountId: id,
    // the provider keeps only the claims that the granted scopes allow
    async claims() {
      return {
        sub: id,
        preferred_username: id,
        name: a.name,
        email: `${id}@example.org`,
        email_verified: true,
        groups: [...a.groups],
      };
    },
  };
}

// --- signing keys ------------------------------------------------------------
function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}
let keys = existsSync(KEYS_FILE) ? JSON.parse(readFileSync(KEYS_FILE, 'utf8')).keys : [];
if (ROTATE || !keys.length) {
  keys = [newKey(), ...keys].slice(0, 2); // first key signs; keep one old key published
  writeFileSync(KEYS_FILE, JSON.stringify({ keys }), { mode: 0o600 });
}

// --- provider configuration --------------------------------------------------
const configuration = {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: REDIRECT_URIS,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    // client_secret_post is accepted as well for any client with a secret
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  responseTypes: ['code'],
  scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // put the scope claims into the ID token too (not only into /me)
  conformIdTokenClaims: false,
  findAccount,
  jwks: { keys },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false }, // they accept any login without a password
    revocation: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // refresh tokens whenever the client may use them; by default oidc-provider
  // wants scope offline_access, which it drops unless prompt=consent is sent
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  expiresWithSession: async () => false,
  // without OIDC_CONSENT=1 the client is first party: grant what it asks for
  async loadExistingGrant(ctx) {
    const { Grant } = ctx.oidc.provider;
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    let grant = grantId ? await Grant.find(grantId) : undefined;
    if (CONSENT) return grant;
    grant ??= new Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.account.accountId });
    grant.addOIDCScope([...ctx.oidc.requestParamOIDCScopes].join(' '));
    grant.addOIDCClaims([...ctx.oidc.requestParamClaims]);
    await grant.save();
    return grant;
  },
  ttl: {
    AccessToken: TOKEN_TTL,
    IdToken: TOKEN_TTL,
    AuthorizationCode: 60,
    RefreshToken: REFRESH_TTL,
    Grant: REFRESH_TTL,
    Session: REFRESH_TTL,
    Interaction: 600,
  },
};

const provider = new Provider(ISSUER, configuration);

// --- test additions: any loopback port; doctored ID tokens on request ----------
const sameButPort = (a, b) => {
  try {
    const x = new URL(a); const y = new URL(b);
    if (x.protocol !== 'http:' || x.hostname !== '127.0.0.1' || y.hostname !== '127.0.0.1') return false;
    x.port = ''; y.port = '';
    return x.href === y.href;
  } catch { return false; }
};
const redirectUriAllowed = provider.Client.prototype.redirectUriAllowed;
provider.Client.prototype.redirectUriAllowed = function allowed(value) {
  return redirectUriAllowed.call(this, value) || this.redirectUris.some((r) => sameButPort(value, r));
};
let mutation = '';
const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
async function doctor(idToken) {
  const [h, p, sig] = idToken.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const claims = JSON.parse(Buffer.from(p, 'base64url'));
  if (mutation === 'tamper') return `${h}.${b64({ ...claims, preferred_username: 'carol', groups: ['hub-admins'] })}.${sig}`;
  if (mutation === 'alg-none') return `${b64({ alg: 'none', typ: 'JWT' })}.${p}.`;
  const changed = {
    nonce: { nonce: 'not-the-nonce' },
    aud: { aud: 'another-client' },
    iss: { iss: 'http://127.0.0.1:1' },
    expired: { iat: claims.iat - 3600, exp: claims.iat - 1800 },
  }[mutation];
  if (!changed) return idToken;
  const key = await jose.importJWK(keys[0], 'RS256');
  return new jose.SignJWT({ ...claims, ...changed }).setProtectedHeader(header).sign(key);
}
for (const ev of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error']) {
  provider.on(ev, (ctx, err) => console.log(`${ev}: ${err.name}: ${err.message} ${err.error_description ?? ''}`));
}
provider.on('grant.success', (ctx) => console.log(`grant.success ${ctx.oidc.params.grant_type}`));

// --- login and consent pages (plain HTML forms) ------------------------------
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!doctype html><html><head><meta charset="utf-8">
<title>${esc(title)}</title></head><body><h1>${esc(title)}</h1>${body}</body></html>`;

function loginForm(uid, params, error) {
  return page('Sign in', `${error ? `<p class="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
  <label>Username <input name="username" value="${esc(params.login_hint)}" required autofocus></label>
  <label>Password <input name="password" type="password" required></label>
  <button type="submit">Sign in</button>
</form><p><a href="/interaction/${esc(uid)}/abort">Cancel</a></p>`);
}

function consentForm(uid, client, details) {
  const scopes = details.missingOIDCScope ?? [];
  return page('Authorize', `<p>${esc(client.clientId)} asks for: ${esc(scopes.join(' '))}</p>
<form method="post" action="/interaction/${esc(uid)}/confirm"><button type="submit">Allow</button></form>
<p><a href="/interaction/${esc(uid)}/abort">Deny</a></p>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 65536) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

async function interaction(req, res, path) {
  const [, , uid, action = ''] = path.split('/'); // /interaction/UID[/ACTION]
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, page('Error', '<p>interaction mismatch</p>'));
  const { prompt, params } = details;

  if (req.method === 'GET' && action === '') {
    if (prompt.name === 'login') return send(res, 200, loginForm(uid, params));
    const client = await provider.Client.find(params.client_id);
    return send(res, 200, consentForm(uid, client, prompt.details));
  }
  if (req.method === 'GET' && action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
    const form = await readForm(req);
    const user = form.get('username') ?? '';
    if (!checkPassword(user, form.get('password') ?? '')) {
      console.log(`login failed for ${JSON.stringify(user)}`);
      return send(res, 401, loginForm(uid, { login_hint: user }, 'Invalid username or password.'));
    }
    console.log(`login ok: ${user}`);
    return provider.interactionFinished(req, res, { login: { accountId: user } },
      { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'confirm' && prompt.name === 'consent') {
    const { grantId, session } = details;
    const grant = grantId ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } },
      { mergeWithLastSubmission: true });
  }
  return send(res, 400, page('Error', `<p>unexpected ${esc(req.method)} ${esc(action)} for prompt ${esc(prompt.name)}</p>`));
}

// --- HTTP server: /interaction/* is ours, everything else is the provider's --
const oidc = provider.callback();
const server = createServer((req, res) => {
  const path = new URL(req.url, ISSUER).pathname;
  if (path === '/test/mutate' && req.method === 'POST') {
    return readForm(req).then((form) => {
      mutation = form.get('mode') ?? '';
      console.log(`test: id_token mutation ${JSON.stringify(mutation)}`);
      send(res, 200, 'ok');
    });
  }
  if (path === '/token' && mutation) {
    const { end } = res;
    res.end = function doctoredEnd(chunk, ...rest) {
      let body;
      try { body = JSON.parse(String(chunk)); } catch { return end.call(this, chunk, ...rest); }
      if (!body.id_token) return end.call(this, chunk, ...rest);
      doctor(body.id_token).then((token) => {
        const out = JSON.stringify({ ...body, id_token: token });
        this.setHeader('content-length', Buffer.byteLength(out));
        end.call(this, out);
      });
      return this;
    };
  }
  if (!path.startsWith('/interaction/')) return oidc(req, res);
  return interaction(req, res, path).catch((err) => {
    console.log(`interaction error: ${err.name}: ${err.message}`);
    if (!res.headersSent) send(res, 400, page('Error', `<p>${esc(err.name)}: ${esc(err.message)}</p>`));
  });
});
server.listen(PORT, '127.0.0.1', () => {
  console.log(`oidc-provider listening, issuer ${ISSUER}, client ${CLIENT_ID}, `
    + `redirect_uris ${REDIRECT_URIS.join(' ')}, signing kid ${keys[0].kid}, consent ${CONSENT ? 'on' : 'off'}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { console.log(`${sig}, exiting`); server.close(); process.exit(0); });
}
