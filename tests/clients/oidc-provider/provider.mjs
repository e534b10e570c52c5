// A real OpenID Connect provider for tests/all/oidc.rs: panva's oidc-provider on
// 127.0.0.1 over HTTPS with a certificate the test made, one client for Warden and one for
// another application, and one person whose password is checked on the provider's own
// sign-in form (the development form of oidc-provider, which on its own accepts any
// password). Everything comes from the environment:
//   PORT, TLS_CERT, TLS_KEY                     where and how it listens
//   CLIENT_ID, CLIENT_SECRET, REDIRECT_URI      Warden's registration
//   OTHER_CLIENT_ID, OTHER_CLIENT_SECRET        another application's (same redirect URI)
//   ACCOUNT_LOGIN, ACCOUNT_PASSWORD, ACCOUNT_EMAIL, ACCOUNT_GROUPS (comma separated)
// It prints "listening on <issuer>" once it accepts connections.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import * as querystring from 'node:querystring';

import Provider from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (value === undefined) {
    console.error(`provider: ${name} is not set`);
    process.exit(2);
  }
  return value;
};

const port = Number(env('PORT'));
const issuer = `https://127.0.0.1:${port}`;
const account = {
  login: env('ACCOUNT_LOGIN'),
  password: env('ACCOUNT_PASSWORD'),
  email: env('ACCOUNT_EMAIL'),
  groups: env('ACCOUNT_GROUPS').split(',').filter((g) => g !== ''),
};

const client = (id, secret) => ({
  client_id: id,
  client_secret: secret,
  redirect_uris: [env('REDIRECT_URI')],
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
});

const provider = new Provider(issuer, {
  clients: [
    client(env('CLIENT_ID'), env('CLIENT_SECRET')),
    client(env('OTHER_CLIENT_ID'), env('OTHER_CLIENT_SECRET')),
  ],
  cookies: { keys: ['warden-test-provider-cookie-key'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['given_name', 'family_name', 'name'],
    groups: ['groups'],
  },
  // The scopes' claims go into the ID token (the relying party reads only that).
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    if (id !== account.login) {
      return undefined;
    }
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: account.email,
          email_verified: true,
          given_name: 'Ada',
          family_name: 'Lovelace',
          name: 'Ada Lovelace',
          groups: account.groups,
        };
      },
    };
  },
  // No consent screen: this provider's clients are trusted first-party applications.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      return ctx.oidc.provider.Grant.find(grantId);
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
});

// The development sign-in form, with the password checked.
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && /^\/interaction\/[^/]+\/login$/.test(ctx.path)) {
    const chunks = [];
    for await (const chunk of ctx.req) {
      chunks.push(chunk);
    }
    const raw = Buffer.concat(chunks).toString();
    const form = querystring.parse(raw);
    if (form.prompt === 'login'
        && (form.login !== account.login || form.password !== account.password)) {
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = '<p>Wrong login or password.</p>';
      return;
    }
    ctx.req.body = raw;
  }
  await next();
});

const server = createServer(
  { cert: readFileSync(env('TLS_CERT')), key: readFileSync(env('TLS_KEY')) },
  provider.callback(),
);
server.listen(port, '127.0.0.1', () => {
  console.log(`listening on ${issuer}`);
});
