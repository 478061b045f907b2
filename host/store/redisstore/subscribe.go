package redisstore

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Subscribe listens for rule changes made by any instance. Each value on
// the returned channel is a hint: a rules version, either announced on the
// rules:changed channel by the instance that made the change, or read
// with RulesVersion when the subscription is established and each time it
// is re-established after a lost connection. Hints are coalesced: a slow
// reader sees the latest hint that arrived, not every one.
//
// Hints are only hints: pub/sub loses whatever is published while the
// connection is down, and the re-subscription hint comes only once Redis
// is back. A sync loop should therefore also poll RulesVersion now and
// then, and reload with RulesSnapshot whenever a hint or a poll shows a
// version other than the one it holds.
//
// The channel is closed after stop is called, ctx is done, or the Store
// is closed. stop is idempotent and waits for the subscription's goroutine.
func (s *Store) Subscribe(ctx context.Context) (hints <-chan int64, stop func()) {
	out := make(chan int64, 1)
	sctx, cancel := context.WithCancel(ctx)
	sub := &subscription{cancel: cancel, done: make(chan struct{})}
	s.subsMu.Lock()
	if s.closed.Load() {
		s.subsMu.Unlock()
		cancel()
		close(out)
		return out, func() {}
	}
	s.subs[sub] = struct{}{}
	s.subsMu.Unlock()

	c, ccancel := context.WithTimeout(sctx, s.cfg.Timeout)
	// A SUBSCRIBE that fails (Redis down) is sent again by go-redis when
	// the channel below receives, as after any lost connection.
	ps := s.rdb.Subscribe(c, s.k.rulesChanged)
	ccancel()
	ch := ps.ChannelWithSubscriptions(
		redis.WithChannelSize(16),
		redis.WithChannelHealthCheckInterval(max(s.cfg.Timeout, time.Second)),
		redis.WithChannelPingTimeout(s.cfg.Timeout),
		redis.WithChannelReconnectTimeout(s.cfg.Timeout),
	)

	go func() {
		defer func() {
			ps.Close()
			s.subsMu.Lock()
			delete(s.subs, sub)
			s.subsMu.Unlock()
			close(out)
			close(sub.done)
		}()
		for {
			select {
			case <-sctx.Done():
				return
			case m, ok := <-ch:
				if !ok {
					return
				}
				switch m := m.(type) {
				case *redis.Subscription:
					if m.Kind != "subscribe" {
						continue
					}
					// (Re)subscribed: changes may have been missed.
					v, err := s.RulesVersion(sctx)
					if err != nil {
						continue // the next reconnection or poll catches up
					}
					offer(out, v)
				case *redis.Message:
					if v, err := strconv.ParseInt(m.Payload, 10, 64); err == nil {
						offer(out, v)
					}
				}
			}
		}
	}()
	return out, sub.stop
}

// subscription is one Subscribe's goroutine.
type subscription struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has cleaned up
}

func (sub *subscription) stop() {
	sub.cancel()
	<-sub.done
}

// offer puts v on a one-slot channel that only its sender fills,
// replacing a hint the reader has not taken yet.
func offer(out chan int64, v int64) {
	select {
	case <-out:
	default:
	}
	out <- v
}
