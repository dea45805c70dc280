package kv

import "time"

// Limits is an engine shared by several processes that also holds their
// rate limits and quotas, so that a limit holds for all of them together
// (redisstore implements it; Badger, used by one process, does not). Its
// calls are batched: one round trip serves many buckets and counters.
// The engine's own clock decides refills, so that the processes' clocks
// do not matter.
type Limits interface {
	Engine
	// TakeTokens takes tokens from token buckets, each created full when
	// it does not exist, and fills in each take's results. A bucket's
	// limit is passed with every take; a bucket whose limit changed
	// keeps what was consumed (as much as fits the new burst).
	TakeTokens(takes []TokenTake) error
	// AddCounts counts requests against quota counters, each capped at
	// its limit, and fills in each add's results.
	AddCounts(adds []CountAdd) error
	// Heartbeat records that this process is alive for ttl and returns
	// how many processes are (this one included).
	Heartbeat(ttl time.Duration) (int, error)
}

// TokenTake is a take of tokens from one bucket: the bucket, its limit,
// how many tokens are wanted, and what the engine answered.
type TokenTake struct {
	// Bucket names the bucket (unique within the engine's namespace).
	Bucket string
	// Rate is the refill, in tokens per second; Burst the bucket's size.
	Rate  float64
	Burst int64
	// Want is how many tokens to take; Ahead how far ahead they may be
	// taken: tokens that the bucket will have within Ahead may be granted
	// now (the bucket goes into debt), to be spent when they are due.
	Want  int64
	Ahead time.Duration
	// Granted is how many tokens were taken (at most Want). Before is
	// the bucket's level before the take: token i (from 0) of the grant
	// is due (i + 1 - Before) / Rate seconds after the take (at once if
	// that is not positive). After (Before - Granted) may be negative.
	Granted int64
	Before  float64
	// Wait is, when nothing was granted, how long until a token can be.
	Wait time.Duration
}

// CountAdd counts requests against one quota counter.
type CountAdd struct {
	// Counter names the counter (unique within the engine's namespace,
	// and per period: a new period is a new counter).
	Counter string
	// Limit is the most the counter may reach; Add how much to add
	// (negative gives back counts that were not used, never below 0).
	Limit, Add int64
	// Seed is the counter's value if it does not exist yet (a count
	// persisted elsewhere, as by an earlier version).
	Seed int64
	// ExpireAt is when the engine may drop the counter.
	ExpireAt time.Time
	// Granted is how much was added (at most Add, less when the limit
	// was reached); Used is the counter after the add.
	Granted, Used int64
}
