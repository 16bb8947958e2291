// Package successor seals the credential that replaced another under the
// one it replaced. A store keeps the seal where the old credential's
// record was (a tombstone): it learns nothing from it, and only a client
// that still holds the old credential, such as a request that was in
// flight when the rotation happened, can follow it to the new one.
package successor

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
)

// aead derives the cipher for credentials sealed under old: AES-256-GCM
// with a key from HKDF-SHA256 of old under label, so that each use of the
// package has keys of its own.
func aead(label, old string) cipher.AEAD {
	key, err := hkdf.Key(sha256.New, []byte(old), nil, label, 32)
	if err != nil {
		panic(err) // cannot happen: 32 bytes of SHA-256 HKDF output
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // cannot happen: a 32-byte key
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		panic(err) // cannot happen: AES has 16-byte blocks
	}
	return a
}

// Seal returns next sealed under old, as nonce || ciphertext, bound to
// ad.
func Seal(label, old, next string, ad []byte) []byte {
	a := aead(label, old)
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(next)+a.Overhead())
	rand.Read(nonce)
	return a.Seal(nonce, nonce, []byte(next), ad)
}

// Open returns what Seal sealed under old with the same label and ad, or
// false if sealed is anything else.
func Open(label, old string, sealed, ad []byte) (string, bool) {
	a := aead(label, old)
	if len(sealed) < a.NonceSize() {
		return "", false
	}
	plain, err := a.Open(nil, sealed[:a.NonceSize()], sealed[a.NonceSize():], ad)
	if err != nil {
		return "", false
	}
	return string(plain), true
}
