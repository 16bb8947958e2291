package token

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Access tokens are JWTs (RFC 7519) in the profile of RFC 9068 (typ
// at+jwt), spelled in exactly one way: this Issuer's header for the key,
// claims in a fixed order with no whitespace, base64url without padding
// and with zero trailing bits, signatures of their exact length. Any
// other spelling is refused before its claims are looked at, so a token
// cannot come back re-spelled and a parser difference has nothing to
// work with.

const (
	typ         = "at+jwt"
	maxTokenLen = 4096 // far above any token we issue; bounds the work per request
	maxPayload  = maxTokenLen * 3 / 4
	jtiBytes    = 16
)

var b64 = base64.RawURLEncoding.Strict()

type key struct {
	id     string
	alg    string // "EdDSA" or "HS256"
	priv   ed25519.PrivateKey
	pub    ed25519.PublicKey
	secret []byte
	header string // the encoded header segment tokens signed with it start with
	sigLen int    // encoded signature length
	macs   sync.Pool
}

func newKey(c Key) (*key, error) {
	if !validKeyID(c.ID) {
		return nil, errors.New("the key ID must be 1 to 64 characters from A-Z, a-z, 0-9, '-' and '_'")
	}
	n := 0
	for _, set := range []bool{c.Private != nil, c.Public != nil, c.Secret != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("key %q: set exactly one of Private, Public and Secret", c.ID)
	}
	k := &key{id: c.ID}
	switch {
	case c.Private != nil:
		if len(c.Private) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("key %q: an Ed25519 private key has %d bytes, not %d", c.ID, ed25519.PrivateKeySize, len(c.Private))
		}
		// The public half is stored in the key: make sure it belongs to
		// the seed, or every signature would be bad.
		if !bytes.Equal(ed25519.NewKeyFromSeed(c.Private.Seed()), c.Private) {
			return nil, fmt.Errorf("key %q: the Ed25519 private key is corrupt (its public half does not match its seed)", c.ID)
		}
		k.alg, k.priv, k.pub = "EdDSA", c.Private, c.Private.Public().(ed25519.PublicKey)
	case c.Public != nil:
		if len(c.Public) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %q: an Ed25519 public key has %d bytes, not %d", c.ID, ed25519.PublicKeySize, len(c.Public))
		}
		k.alg, k.pub = "EdDSA", c.Public
	default:
		if len(c.Secret) < 32 {
			return nil, fmt.Errorf("key %q: an HS256 secret needs at least 32 random bytes, not %d", c.ID, len(c.Secret))
		}
		k.alg, k.secret = "HS256", bytes.Clone(c.Secret)
		k.macs.New = func() any { return hmac.New(sha256.New, k.secret) }
	}
	sigBytes := ed25519.SignatureSize
	if k.alg == "HS256" {
		sigBytes = sha256.Size
	}
	k.sigLen = b64.EncodedLen(sigBytes)
	k.header = b64.EncodeToString([]byte(`{"alg":"` + k.alg + `","kid":"` + k.id + `","typ":"` + typ + `"}`))
	return k, nil
}

func validKeyID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (k *key) canSign() bool { return k.priv != nil || k.secret != nil }

// sign appends the signature of msg to dst.
func (k *key) sign(dst, msg []byte) []byte {
	if k.alg == "EdDSA" {
		return append(dst, ed25519.Sign(k.priv, msg)...)
	}
	mac := k.macs.Get().(hash.Hash)
	defer k.macs.Put(mac)
	mac.Reset()
	mac.Write(msg)
	return mac.Sum(dst)
}

// verify reports whether sig, of the key's exact signature length, signs
// msg.
func (k *key) verify(msg, sig []byte) bool {
	if k.alg == "EdDSA" {
		return ed25519.Verify(k.pub, msg, sig)
	}
	mac := k.macs.Get().(hash.Hash)
	defer k.macs.Put(mac)
	mac.Reset()
	mac.Write(msg)
	var sum [sha256.Size]byte
	return hmac.Equal(mac.Sum(sum[:0]), sig)
}

// claims are the payload as the token spells it.
type claims struct {
	iss, sub, aud string
	exp, nbf, iat int64 // unix seconds
	jti, sid      string
	stamp         int64 // unix ms
}

// appendClaims appends the one spelling of c.
func appendClaims(b []byte, c *claims) []byte {
	b = append(b, `{"iss":`...)
	b = appendString(b, c.iss)
	b = append(b, `,"sub":`...)
	b = appendString(b, c.sub)
	b = append(b, `,"aud":`...)
	b = appendString(b, c.aud)
	b = append(b, `,"exp":`...)
	b = strconv.AppendInt(b, c.exp, 10)
	b = append(b, `,"nbf":`...)
	b = strconv.AppendInt(b, c.nbf, 10)
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, c.iat, 10)
	b = append(b, `,"jti":`...)
	b = appendString(b, c.jti)
	b = append(b, `,"sid":`...)
	b = appendString(b, c.sid)
	b = append(b, `,"stamp":`...)
	b = strconv.AppendInt(b, c.stamp, 10)
	return append(b, '}')
}

