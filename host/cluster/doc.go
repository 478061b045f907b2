// Package cluster makes several BeTrace instances behave as one: membership
// in Redis, ownership of traces, forwarding of spans to their owner.
//
// Every instance heartbeats an entry into a Redis sorted set scored by its
// expiry and reads everyone else's in the same round trip. A trace ID maps to
// one of 256 fixed partitions; each partition's owner is chosen by
// rendezvous hashing over the live members, so all instances that share a
// view agree without talking to each other, and a membership change moves
// only the partitions of the member that came or went. Ingest on any
// instance routes each span by this table: its own spans to its assembler,
// the others into a bounded queue per peer, sent in batches in the ABI wire
// layout. No Redis call is made per span.
//
// Buffered traces are not moved when membership changes. A trace that was
// open while its partition changed owner may be split across two instances;
// such traces are evaluated as fragments (see Membership.Fragment), and rules
// do not report the absence of a span on a fragment.
package cluster
