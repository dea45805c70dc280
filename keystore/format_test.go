package keystore

import (
	"strings"
	"testing"
)

// specCRC32 is CRC-32/IEEE (reflected polynomial 0xEDB88320, initial value
// and final XOR 0xFFFFFFFF), computed bit by bit: an implementation of the
// contract that shares no code with hash/crc32.
func specCRC32(b []byte) uint32 {
	crc := ^uint32(0)
	for _, c := range b {
		crc ^= uint32(c)
		for range 8 {
			if crc&1 == 1 {
				crc = crc>>1 ^ 0xEDB88320
			} else {
				crc >>= 1
			}
		}
	}
	return ^crc
}

// specBase62 writes v in base62 with the digits 0-9A-Za-z (value 0 is '0',
// 61 is 'z'), most significant digit first, left-padded with '0' to 6.
func specBase62(v uint32) string {
	digit := func(d uint32) byte {
		switch {
		case d < 10:
			return byte('0' + d)
		case d < 36:
			return byte('A' + d - 10)
		default:
			return byte('a' + d - 36)
		}
	}
	var out []byte
	for n := uint64(v); n > 0; n /= 62 {
		out = append([]byte{digit(uint32(n % 62))}, out...)
	}
	for len(out) < ChecksumLength {
		out = append([]byte{'0'}, out...)
	}
	return string(out)
}

// specChecksum is the contract's checksum of a key body.
func specChecksum(body string) string { return specBase62(specCRC32([]byte(body))) }

func isSpecBase62(c byte) bool {
	return ('0' <= c && c <= '9') || ('A' <= c && c <= 'Z') || ('a' <= c && c <= 'z')
}

func TestSpecHelpers(t *testing.T) {
	// The reference helpers are themselves checked against published
	// values: the CRC-32/IEEE check value of "123456789" is 0xCBF43926.
	if got := specCRC32([]byte("123456789")); got != 0xCBF43926 {
		t.Fatalf("specCRC32(123456789) = %#x, want 0xcbf43926", got)
	}
	if got := specCRC32(nil); got != 0 {
		t.Fatalf("specCRC32(empty) = %#x, want 0", got)
	}
	for i, tc := range []struct {
		v    uint32
		want string
	}{
		{0, "000000"},
		{1, "000001"},
		{9, "000009"},
		{10, "00000A"},
		{35, "00000Z"},
		{36, "00000a"},
		{61, "00000z"},
		{62, "000010"},
		{62*62 - 1, "0000zz"},
		{916132832, "100000"}, // 62^5
		{0xFFFFFFFF, "4gfFC3"},
	} {
		if got := specBase62(tc.v); got != tc.want {
			t.Errorf("test %d: specBase62(%d) = %q, want %q", i, tc.v, got, tc.want)
		}
	}
}

func TestPutChecksum(t *testing.T) {
	// 4294967295 = 4*62^5 + 42*62^4 + 41*62^3 + 15*62^2 + 12*62 + 3,
	// and the digits 4, 42, 41, 15, 12, 3 are 4, g, f, F, C, 3.
	if 4*916132832+42*14776336+41*238328+15*3844+12*62+3 != 4294967295 {
		t.Fatal("arithmetic of the 0xFFFFFFFF vector is wrong")
	}
	for i, tc := range []struct {
		v    uint32
		want string
	}{
		{0, "000000"},
		{1, "000001"},
		{61, "00000z"},
		{62, "000010"},
		{63, "000011"},
		{3843, "0000zz"},
		{3844, "000100"},
		{916132831, "0zzzzz"},
		{916132832, "100000"},
		{0xCBF43926, "3jZRME"},
		{0xFFFFFFFF, "4gfFC3"},
	} {
		var out [ChecksumLength]byte
		putChecksum(&out, tc.v)
		if string(out[:]) != tc.want {
			t.Errorf("test %d: putChecksum(%d) = %q, want %q", i, tc.v, out, tc.want)
		}
		if got := specBase62(tc.v); got != tc.want {
			t.Errorf("test %d: specBase62(%d) = %q, want %q", i, tc.v, got, tc.want)
		}
	}
}

