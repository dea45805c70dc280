package keystore

import (
	"errors"
	"maps"
	"testing"
	"time"
)

// FuzzUsageValue: a stored usage point, whatever its bytes, decodes or is
// refused without panicking, and what decodes encodes back to the same
// counts.
func FuzzUsageValue(f *testing.F) {
	f.Add(appendUsage(nil, map[string]uint64{"ok": 3, "rate_limited": 1}))
	f.Add([]byte{1, 2, 'o', 'k', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{2})
	f.Add([]byte{1, 200, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		counts, err := decodeUsage(b)
		if err != nil {
			if !errors.Is(err, errUsageValue) {
				t.Fatalf("decodeUsage(%x): %v", b, err)
			}
			return
		}
		again, err := decodeUsage(appendUsage(nil, counts))
		if err != nil {
			t.Fatalf("re-encoding %v: %v", counts, err)
		}
		maps.DeleteFunc(counts, func(_ string, n uint64) bool { return n == 0 })
		if !maps.Equal(again, counts) {
			t.Fatalf("round trip of %x: %v, then %v", b, counts, again)
		}
	})
}

// FuzzUsageQuery: any from, to and interval either gives a series of 1 to
// MaxUsagePoints points from a from aligned on the interval, or an
// *InvalidError (a 400), never a panic or a series too long to build.
func FuzzUsageQuery(f *testing.F) {
	f.Add(int64(0), int64(0), "")
	f.Add(int64(1_700_000_000), int64(1_700_086_400), "hour")
	f.Add(int64(-62_135_596_800+86_400), int64(253_402_300_799), "day")
	f.Add(int64(1_700_000_000), int64(1_600_000_000), "week")
	now := time.Date(2026, 12, 7, 10, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, from, to int64, interval string) {
		q := UsageQuery{Interval: interval}
		if from != 0 {
			q.From = time.Unix(from, 0)
		}
		if to != 0 {
			q.To = time.Unix(to, 0)
		}
		length, _, err := q.normalize(now)
		if err != nil {
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("normalize(%d, %d, %q): %v is not an InvalidError", from, to, interval, err)
			}
			return
		}
		if !q.From.Before(q.To) || !q.From.Equal(q.From.Truncate(length)) {
			t.Fatalf("normalize(%d, %d, %q): from %v, to %v", from, to, interval, q.From, q.To)
		}
		if n := usagePoints(q.From, q.To, length); n < 1 || n > MaxUsagePoints {
			t.Fatalf("normalize(%d, %d, %q) accepted a series of %d points", from, to, interval, n)
		}
	})
}
