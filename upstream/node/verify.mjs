// verify.mjs: verifying caddy-rebell's identity assertion in a Node
// upstream with the `jose` package (docs/upstream.md). Copy it.
//
//   import { requireIdentity } from './verify.mjs';
//   http.createServer(requireIdentity({
//     jwksUrl: 'https://api.example.com/.well-known/rebell-jwks.json',
//     audience: 'api.example.com',
//   }, (req, res, identity) => { res.end(identity.customerId); }));

import { createRemoteJWKSet, jwtVerify } from 'jose';

// identityVerifier returns verify(req) → identity, which throws unless req
// carries exactly one assertion signed by a key of the gateway's JWKS
// (EdDSA or ES256, typ JWT) with the expected iss and aud, within iat/exp.
export function identityVerifier({
  jwksUrl,
  audience,
  issuer = 'caddy-rebell',
  header = 'x-rebell-identity',
  clockTolerance = 30, // seconds of clock skew
}) {
  if (!jwksUrl || !audience) {
    throw new Error('identityVerifier: jwksUrl and audience are required');
  }
  // Caches the key set and fetches it again when an assertion names an
  // unknown kid (a rotation), at most every 30 s.
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  const name = header.toLowerCase();
  return async function verify(req) {
    const value = req.headers[name];
    // Node joins repeated headers with ", ", which no JWS contains: two
    // assertions fail here or in jwtVerify.
    if (typeof value !== 'string' || value === '' || value.includes(',')) {
      throw new Error('identity assertion missing or repeated');
    }
    const { payload } = await jwtVerify(value, jwks, {
      issuer,
      audience,
      algorithms: ['EdDSA', 'ES256'],
      typ: 'JWT',
      clockTolerance,
      requiredClaims: ['sub', 'iat', 'exp', 'sid'],
    });
    return {
      customerId: payload.sub,
      sessionHandle: payload.sid,
      issuedAt: new Date(payload.iat * 1000),
      expiresAt: new Date(payload.exp * 1000),
    };
  };
}

// requireIdentity wraps a request handler: it runs handler(req, res,
// identity) for a request with a valid assertion, and answers 401 to any
// other.
export function requireIdentity(options, handler) {
  const verify = identityVerifier(options);
  return async (req, res) => {
    let identity;
    try {
      identity = await verify(req);
    } catch {
      res.writeHead(401, { 'Content-Type': 'text/plain' });
      res.end('identity assertion missing or invalid');
      return;
    }
    await handler(req, res, identity);
  };
}