func TestChecksumKnownVectors(t *testing.T) {
	for i, tc := range []struct {
		body string
		want string
	}{
		// CRC32 of the empty string is 0: all padding.
		{"", "000000"},
		// The CRC-32/IEEE check value 0xCBF43926.
		{"123456789", "3jZRME"},
		// CRC 0x838799f8.
		{"ak_0000000000000000000000000000000000000000000", "2PL60u"},
		// CRC 0x1c3cc80b < 62^5: the leading digit is padding.
		{"ak_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ", "0W3mp9"},
	} {
		if got := Checksum(tc.body); got != tc.want {
			t.Errorf("test %d: Checksum(%q) = %q, want %q", i, tc.body, got, tc.want)
		}
		if got := specChecksum(tc.body); got != tc.want {
			t.Errorf("test %d: specChecksum(%q) = %q, want %q", i, tc.body, got, tc.want)
		}
	}
}

func TestChecksumMatchesSpec(t *testing.T) {
	for i, f := range []Format{
		DefaultFormat(),
		{Prefix: "bme_", Length: 43, Checksum: true},
		{Prefix: "x", Length: MinLength, Checksum: true},
		{Prefix: "p123456789abcdef", Length: MaxLength, Checksum: true},
	} {
		for range 200 {
			key, err := f.Generate()
			if err != nil {
				t.Fatal(err)
			}
			body := key[:len(key)-ChecksumLength]
			if got, want := key[len(body):], specChecksum(body); got != want {
				t.Fatalf("test %d: key %q ends in %q, spec checksum is %q", i, key, got, want)
			}
			if got := Checksum(body); got != key[len(body):] {
				t.Fatalf("test %d: Checksum(%q) = %q, key ends in %q", i, body, got, key[len(body):])
			}
		}
	}
}

func TestGenerate(t *testing.T) {
	for i, tc := range []struct {
		format Format
		keyLen int
	}{
		{DefaultFormat(), 3 + 43 + 6},
		{Format{Prefix: "ak_", Length: 43, Checksum: true}, 52},
		{Format{Prefix: "bme_", Length: 43, Checksum: false}, 47},
		{Format{Prefix: "bme_", Length: 43, Checksum: true}, 53},
		{Format{Prefix: "k", Length: 22, Checksum: true}, 29},
		{Format{Prefix: "k", Length: 22, Checksum: false}, 23},
		{Format{Prefix: "ak_", Length: 128, Checksum: true}, 137},
		{Format{Prefix: "ak_", Length: 128, Checksum: false}, 131},
		{Format{Prefix: "abcdefghij_12345", Length: 43, Checksum: true}, 65},
		{Format{Prefix: "ABCDEFGHIJKLMNOP", Length: 22, Checksum: false}, 38},
	} {
		if err := tc.format.Validate(); err != nil {
			t.Fatalf("test %d: %v", i, err)
		}
		if got := tc.format.KeyLen(); got != tc.keyLen {
			t.Errorf("test %d: KeyLen() = %d, want %d", i, got, tc.keyLen)
		}
		seen := make(map[string]bool)
		for range 50 {
			key, err := tc.format.Generate()
			if err != nil {
				t.Fatalf("test %d: %v", i, err)
			}
			if len(key) != tc.keyLen {
				t.Fatalf("test %d: len(%q) = %d, want %d", i, key, len(key), tc.keyLen)
			}
			if !strings.HasPrefix(key, tc.format.Prefix) {
				t.Fatalf("test %d: %q lacks prefix %q", i, key, tc.format.Prefix)
			}
			for j := len(tc.format.Prefix); j < len(key); j++ {
				if !isSpecBase62(key[j]) {
					t.Fatalf("test %d: %q has %q at %d", i, key, key[j], j)
				}
			}
			if tc.format.Checksum {
				body := key[:len(key)-ChecksumLength]
				if key[len(body):] != specChecksum(body) {
					t.Fatalf("test %d: %q: bad checksum", i, key)
				}
			}
			if err := tc.format.Check(key); err != nil {
				t.Fatalf("test %d: Check(%q) = %v", i, key, err)
			}
			if seen[key] {
				t.Fatalf("test %d: %q generated twice", i, key)
			}
			seen[key] = true
		}
	}
}

