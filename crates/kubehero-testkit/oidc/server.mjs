// Test identity provider for KubeHero: the real, certified npm `oidc-provider` (panva), configured with a
// few users and clients. Started by kubehero-testkit (crates/kubehero-testkit/src/oidc.rs); listens on
// 127.0.0.1 only.
//
// Env: PORT (required), JWKS_FILE (private JWK set, RS256 + ES256), DASHBOARD_URLS (optional).
// Test-only addition: GET /__test/jwks-hits returns how many times /jwks was fetched, so tests can count
// the control plane's JWKS requests. Everything else is stock oidc-provider behaviour.
import Provider from 'oidc-provider';
import { readFileSync } from 'node:fs';

const HOST = '127.0.0.1';
const PORT = Number(process.env.PORT);
const ISSUER = `http://${HOST}:${PORT}`;
const jwks = JSON.parse(readFileSync(process.env.JWKS_FILE, 'utf8'));

// login name == sub; devInteractions accept any password.
const USERS = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['kubehero-admins', 'dev'] },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob', groups: ['viewers'] },
  carol: { email: 'carol@example.com', email_verified: true, name: 'Carol', groups: ['oncall', 'dev'] },
  dave: { email: 'dave@example.com', email_verified: true, name: 'Dave', groups: [] },
  erin: { email: 'erin@example.com', email_verified: true, name: 'Erin', groups: ['kubehero-owners'] },
  frank: { email: 'frank@example.com', email_verified: true, name: 'Frank', groups: [], kh_roles: ['member'] },
  grace: { email: 'grace@example.com', email_verified: true, name: 'Grace', groups: ['auditors', 'kubehero-members'] },
};

const REDIRECT = 'http://127.0.0.1:8000/callback';
// KubeHero dashboards started by a test (their base URLs, comma-separated) may sign in through these clients.
const DASHBOARDS = (process.env.DASHBOARD_URLS || '').split(',').filter(Boolean);
const REDIRECTS = [REDIRECT, ...DASHBOARDS.map((d) => `${d}/api/auth/callback`)];
const LOGOUT_REDIRECTS = DASHBOARDS.map((d) => `${d}/login`);
const provider = new Provider(ISSUER, {
  jwks,
  clients: [
    {
      client_id: 'kubehero', client_secret: 'kubehero-secret',
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'], redirect_uris: REDIRECTS, post_logout_redirect_uris: LOGOUT_REDIRECTS,
      id_token_signed_response_alg: 'RS256',
    },
    {
      client_id: 'kubehero-es', client_secret: 'kubehero-es-secret',
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'], redirect_uris: REDIRECTS, post_logout_redirect_uris: LOGOUT_REDIRECTS,
      id_token_signed_response_alg: 'ES256',
    },
  ],
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups', 'kube'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups', 'kh_roles'] },
  conformIdTokenClaims: false,
  findAccount: async (ctx, sub) => (USERS[sub] ? { accountId: sub, claims: async () => ({ sub, ...USERS[sub] }) } : undefined),
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => 'https://kubehero.test/api',
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource, client) => ({
        scope: 'kube', audience: 'kubehero', accessTokenFormat: 'jwt', accessTokenTTL: 3600,
        jwt: { sign: { alg: client && client.clientId === 'kubehero-es' ? 'ES256' : 'RS256' } },
      }),
    },
  },
  extraTokenClaims: async (ctx, token) => {
    if (token.accountId && USERS[token.accountId]) return { groups: USERS[token.accountId].groups };
    if (token.kind === 'ClientCredentials') return { groups: ['system:service-clients'] };
    return undefined;
  },
  ttl: { IdToken: 3600, AccessToken: 3600, ClientCredentials: 3600, Interaction: 600, Session: 3600, Grant: 3600 },
});
provider.proxy = false;

let jwksHits = 0;
provider.use(async (ctx, next) => {
  if (ctx.path === '/__test/jwks-hits') {
    ctx.body = { hits: jwksHits };
    return;
  }
  if (ctx.path === '/jwks') jwksHits += 1;
  await next();
});
provider.app.listen(PORT, HOST, () => console.log(`oidc-provider listening on ${ISSUER}`));
