// Writes a fresh private JWK set (RSA-2048 RS256 + EC P-256 ES256, kid = RFC 7638 thumbprint) to argv[2].
import { generateKeyPairSync, createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
const kid = (jwk) => createHash('sha256').update(JSON.stringify(jwk.kty === 'RSA'
  ? { e: jwk.e, kty: jwk.kty, n: jwk.n } : { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y })).digest('base64url');
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
writeFileSync(process.argv[2], JSON.stringify({ keys: [
  { ...rsa, kid: kid(rsa), alg: 'RS256', use: 'sig' },
  { ...ec, kid: kid(ec), alg: 'ES256', use: 'sig' },
] }));