// TestGenerateUniform is a loose sanity check of the alphabet's uniformity:
// 2000 keys of 43 characters give 86,000 samples, about 1387 per character
// with a standard deviation near 37. The bounds (±15%, about 5.6 standard
// deviations) make a false failure a one-in-a-million event, yet catch a
// modulo bias such as b%62 over all 256 byte values (8 characters would
// come 21% above the mean) or a missing character.
func TestGenerateUniform(t *testing.T) {
	f := Format{Prefix: "ak_", Length: 43, Checksum: false}
	const n = 2000
	var counts [256]int
	for range n {
		key, err := f.Generate()
		if err != nil {
			t.Fatal(err)
		}
		for j := len(f.Prefix); j < len(key); j++ {
			counts[key[j]]++
		}
	}
	expected := float64(n*f.Length) / 62
	for c := range 256 {
		if !isSpecBase62(byte(c)) {
			if counts[c] != 0 {
				t.Errorf("character %q appeared %d times", byte(c), counts[c])
			}
			continue
		}
		got := float64(counts[c])
		if got < 0.85*expected || got > 1.15*expected {
			t.Errorf("character %q appeared %d times, expected about %.0f", byte(c), counts[c], expected)
		}
	}
}

func TestCheckAccepts(t *testing.T) {
	// Keys built by hand from the spec, not by Generate.
	body := "ak_" + strings.Repeat("0", 43)
	for i, tc := range []struct {
		format Format
		key    string
	}{
		{DefaultFormat(), body + "2PL60u"},
		{DefaultFormat(), "ak_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ0W3mp9"},
		{DefaultFormat(), "ak_" + strings.Repeat("z", 43) + specChecksum("ak_"+strings.Repeat("z", 43))},
		{Format{Prefix: "bme_", Length: 43}, "bme_" + strings.Repeat("Z", 43)},
		{Format{Prefix: "bme_", Length: 43}, "bme_xk7a" + strings.Repeat("Q2w9Z", 7) + "p9mz"},
		{Format{Prefix: "x", Length: 22, Checksum: true}, "x" + strings.Repeat("9", 22) + specChecksum("x"+strings.Repeat("9", 22))},
	} {
		if err := tc.format.Check(tc.key); err != nil {
			t.Errorf("test %d: Check(%q) = %v, want nil", i, tc.key, err)
		}
	}
}

