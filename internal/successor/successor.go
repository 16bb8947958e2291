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
	"errors"
	"fmt"
)

// errOpen is the one error of Open: which check failed is nobody's
// business.
var errOpen = errors.New("successor: the seal does not open with this credential")

// aead derives the cipher for credentials sealed under old: AES-256-GCM
// with a key from HKDF-SHA256 of old under label, so that each use of the
// package has keys of its own. It fails only where the platform refuses
// the algorithm, as a FIPS 140-only mode refuses GCM with nonces it did
// not make.
func aead(label, old string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, []byte(old), nil, label, 32)
	if err != nil {
		return nil, fmt.Errorf("successor: derive the key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("successor: %w", err)
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("successor: %w", err)
	}
	return a, nil
}

// Seal returns next sealed under old, as nonce || ciphertext, bound to
// ad.
func Seal(label, old, next string, ad []byte) ([]byte, error) {
	a, err := aead(label, old)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(next)+a.Overhead())
	rand.Read(nonce)
	return a.Seal(nonce, nonce, []byte(next), ad), nil
}

// Open returns what Seal sealed under old with the same label and ad, or
// an error if sealed is anything else.
func Open(label, old string, sealed, ad []byte) (string, error) {
	a, err := aead(label, old)
	if err != nil {
		return "", err
	}
	if len(sealed) < a.NonceSize() {
		return "", errOpen
	}
	plain, err := a.Open(nil, sealed[:a.NonceSize()], sealed[a.NonceSize():], ad)
	if err != nil {
		return "", errOpen
	}
	return string(plain), nil
}
