// Package jsonwire holds the pieces of a reflection-free JSON codec for
// the few documents every message passes through several times — events
// (relay/events) and queue envelopes (queue) —, each held byte for byte
// to encoding/json by its own package's tests: strings escaped and
// unescaped exactly as encoding/json does, times as time.Time's JSON
// methods, integers in JSON's grammar.
//
// A Reader answers false for anything outside the plain shape its caller
// expects; the caller then hands the whole document to encoding/json, so
// every odd document gets encoding/json's answer and error.
package jsonwire
