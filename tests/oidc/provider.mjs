// A real OpenID Connect provider (npm `oidc-provider`) for Orchard's sign-in end-to-end test.
//
// Protocol with the test (tests/oidc_e2e.rs):
//   1. listens on 127.0.0.1 with a port the OS picks and prints `listening http://127.0.0.1:PORT`;
//   2. reads one JSON line on stdin, {"client_id", "client_secret", "redirect_uri"} (Orchard's redirect URL is
//      only known once Orchard runs, and Orchard needs this issuer first), then prints `ready`;
//   3. exits when stdin closes.
// Until it is configured, every request answers 503.
//
// The devInteractions login form accepts any login and password. Accounts below carry a `groups` claim;
// any other login exists too, in no group.

import http from 'node:http';
import readline from 'node:readline';

import Provider from 'oidc-provider';

const ACCOUNTS = {
  alice: { email: 'alice@physics.example.edu', name: 'Alice Admin', groups: ['physics-it-admins', 'staff'] },
  bob: { email: 'bob@example.edu', name: 'Bob Nobody', groups: [] },
  // The web UI's tests (tests/webui_e2e.rs): a department viewer, and a person in two departments.
  vera: { email: 'vera@physics.example.edu', name: 'Vera Viewer', groups: ['physics-viewers'] },
  carol: { email: 'carol@example.edu', name: 'Carol Both', groups: ['physics-it-admins', 'music-viewers'] },
  // Central IT (tests/webui_browser.rs publishes a maintenance notice as her).
  olle: { email: 'olle@it.example.edu', name: 'Olle Operator', groups: ['central-it'] },
};

let handler = null;
const server = http.createServer((req, res) => {
  if (!handler) {
    res.statusCode = 503;
    res.end('provider not configured yet\n');
    return;
  }
  handler(req, res);
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  console.log(`listening ${issuer}`);

  const input = readline.createInterface({ input: process.stdin });
  input.once('line', (line) => {
    const { client_id: clientId, client_secret: clientSecret, redirect_uri: redirectUri } = JSON.parse(line);
    const provider = new Provider(issuer, {
      clients: [{
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [redirectUri],
        response_types: ['code'],
        grant_types: ['authorization_code'],
        token_endpoint_auth_method: 'client_secret_basic',
      }],
      // Orchard must send a PKCE challenge; a login without one is refused.
      pkce: { required: () => true },
      features: { devInteractions: { enabled: true } },
      // As at many universities, group membership comes with the profile scope and, in a code flow, only
      // through userinfo (conformIdTokenClaims stays on: the id token carries `sub` alone).
      claims: {
        openid: ['sub'],
        email: ['email', 'email_verified'],
        profile: ['name', 'groups'],
      },
      cookies: { keys: ['orchard-e2e-cookie-key-not-a-secret'] },
      async findAccount(ctx, id) {
        const known = ACCOUNTS[id] ?? { email: `${id}@example.edu`, name: id, groups: [] };
        return {
          accountId: id,
          async claims() {
            return {
              sub: id,
              email: known.email,
              email_verified: true,
              name: known.name,
              groups: known.groups,
            };
          },
        };
      },
    });
    handler = provider.callback();
    console.log('ready');
  });
  input.on('close', () => {
    server.close();
    process.exit(0);
  });
});
