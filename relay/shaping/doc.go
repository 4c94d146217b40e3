// Package shaping limits outbound traffic per mailbox provider, across
// every node of a cluster, and backs off when a provider says so
// (issue 16). Work in progress: the API of SHAPING-API.md; the
// implementation follows.
package shaping