func TestCheckRefuses(t *testing.T) {
	def := DefaultFormat()
	good, err := def.Generate()
	if err != nil {
		t.Fatal(err)
	}
	plain := Format{Prefix: "bme_", Length: 43}
	goodPlain, err := plain.Generate()
	if err != nil {
		t.Fatal(err)
	}
	// at replaces the byte at i (counted from the end if negative) by s.
	at := func(key string, i int, s string) string {
		if i < 0 {
			i += len(key)
		}
		return key[:i] + s + key[i+1:]
	}
	// flip returns a different base62 character than c.
	flip := func(c byte) string {
		if c == 'a' {
			return "b"
		}
		return "a"
	}
	r := len(def.Prefix) // first random character
	for i, tc := range []struct {
		name   string
		format Format
		key    string
	}{
		{"empty", def, ""},
		{"prefix only", def, "ak_"},
		{"wrong prefix", def, "bk_" + good[3:]},
		{"prefix case", def, "AK_" + good[3:]},
		{"prefix missing its underscore", def, "ak" + good[3:] + "x"},
		{"other format's prefix", def, "bme" + good[3:]},
		{"one short", def, good[:len(good)-1]},
		{"one long", def, good + "0"},
		{"one long at the front", def, "ak_0" + good[3:]},
		{"space", def, at(good, r+5, " ")},
		{"leading space", def, " " + good[1:]},
		{"trailing space", def, good[:len(good)-1] + " "},
		{"dash", def, at(good, r+5, "-")},
		{"plus", def, at(good, r+5, "+")},
		{"slash", def, at(good, r+5, "/")},
		{"underscore", def, at(good, r+5, "_")},
		{"equals", def, at(good, r+5, "=")},
		{"dot", def, at(good, r+5, ".")},
		{"NUL", def, at(good, r+5, "\x00")},
		{"tab", def, at(good, r+5, "\t")},
		{"DEL", def, at(good, r+5, "\x7f")},
		{"high byte", def, at(good, r+5, "\xff")},
		{"non-ASCII UTF-8 same length", def, good[:r+5] + "é" + good[r+7:]},
		{"non-ASCII UTF-8 longer", def, at(good, r+5, "é")},
		{"non-ASCII in checksum", def, good[:len(good)-2] + "é"},
		{"changed first random char", def, at(good, r, flip(good[r]))},
		{"changed middle random char", def, at(good, r+20, flip(good[r+20]))},
		{"changed last random char", def, at(good, -ChecksumLength-1, flip(good[len(good)-ChecksumLength-1]))},
		{"changed first checksum char", def, at(good, -ChecksumLength, flip(good[len(good)-ChecksumLength]))},
		{"changed last checksum char", def, at(good, -1, flip(good[len(good)-1]))},
		{"checksum case", def, good[:len(good)-ChecksumLength] + strings.ToUpper(good[len(good)-ChecksumLength:]) + ""},
		{"swapped halves", def, good[:r] + good[r+1:len(good)-ChecksumLength] + good[r:r+1] + good[len(good)-ChecksumLength:]},
		{"checksum off: key with checksum", plain, goodPlain + "000000"},
		{"checksum off: one short", plain, goodPlain[:len(goodPlain)-1]},
		{"checksum off: one long", plain, goodPlain + "a"},
		{"checksum off: dash", plain, at(goodPlain, 10, "-")},
		{"checksum off: wrong prefix", plain, "bmx_" + goodPlain[4:]},
		{"checksum on: key without checksum", def, "ak_" + goodPlain[4:] + "abcde"},
	} {
		if tc.name == "checksum case" && strings.ToUpper(good[len(good)-ChecksumLength:]) == good[len(good)-ChecksumLength:] {
			continue // nothing to change
		}
		if tc.name == "swapped halves" && good[r] == good[r+1] {
			continue
		}
		if err := tc.format.Check(tc.key); err != ErrMalformed {
			t.Errorf("test %d (%s): Check(%q) = %v, want ErrMalformed", i, tc.name, tc.key, err)
		}
	}
}

