// A local, standards-certified OpenID provider (panva/oidc-provider) for Portway's oidc tests.
// Development settings: http issuer on 127.0.0.1, devInteractions (built-in login and consent
// pages: any login name, any password). Configured through environment variables by the test
// fixture; prints "READY <issuer>" on stdout once it listens.
import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT);
const issuer = `http://127.0.0.1:${port}`;
const redirectUris = (process.env.IDP_REDIRECT_URIS || '').split(' ').filter(Boolean);
const logoutUris = (process.env.IDP_POST_LOGOUT_URIS || '').split(' ').filter(Boolean);
const accessTtl = Number(process.env.IDP_ACCESS_TTL || 300);
const resource = process.env.IDP_RESOURCE || 'urn:portway:api';

const config = {
  clients: [
    {
      client_id: 'portal',
      client_secret: process.env.IDP_CLIENT_SECRET || 'portal-secret',
      redirect_uris: redirectUris,
      post_logout_redirect_uris: logoutUris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      // the gateway authenticating with a signed assertion (client_auth: private_key_jwt)
      client_id: 'portal-pkjwt',
      redirect_uris: redirectUris,
      post_logout_redirect_uris: logoutUris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'private_key_jwt',
      jwks: JSON.parse(process.env.IDP_PKJWT_JWKS || '{"keys": []}'),
    },
    {
      client_id: 'api-client',
      client_secret: 'api-client-secret',
      redirect_uris: [],
      grant_types: ['client_credentials'],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api',
        audience: resource,
        accessTokenFormat: 'jwt',
        accessTokenTTL: accessTtl,
      }),
    },
  },
  // a refresh token for every code grant of a client allowed to refresh (no offline_access
  // dance in tests)
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  conformIdTokenClaims: false,
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'groups'] },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'api'],
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({
      sub: id,
      email: `${id}@example.test`,
      email_verified: true,
      name: id,
      // users named big-… are members of many groups: their ID token (and session) is large
      groups: id.startsWith('big-')
        ? Array.from({ length: 120 }, (_, i) => `group-with-a-long-name-${i}`)
        : ['users'],
    }),
  }),
  ttl: {
    AccessToken: accessTtl,
    ClientCredentials: accessTtl,
    IdToken: 3600,
    RefreshToken: 86400,
    Interaction: 600,
    Session: 86400,
    Grant: 86400,
  },
  cookies: { keys: ['portway-test-idp-cookie-key'] },
};

const provider = new Provider(issuer, config);
provider.proxy = false;
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.error_detail || err.message));
const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
