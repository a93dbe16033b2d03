package main

import (
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
)

// sentinelOpt checks the options asynq parsed from a redis-sentinel:// URL
// and sizes their pool for poolSize concurrent users (0: go-redis's
// default); options of any other form come back unchanged.
func sentinelOpt(url string, opt asynq.RedisConnOpt, poolSize int) (asynq.RedisConnOpt, error) {
	o, ok := opt.(asynq.RedisFailoverClientOpt)
	if !ok {
		return opt, nil
	}
	if o.MasterName == "" {
		return nil, usageErr(fmt.Errorf("--redis-url %s: a redis-sentinel:// URL needs ?master=NAME, the name the Sentinels monitor the master under", redactURL(url)))
	}
	if len(o.SentinelAddrs) == 0 || o.SentinelAddrs[0] == "" {
		return nil, usageErr(errors.New("--redis-url: a redis-sentinel:// URL needs the Sentinels' host:port[,host:port...]"))
	}
	if poolSize > 0 {
		o.PoolSize = poolSize
	}
	return o, nil
}
