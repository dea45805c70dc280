package redisstore

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/redis/rueidis"
)

// FuzzParseChange: an entry of the changes stream, whatever its fields
// hold, is parsed without a panic, and a change list written by
// appendChange is read back as it was written.
func FuzzParseChange(f *testing.F) {
	f.Add([]byte("k/01a2"), []byte("h/\x00\xff"), "7", []byte("\x05k/abc"))
	f.Add([]byte(""), []byte(""), "x", []byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"))
	f.Fuzz(func(t *testing.T, k1, k2 []byte, n string, raw []byte) {
		// Arbitrary fields: an error or a result, never a panic.
		_, _, _, _ = parseChange(rueidis.XRangeSlice{ID: "1-0", FieldValues: []rueidis.XRangeFieldValue{
			{Field: "n", Value: n}, {Field: "o", Value: "x"}, {Field: "k", Value: string(raw)},
		}})
		// What appendChange writes reads back.
		list := appendChange(appendChange(nil, k1), k2)
		got, origin, keys, err := parseChange(rueidis.XRangeSlice{ID: "1-0", FieldValues: []rueidis.XRangeFieldValue{
			{Field: "n", Value: "42"}, {Field: "o", Value: "me"}, {Field: "k", Value: string(list)},
		}})
		if err != nil || got != 42 || origin != "me" || len(keys) != 2 || !bytes.Equal(keys[0], k1) || !bytes.Equal(keys[1], k2) {
			t.Fatalf("round trip of %q, %q: n %d origin %q keys %q err %v", k1, k2, got, origin, keys, err)
		}
		if _, err := strconv.ParseInt(n, 10, 64); err != nil {
			if _, _, _, err := parseChange(rueidis.XRangeSlice{FieldValues: []rueidis.XRangeFieldValue{{Field: "n", Value: n}}}); err == nil {
				t.Fatalf("a change number %q parsed", n)
			}
		}
	})
}
