package metrics

import (
	"context"
	"errors"
	"net"

	"github.com/redis/go-redis/v9"
)

// redisCommands are the values the op label of
// gatehouse_redis_operations_total takes besides "other": the commands
// Gatehouse sends, and a few neighbours.
var redisCommands = []string{
	"get", "set", "setnx", "getdel", "getex", "mget", "mset", "del", "unlink", "exists",
	"incr", "incrby", "decr", "decrby", "expire", "pexpire", "ttl", "pttl",
	"eval", "evalsha", "script", "publish", "ping", "scan", "multi", "exec", "hello", "zrem",
}

// RedisHook returns a go-redis hook that counts each command in
// gatehouse_redis_operations_total by op (the command's lower-case name, or
// "other" for a command outside a fixed list) and result ("ok" or "error";
// redis.Nil, a missing key, is "ok"). A pipeline counts each of its commands.
func (m *Metrics) RedisHook() redis.Hook { return redisHook{m} }

type redisHook struct{ m *Metrics }

// DialHook leaves dialling alone.
func (h redisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

// ProcessHook counts one command.
func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.m.redisOp(cmd.Name(), err)
		return err
	}
}

// ProcessPipelineHook counts each command of a pipeline by its own result.
func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			cerr := c.Err()
			if cerr == nil && err != nil && !errors.Is(err, redis.Nil) {
				// The pipeline failed as a whole (a broken connection)
				// before this command got an answer.
				cerr = err
			}
			h.m.redisOp(c.Name(), cerr)
		}
		return err
	}
}

func (m *Metrics) redisOp(op string, err error) {
	c, ok := m.redisOps[op]
	if !ok {
		c = m.redisOps[other]
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		c[1].Inc()
		return
	}
	c[0].Inc()
}
