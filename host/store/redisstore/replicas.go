package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis replicates asynchronously: a primary acknowledges a write before
// any replica has it, and a failover promotes a replica that may not.
// So that a failover cannot lose a write BeTrace has taken as done (a
// violation the spool dropped, a rule change the API confirmed), a store
// with WaitReplicas sends WAIT after each write script, in one pipeline
// on one connection, since WAIT counts the replicas that hold that
// connection's writes. A write they do not confirm in time fails as
// unavailable; it landed on the primary, every write script is safe to
// run again, and the caller retries or spools it as after any outage.

// errNotReplicated is the error of a write the replicas did not confirm.
var errNotReplicated = errors.New("written on the primary but not confirmed by its replicas")

// run runs a write script, waiting for s.wait replicas when set.
func (s *Store) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	if s.wait == 0 {
		return script.Run(ctx, s.rdb, keys, args...)
	}
	// Leave part of the call's time for the reply and a retry.
	waitFor := max(s.cfg.Timeout/2, time.Millisecond)
	for loaded := false; ; loaded = true {
		var cmd *redis.Cmd
		var acked *redis.Cmd
		s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			cmd = script.EvalSha(ctx, p, keys, args...)
			acked = p.Do(ctx, "WAIT", s.wait, waitFor.Milliseconds())
			return nil
		})
		if !loaded && redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			// A new primary after a failover, or a restarted server.
			if err := script.Load(ctx, s.rdb).Err(); err != nil {
				cmd.SetErr(err)
				return cmd
			}
			continue
		}
		if cmd.Err() == nil {
			if n, err := acked.Int64(); err != nil {
				cmd.SetErr(fmt.Errorf("%w: WAIT: %w", errNotReplicated, err))
			} else if n < int64(s.wait) {
				cmd.SetErr(fmt.Errorf("%w: %d of %d replicas held it after %s", errNotReplicated, n, s.wait, waitFor))
			}
		}
		return cmd
	}
}
