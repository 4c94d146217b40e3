//go:build goexperiment.boringcrypto

package main

// cryptoBackend names the crypto this binary was built with (scripts/build:
// GOEXPERIMENT=boringcrypto signs RSA about twice as fast as Go's own code).
const cryptoBackend = "boringcrypto"
