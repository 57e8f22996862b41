// A real OpenID Connect provider (oidc-provider, OpenID Certified) for the API's OIDC tests.
// Usage: node server.mjs '{"client_id": ..., "client_secret": ..., "redirect_uris": [...]}'
// Listens on a free loopback port, prints "issuer <URL>" once it answers, and exits when its
// standard input closes, so it never outlives the test run that started it.
// The interaction pages are ours: a login form (fields login, email, name: any login is
// accepted and becomes the subject, email and name its claims) and a consent page that grants
// whatever was asked, so a script or a browser completes the flow like a person would.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const client = JSON.parse(process.argv[2]);
const accounts = new Map();

const page = (body) => `<!doctype html><html><head><meta charset="utf-8"><title>Test OpenID provider</title></head><body>${body}</body></html>`;
const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginForm(details) {
  return page(`<h1>Sign in to the test provider</h1>
<p>Client ${escape(details.params.client_id)}</p>
<form method="post" action="/interaction/${escape(details.uid)}">
<label>Login <input name="login" autofocus></label>
<label>Email <input name="email" type="email"></label>
<label>Name <input name="name"></label>
<button type="submit">Sign in</button>
</form>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 65536) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

async function grantAll(provider, details) {
  const { prompt: { details: missing }, grantId, session, params } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scope] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scope.join(' '));
  }
  return grant.save();
}

async function interaction(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === 'consent') {
    const result = { consent: { grantId: await grantAll(provider, details) } };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  }
  if (req.method === 'POST') {
    const form = await readForm(req);
    const accountId = form.get('login');
    if (accountId) {
      accounts.set(accountId, { email: form.get('email'), name: form.get('name') });
      return provider.interactionFinished(req, res, { login: { accountId } },
        { mergeWithLastSubmission: false });
    }
  }
  res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  return res.end(loginForm(details));
}

function claimsOf(accountId) {
  const { email, name } = accounts.get(accountId) || {};
  const claims = { sub: accountId };
  if (email) Object.assign(claims, { email, email_verified: true });
  if (name) claims.name = name;
  return claims;
}

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
    .export({ format: 'jwk' });
  const provider = new Provider(issuer, {
    clients: [{
      client_id: client.client_id,
      client_secret: client.client_secret,
      redirect_uris: client.redirect_uris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    }],
    jwks: { keys: [{ ...signingKey, use: 'sig', alg: 'RS256', kid: 'test' }] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    findAccount: (ctx, accountId) => ({ accountId, claims: () => claimsOf(accountId) }),
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (!req.url.startsWith('/interaction/')) return callback(req, res);
    return interaction(provider, req, res).catch((error) => {
      res.writeHead(400, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(`interaction failed: ${error.message}\n`);
    });
  });
  process.stdout.write(`issuer ${issuer}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
