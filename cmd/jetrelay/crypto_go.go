//go:build !goexperiment.boringcrypto

package main

// cryptoBackend names the crypto this binary was built with; scripts/build
// makes a GOEXPERIMENT=boringcrypto binary where a C compiler is available.
const cryptoBackend = "go"