// appendString appends s as a JSON string. Strings in claims are
// printable UTF-8 (checked at issue), so only '"' and '\' need escaping.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// claimParser reads claims spelled exactly as appendClaims spells them.
type claimParser struct {
	s   string
	bad bool
}

func (p *claimParser) lit(l string) {
	if !strings.HasPrefix(p.s, l) {
		p.bad = true
		return
	}
	p.s = p.s[len(l):]
}

func (p *claimParser) str() string {
	if p.bad || len(p.s) == 0 || p.s[0] != '"' {
		p.bad = true
		return ""
	}
	// Fast path: no escapes, the common case, costs no allocation.
	for i := 1; i < len(p.s); i++ {
		switch c := p.s[i]; {
		case c == '"':
			v := p.s[1:i]
			p.s = p.s[i+1:]
			return v
		case c == '\\':
			return p.escaped()
		case c < 0x20 || c == 0x7f:
			p.bad = true
			return ""
		}
	}
	p.bad = true
	return ""
}

func (p *claimParser) escaped() string {
	var b []byte
	for i := 1; i < len(p.s); i++ {
		switch c := p.s[i]; {
		case c == '"':
			p.s = p.s[i+1:]
			return string(b)
		case c == '\\':
			if i+1 == len(p.s) || (p.s[i+1] != '"' && p.s[i+1] != '\\') {
				p.bad = true // appendString writes no other escape
				return ""
			}
			i++
			b = append(b, p.s[i])
		case c < 0x20 || c == 0x7f:
			p.bad = true
			return ""
		default:
			b = append(b, c)
		}
	}
	p.bad = true
	return ""
}

// num reads a non-negative integer as strconv.AppendInt writes it: no
// sign, no leading zero, no fraction or exponent.
func (p *claimParser) num() int64 {
	i := 0
	for i < len(p.s) && '0' <= p.s[i] && p.s[i] <= '9' {
		i++
	}
	if p.bad || i == 0 || i > 15 || (i > 1 && p.s[0] == '0') {
		p.bad = true
		return 0
	}
	n, _ := strconv.ParseInt(p.s[:i], 10, 64)
	p.s = p.s[i:]
	return n
}

// parseClaims reads a payload spelled exactly as appendClaims spells it.
// The payload must be valid UTF-8.
func parseClaims(s string) (c claims, ok bool) {
	p := claimParser{s: s}
	p.lit(`{"iss":`)
	c.iss = p.str()
	p.lit(`,"sub":`)
	c.sub = p.str()
	p.lit(`,"aud":`)
	c.aud = p.str()
	p.lit(`,"exp":`)
	c.exp = p.num()
	p.lit(`,"nbf":`)
	c.nbf = p.num()
	p.lit(`,"iat":`)
	c.iat = p.num()
	p.lit(`,"jti":`)
	c.jti = p.str()
	p.lit(`,"sid":`)
	c.sid = p.str()
	p.lit(`,"stamp":`)
	c.stamp = p.num()
	p.lit(`}`)
	if p.bad || p.s != "" || c.sub == "" || c.jti == "" || c.sid == "" {
		return claims{}, false
	}
	return c, true
}

// sign returns the token for c, signed with k.
func (k *key) token(c *claims) string {
	var buf [1024]byte
	payload := appendClaims(buf[:0], c)
	n := len(k.header) + 1 + b64.EncodedLen(len(payload))
	out := make([]byte, 0, n+1+k.sigLen)
	out = append(out, k.header...)
	out = append(out, '.')
	out = b64.AppendEncode(out, payload)
	var sig [ed25519.SignatureSize]byte
	out = append(out, '.')
	out = b64.AppendEncode(out, k.sign(sig[:0], out[:n]))
	return string(out)
}

// accessToken issues an access token for a family.
func (is *Issuer) accessToken(userID, handle string, stamp int64, now time.Time) (string, time.Time) {
	iat := now.Unix()
	exp := now.Add(jitter(is.accessTTL)).Unix()
	if exp <= iat {
		exp = iat + 1
	}
	var jti [jtiBytes]byte
	rand.Read(jti[:])
	c := claims{
		iss: is.iss, sub: userID, aud: is.aud,
		exp: exp, nbf: iat, iat: iat,
		jti: b64.EncodeToString(jti[:]), sid: handle, stamp: stamp,
	}
	return is.signer.token(&c), time.Unix(exp, 0)
}

// Verify checks an access token and returns its claims. It asks no
// store: the signature, the claims and the Revocations in memory decide.
// The error wraps ErrMalformed, ErrSignature, ErrClaims, ErrExpired or
// ErrRevoked.
func (is *Issuer) Verify(token string) (Claims, error) {
	return is.verify(token, is.now())
}

