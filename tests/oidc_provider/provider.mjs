// A real OpenID Connect provider for the tests: panva's certified oidc-provider, on 127.0.0.1:PORT.
//
// Environment: PORT, and CLIENTS (JSON: oidc-provider client metadata, secrets and redirect URIs).
//
// Its log-in page (GET /interaction/<uid>) is a plain form: `login` (the user's name at the provider),
// `sub` (optional: the subject, default "sub-<login>"), `mfa` ("1": the provider says a second factor
// was used, amr ["pwd", "otp", "mfa"]; otherwise amr ["pwd"]) and `acr` (optional). Consent is given
// at once. Claims: preferred_username = login, email = login@trust.example, name.
//
// POST /_test/tamper {"claims": {...}} makes the next token response's ID token carry those claims
// instead, signed with the provider's own key: a token issued for another audience, say, as a
// substituted or misdirected token would be. Only for the tests' refusals.

import http from 'node:http';

import * as jose from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.CLIENTS || '[]');

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingKey = { ...(await jose.exportJWK(privateKey)), kid: 'test-signing-key', alg: 'RS256', use: 'sig' };

const accounts = new Map();
let tamper = null;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: ['test provider cookie key, not a secret'] },
  claims: {
    openid: ['sub', 'amr'], // amr in the ID token: whether the provider used a second factor
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
  },
  acrValues: ['urn:test:pwd', 'urn:test:aal3'],
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const claims = accounts.get(id);
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});

provider.use(async (ctx, next) => {
  await next();
  if (tamper && ctx.oidc?.route === 'token' && ctx.body?.id_token) {
    const payload = { ...jose.decodeJwt(ctx.body.id_token), ...tamper };
    ctx.body = { ...ctx.body, id_token: await new jose.SignJWT(payload)
      .setProtectedHeader({ alg: 'RS256', kid: signingKey.kid }).sign(privateKey) };
    tamper = null;
  }
});

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (req.method === 'POST' && req.url.endsWith('/login')) {
    const form = await readForm(req);
    const login = form.get('login') || '';
    const accountId = form.get('sub') || `sub-${login}`;
    accounts.set(accountId, {
      preferred_username: login, name: login, email: `${login}@trust.example`, email_verified: true,
    });
    const result = { login: { accountId, amr: form.get('mfa') === '1' ? ['pwd', 'otp', 'mfa'] : ['pwd'] } };
    if (form.get('acr')) result.login.acr = form.get('acr');
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent') {
    const grant = details.grantId ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><title>Test identity provider</title>
<form method="post" action="/interaction/${escape(uid)}/login">
<label>User <input name="login"></label> <label>Subject <input name="sub"></label>
<label><input type="checkbox" name="mfa" value="1"> with a second factor</label>
<button>Sign in</button></form>`);
}

const handle = provider.callback();
http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => {
      res.writeHead(400, { 'Content-Type': 'text/plain' });
      res.end(`interaction failed: ${error.message}`);
    });
  } else if (req.url === '/_test/tamper' && req.method === 'POST') {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      tamper = JSON.parse(body).claims;
      res.writeHead(204);
      res.end();
    });
  } else {
    handle(req, res);
  }
}).listen(port, '127.0.0.1', () => console.log(`listening on ${issuer}`));
