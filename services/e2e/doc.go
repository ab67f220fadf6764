// Package e2e holds the fleet's end-to-end test: the real binaries (quantfleet, dispatcher,
// assembler, worker) built into a temporary directory, each a separate process, against a NATS and
// an S3 server that run in a process of their own (`quantfleet dev-servers`). It has no non-test
// code.
package e2e