func (is *Issuer) verify(tok string, now time.Time) (Claims, error) {
	if len(tok) > maxTokenLen {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, maxTokenLen)
	}
	i := strings.IndexByte(tok, '.')
	j := strings.LastIndexByte(tok, '.')
	if i < 0 || i == j {
		return Claims{}, fmt.Errorf("%w: not three dot-separated parts", ErrMalformed)
	}
	// The header is compared whole with the ones this Issuer writes: that
	// refuses alg none, another algorithm for the key (HS256 keyed with
	// an Ed25519 public key, say), another typ, an unknown kid, extra or
	// duplicate fields and every other spelling, in one map lookup.
	k := is.byHeader[tok[:i]]
	if k == nil {
		return Claims{}, headerError(tok[:i], is.keys)
	}
	b := []byte(tok)
	seg := b[j+1:]
	var sig [ed25519.SignatureSize]byte
	if len(seg) != k.sigLen {
		return Claims{}, fmt.Errorf("%w: signature of the wrong length", ErrMalformed)
	}
	if n, err := b64.Decode(sig[:], seg); err != nil || b64.EncodedLen(n) != len(seg) {
		return Claims{}, fmt.Errorf("%w: signature not canonical base64url", ErrMalformed)
	}
	if !k.verify(b[:j], sig[:b64.DecodedLen(k.sigLen)]) {
		return Claims{}, ErrSignature
	}
	seg = b[i+1 : j]
	var buf [maxPayload]byte
	n, err := b64.Decode(buf[:], seg)
	// Decode skips '\r' and '\n' and Strict only polices trailing bits:
	// the exact length refuses the rest.
	if err != nil || b64.EncodedLen(n) != len(seg) {
		return Claims{}, fmt.Errorf("%w: payload not canonical base64url", ErrMalformed)
	}
	c, ok := parseClaims(string(buf[:n]))
	if !ok || !validUTF8(buf[:n]) {
		return Claims{}, fmt.Errorf("%w: claims not in this issuer's form", ErrMalformed)
	}
	switch {
	case c.iss != is.iss:
		return Claims{}, fmt.Errorf("%w: issued by another issuer", ErrClaims)
	case c.aud != is.aud:
		return Claims{}, fmt.Errorf("%w: meant for another audience", ErrClaims)
	case now.Unix() >= c.exp:
		return Claims{}, ErrExpired
	case c.iat > now.Add(is.leeway).Unix() || c.nbf > now.Add(is.leeway).Unix():
		return Claims{}, fmt.Errorf("%w: issued in the future; check the clocks", ErrClaims)
	}
	// The stamp, not iat, is compared with the user's cutoff: iat has a
	// one-second resolution, which would make a token issued just after
	// a password change look older than the change.
	stamp := time.UnixMilli(c.stamp)
	if is.rev.Revoked(c.sub, c.jti, stamp) || is.rev.Revoked("", c.sid, stamp) {
		return Claims{}, ErrRevoked
	}
	out := Claims{
		Issuer: is.iss, UserID: c.sub, Audience: is.aud,
		IssuedAt: time.Unix(c.iat, 0), ExpiresAt: time.Unix(c.exp, 0),
		ID: c.jti, Handle: c.sid,
	}
	if c.stamp != 0 {
		out.Stamp = stamp
	}
	return out, nil
}

func validUTF8(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return printable(string(b))
		}
	}
	return true
}

// headerError says why a header is not one of ours. It runs only for
// refused tokens, so it may take its time; it never quotes the input.
func headerError(seg string, keys []*key) error {
	raw, err := b64.DecodeString(seg)
	if err != nil || b64.EncodedLen(len(raw)) != len(seg) {
		return fmt.Errorf("%w: header not canonical base64url", ErrMalformed)
	}
	var h struct {
		Alg, Kid, Typ string
	}
	if json.Unmarshal(raw, &h) != nil {
		return fmt.Errorf("%w: header is not a JSON object", ErrMalformed)
	}
	var known *key
	for _, k := range keys {
		if k.id == h.Kid {
			known = k
		}
	}
	switch {
	case h.Alg == "none" || strings.EqualFold(h.Alg, "none"):
		return fmt.Errorf("%w: unsigned tokens (alg none) are refused", ErrMalformed)
	case known == nil:
		return fmt.Errorf("%w: unknown key id (kid); the key may have been retired", ErrMalformed)
	case h.Alg != known.alg:
		return fmt.Errorf("%w: algorithm not the one of the key (kid)", ErrMalformed)
	case h.Typ != typ:
		return fmt.Errorf("%w: typ is not %s", ErrMalformed, typ)
	}
	return fmt.Errorf("%w: header not spelled as this issuer spells it", ErrMalformed)
}

// jwks returns the JSON Web Key Set (RFC 7517, RFC 8037) of the Ed25519
// keys. HS256 secrets are never published.
func jwks(keys []*key) []byte {
	type jwk struct {
		Kty string `json:"kty"`
		Crv string `json:"crv"`
		X   string `json:"x"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
	}
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, k := range keys {
		if k.pub != nil {
			set.Keys = append(set.Keys, jwk{Kty: "OKP", Crv: "Ed25519", X: b64.EncodeToString(k.pub), Kid: k.id, Alg: "EdDSA", Use: "sig"})
		}
	}
	b, _ := json.Marshal(set)
	return b
}
