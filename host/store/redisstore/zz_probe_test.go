package redisstore

import (
	"testing"
	"time"

	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/violations"
)

func TestZZProbe(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{DedupTTL: -1}, nil)
	now := time.Now().UTC()
	vs := make([]violations.Violation, 0, 1000)
	for i := 0; i < 100000; i++ {
		vs = append(vs, benchViolation(i, now.Add(-time.Duration(i)*time.Second)))
		if len(vs) == 1000 {
			if err := s.AppendViolations(bg, vs); err != nil {
				t.Fatal(err)
			}
			vs = vs[:0]
		}
	}
	c := srv.Client()
	p := indexPrefix('r', "rule-03")
	o := indexPrefix('s', "LOW")
	for _, sc := range []string{
		`local ms = redis.call('ZREVRANGEBYLEX', KEYS[1], '(' .. ARGV[1] .. '~', '[' .. ARGV[1], 'LIMIT', 0, 500) local probe = {} for i, m in ipairs(ms) do probe[i] = ARGV[2] .. string.sub(m, #ARGV[1] + 1) end return #probe`,
		`local ms = redis.call('ZREVRANGEBYLEX', KEYS[1], '(' .. ARGV[1] .. '~', '[' .. ARGV[1], 'LIMIT', 0, 500) local probe = {} for i, m in ipairs(ms) do probe[i] = ARGV[2] .. string.sub(m, #ARGV[1] + 1) end local sc = redis.call('ZMSCORE', KEYS[1], unpack(probe)) return #sc`,
		`local ms = redis.call('ZREVRANGEBYLEX', KEYS[1], '(' .. ARGV[1] .. '~', '[' .. ARGV[1], 'LIMIT', 0, 500) local probe = {} for i, m in ipairs(ms) do probe[i] = ARGV[2] .. string.sub(m, #ARGV[1] + 1) end local n = 0 for i, p in ipairs(probe) do if redis.call('ZSCORE', KEYS[1], p) then n = n + 1 end end return n`,
		`local ms = redis.call('ZREVRANGEBYLEX', KEYS[1], '(' .. ARGV[1] .. '~', '[' .. ARGV[1], 'LIMIT', 0, 500) local probe = {} for i, m in ipairs(ms) do probe[i] = string.sub(m, #ARGV[1] + 1) end local sc = redis.call('HMGET', KEYS[2], unpack(probe)) return #sc`,
		`local ms = redis.call('ZREVRANGEBYLEX', KEYS[1], '(' .. ARGV[1] .. '~', '[' .. ARGV[1], 'LIMIT', 0, 500) local sc = redis.call('ZMSCORE', KEYS[1], unpack(ms)) return #sc`,
	} {
		c.ConfigResetStat(bg)
		for i := 0; i < 50; i++ {
			if _, err := c.Eval(bg, sc, []string{s.k.index, s.k.data}, p, o).Result(); err != nil {
				t.Fatal(err)
			}
		}
		info, _ := c.Info(bg, "commandstats").Result()
		t.Logf("%.60s\n%s", sc, info)
	}
}
