// Package cluster makes several BeTrace instances behave as one: membership
// in Redis, ownership of traces, forwarding of spans to their owner.
//
// Every instance heartbeats an entry into a Redis sorted set scored by its
// expiry. A trace ID maps to one of 256 fixed partitions; each partition's
// owner is chosen by rendezvous hashing over the members of a view. Ingest
// on any instance routes each span by the view in effect: its own spans to
// its assembler, the others into a bounded queue per peer, sent in batches
// in the ABI wire layout. No Redis call is made per span.
//
// # Views: every instance changes owners at the same instant
//
// Each heartbeat runs one script that drops expired entries, refreshes the
// instance's own, and, when the live set differs from the latest view,
// appends the next view to a list in Redis: an epoch, its members, the
// members that died rather than left, and a start SwitchDelay (one heartbeat
// and one Redis timeout) ahead. Every instance reads the list at every
// heartbeat, so each knows a view before it starts, and all route by it from
// the same moment; a joining instance routes by the view it found, of which
// it is not a member, until its own starts. Entries carry an incarnation
// drawn by each process, so a restarted instance is a new member whose
// predecessor died.
//
// # Hand-off
//
// When a view starts, the old owner of each moved partition takes the
// traces it is assembling there out of its buffer and forwards them to the
// new owner (Membership.OnChange, traces.Assembler.Extract), while every
// instance already sends the traces' next spans there: the new owner
// assembles each trace whole. Spans still in flight to the old owner are
// passed on by it (Router.Handler); spans queued for a member that left the
// view are rerouted at once, the view change cutting any retry backoff
// short. A leaving instance removes its entry, serves until the view without
// it starts, hands everything over, then stops.
//
// # Fragments
//
// A member that dies hands nothing over, and any instance accepts spans of
// any trace, so the spans it held or had not yet forwarded die with it. A
// survivor dates the death by the first forwarded request nothing listened
// for, and evaluates as a fragment (Membership.Fragment) any trace open from
// a little before it last heard from the dead member until an idle timeout
// after that; without such a date, from the member's earliest possible death
// until the view without it. Spans it queued for the dead member go to the
// new owner at the view change, marked as parts of fragments when queued
// before that date and an idle timeout (Router.SetFragmentSink): later ones
// cannot share a trace with anything the dead member held. A restarted
// instance's own traces in its predecessor's partitions are fragments until
// the view naming it. Rules report no absence on a fragment
// (api/abi-v1.md), so their absence verdicts are lost, and counted in
// betrace_cluster_fragments_total; nothing is reported falsely.
package cluster
