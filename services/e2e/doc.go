// Package e2e holds the fleet's end-to-end test: the real binaries (quantfleet, dispatcher,
// assembler, worker) built into a temporary directory, each a separate process, against a NATS
// server and an S3 server, each in a process of its own (`quantfleet dev-servers --serve nats|s3`:
// the nats-server and Versity gateway code). It has no non-test code.
package e2e