// TestCheckEveryByte substitutes every byte value at every position of a
// key: only the original byte may pass.
func TestCheckEveryByte(t *testing.T) {
	for _, f := range []Format{DefaultFormat(), {Prefix: "bme_", Length: 43}} {
		key, err := f.Generate()
		if err != nil {
			t.Fatal(err)
		}
		b := []byte(key)
		for i := range b {
			orig := b[i]
			for c := range 256 {
				b[i] = byte(c)
				err := f.Check(string(b))
				// With a checksum, every single-byte change is caught
				// (CRC32 detects every burst of up to 32 bits). Without,
				// only a change to the prefix or out of the alphabet is.
				wantOK := byte(c) == orig ||
					(!f.Checksum && i >= len(f.Prefix) && isSpecBase62(byte(c)))
				if (err == nil) != wantOK {
					t.Fatalf("%q (byte %d: %q -> %q): Check = %v, want ok=%v", b, i, orig, byte(c), err, wantOK)
				}
			}
			b[i] = orig
		}
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	f := DefaultFormat()
	good, err := f.Generate()
	if err != nil {
		t.Fatal(err)
	}
	bad := good[:len(good)-1] + "!"
	badSum := good[:len(good)-1] + "a"
	if good[len(good)-1] == 'a' {
		badSum = good[:len(good)-1] + "b"
	}
	for i, key := range []string{good, bad, badSum, "", "ak_short"} {
		if n := testing.AllocsPerRun(200, func() { _ = f.Check(key) }); n != 0 {
			t.Errorf("test %d: Check(%q) allocates %v times", i, key, n)
		}
	}
}

func TestValidate(t *testing.T) {
	for i, tc := range []struct {
		format Format
		ok     bool
	}{
		{DefaultFormat(), true},
		{Format{Prefix: "bme_", Length: 43}, true},
		{Format{Prefix: "a", Length: 22}, true},
		{Format{Prefix: "A_9", Length: 128}, true},
		{Format{Prefix: "_", Length: 43}, true},
		{Format{Prefix: "abcdefghijklmnop", Length: 43}, true}, // 16
		{Format{Prefix: "", Length: 43}, false},
		{Format{Prefix: "abcdefghijklmnopq", Length: 43}, false}, // 17
		{Format{Prefix: "ak-", Length: 43}, false},
		{Format{Prefix: "ak ", Length: 43}, false},
		{Format{Prefix: "ak.", Length: 43}, false},
		{Format{Prefix: "ak/", Length: 43}, false},
		{Format{Prefix: "ak+", Length: 43}, false},
		{Format{Prefix: "ák", Length: 43}, false},
		{Format{Prefix: "ak\x00", Length: 43}, false},
		{Format{Prefix: "ak_", Length: 21}, false},
		{Format{Prefix: "ak_", Length: 129}, false},
		{Format{Prefix: "ak_", Length: 0}, false},
		{Format{Prefix: "ak_", Length: -1}, false},
	} {
		err := tc.format.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("test %d: Validate(%+v) = %v, want ok=%v", i, tc.format, err, tc.ok)
		}
	}
}

func TestHint(t *testing.T) {
	for i, tc := range []struct {
		key, prefix, want string
	}{
		{"bme_xk7aQ2w9ZmR4tY8uI1oP3aS5dF7gH9jK2lZ4xC6vBp9mz", "bme_", "bme_xk7a…p9mz"},
		{"ak_ABCDefghijklmnopqrstuvwxyz0123456789ABCD4gfFC3", "ak_", "ak_ABCD…fFC3"},
		// 22 characters after the prefix (the shortest key format):
		// both ends.
		{"ak_0123456789abcdefghijkl", "ak_", "ak_0123…ijkl"},
		// 21 (only a foreign key): the end only.
		{"ak_0123456789abcdefghijk", "ak_", "…hijk"},
		{"ak_0123456789abcdef", "ak_", "…cdef"},
		{"ak_abcd", "ak_", "…abcd"},
		{"abcde", "ak_", "…bcde"},
		{"abcd", "ak_", "…"},
		{"ab", "ak_", "…"},
		{"", "ak_", "…"},
		{"ak_", "ak_", "…"},
		// A key without the prefix (a foreign key) shows its own start.
		{"legacy-0123456789abcdef", "ak_", "lega…cdef"},
	} {
		if got := Hint(tc.key, tc.prefix); got != tc.want {
			t.Errorf("test %d: Hint(%q, %q) = %q, want %q", i, tc.key, tc.prefix, got, tc.want)
		}
	}
	// Generated keys of every format give the documented shape.
	for i, f := range []Format{DefaultFormat(), {Prefix: "bme_", Length: 43}, {Prefix: "k", Length: 22, Checksum: true}} {
		key, err := f.Generate()
		if err != nil {
			t.Fatal(err)
		}
		want := f.Prefix + key[len(f.Prefix):len(f.Prefix)+4] + "…" + key[len(key)-4:]
		if got := Hint(key, f.Prefix); got != want {
			t.Errorf("format %d: Hint(%q) = %q, want %q", i, key, got, want)
		}
	}
}
