package redisstore

import (
	"context"
	"strconv"
	"strings"
)

// Warnings says what in Redis's settings would lose keys or break the
// store: a version before 7.0, persistence off (appendonly no and no RDB
// snapshots), an fsync policy that can lose acknowledged writes, a
// maxmemory-policy that evicts keys. A setting it cannot read (CONFIG is
// often disabled on managed Redis) is said too, so that the operator
// checks it.
func (e *Engine) Warnings(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	var out []string
	info, err := e.c.Do(ctx, e.b().Info().Section("server").Build()).ToString()
	if err == nil {
		if v := infoField(info, "redis_version"); v != "" && versionBefore(v, 7) {
			out = append(out, "Redis "+v+" is older than 7.0, which this store needs")
		}
	}
	get := func(name string) (string, bool) {
		m, err := e.c.Do(ctx, e.b().ConfigGet().Parameter(name).Build()).AsStrMap()
		if err != nil {
			out = append(out, "cannot read the setting "+name+" (CONFIG GET: "+err.Error()+"); check it by hand")
			return "", false
		}
		v, ok := m[name]
		return v, ok
	}
	aof, ok1 := get("appendonly")
	save, ok2 := get("save")
	if ok1 && ok2 && aof != "yes" && strings.TrimSpace(save) == "" {
		out = append(out, "persistence is off (appendonly no, save \"\"): a restart of Redis loses every key; set appendonly yes with appendfsync always")
	}
	if ok1 && aof != "yes" && strings.TrimSpace(save) != "" {
		out = append(out, "only RDB snapshots (save "+save+"): a crash of Redis loses the keys changed since the last snapshot; set appendonly yes with appendfsync always")
	}
	if ok1 && aof == "yes" {
		if fsync, ok := get("appendfsync"); ok && fsync != "always" {
			out = append(out, "appendfsync "+fsync+": a crash of Redis can lose up to a second of acknowledged changes (everysec) or more (no); appendfsync always loses none")
		}
	}
	if policy, ok := get("maxmemory-policy"); ok && policy != "noeviction" {
		out = append(out, "maxmemory-policy "+policy+" may evict keys under memory pressure, and an evicted key's API key stops working; use noeviction")
	}
	return out
}

func infoField(info, name string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// versionBefore reports whether version v's major number is below major.
func versionBefore(v string, major int) bool {
	head, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(head)
	return err == nil && n < major
}
