package keystore

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// Timing: the refusal of an unknown well-formed key and the acceptance of a
// known one must do the same hashing work, and no step may compare the
// plaintext with anything stored (docs/configuration.md, "Why lookups by
// hash remove the timing oracle"). Wall time is not asserted: it is noisy
// on shared machines, and the property is structural. Two tests check it:
//
//   - TestUnknownKeysAreHashedAndLookedUp (behaviour): unknown keys of the
//     configured format, including near misses of a stored key that differ
//     in one character, get InvalidKey, the outcome decided after the hash
//     lookup (never MalformedKey, decided before hashing); they have the
//     length of a known key, so SHA-256 runs over the same number of blocks;
//     and they are not cached, so a guess never changes a later answer.
//   - TestVerifyUsesThePlaintextOnlyToHash (source): in verify.go the
//     credential is used only by the emptiness check, the format checks and
//     one unconditional HashKey call, which precedes the lookup, and the
//     lookup takes a Hash, not a string.

// nearMisses returns keys of format f that differ from key in one
// character of the random part, with the checksum recomputed, so that
// they are well-formed: the guesses a timing attack would make.
func nearMisses(t *testing.T, f Format, key string) []string {
	t.Helper()
	n := len(f.Prefix)
	body := key[:n+f.Length]
	var out []string
	for _, pos := range []int{n, n + f.Length/2, n + f.Length - 1} {
		c := byte('0')
		if body[pos] == '0' {
			c = '1'
		}
		b := body[:pos] + string(c) + body[pos+1:]
		if f.Checksum {
			b += Checksum(b)
		}
		if f.Check(b) != nil {
			t.Fatalf("near miss %q is not well-formed", b)
		}
		out = append(out, b)
	}
	return out
}

func TestUnknownKeysAreHashedAndLookedUp(t *testing.T) {
	for _, f := range []Format{DefaultFormat(), {Prefix: "bme_", Length: 43, Checksum: false}} {
		t.Run(f.Prefix, func(t *testing.T) {
			s := openStoreOpts(t, Options{})
			v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
			_, known := mustCreate(t, s, f, NewKey{})
			fresh, err := f.Generate()
			if err != nil {
				t.Fatal(err)
			}
			unknown := append([]string{fresh}, nearMisses(t, f, known)...)

			// The known key passes, twice (the second from the cache).
			for range 2 {
				if res, err := v.Verify(known, Scope{}, false); err != nil || res.Outcome != OK {
					t.Fatalf("known key: %v, %v", res.Outcome.Code(), err)
				}
			}
			cached := s.cache.len()
			for _, u := range unknown {
				// Same length: SHA-256 pads to 64-byte blocks, so the
				// hashing work is a function of the length only.
				if len(u) != len(known) {
					t.Fatalf("%q has length %d, the known key %d", u, len(u), len(known))
				}
				for range 2 {
					res, err := v.Verify(u, Scope{}, false)
					if err != nil {
						t.Fatal(err)
					}
					// InvalidKey is decided by the lookup of HashKey(u):
					// the key went through the same hashing as the known
					// one. MalformedKey would mean it was refused before.
					if res.Outcome != InvalidKey {
						t.Fatalf("unknown well-formed key %q: %s, want invalid_key (decided after hashing)", u, res.Outcome.Code())
					}
				}
				if s.cache.get(HashKey(u)) != nil {
					t.Fatalf("unknown key %q was cached", u)
				}
			}
			if got := s.cache.len(); got != cached {
				t.Fatalf("unknown keys changed the cache: %d entries, was %d", got, cached)
			}
		})
	}
}

// TestVerifyUsesThePlaintextOnlyToHash reads Verify and lookup in
// verify.go: a refactor that compares the credential with stored data, or
// hashes it only on some paths, fails here with a message saying which
// property broke.
func TestVerifyUsesThePlaintextOnlyToHash(t *testing.T) {
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "verify.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var verify, lookup *ast.FuncDecl
	for _, d := range file.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Recv == nil {
			continue
		}
		switch fd.Name.Name {
		case "Verify":
			verify = fd
		case "lookup":
			lookup = fd
		}
	}
	if verify == nil || lookup == nil {
		t.Fatal("verify.go has no Verifier.Verify or Store.lookup")
	}
	params := verify.Type.Params.List
	if len(params) == 0 || len(params[0].Names) == 0 || types(params[0].Type) != "string" {
		t.Fatal("Verify's first parameter is not the credential string")
	}
	cred := params[0].Names[0].Name

	// 1. The credential is used only by these expressions.
	allowed := map[string]bool{
		cred + ` == ""`:                true, // missing
		"v.Format.Check(" + cred + ")": true, // format (no store)
		"foreignShaped(" + cred + ")":  true, // foreign shape (no store)
		"HashKey(" + cred + ")":        true, // the one hash
	}
	uses := map[string]int{}
	ast.Inspect(verify.Body, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.BinaryExpr, *ast.CallExpr:
			src := exprString(fset, x.(ast.Expr))
			if allowed[src] {
				uses[src]++
				return false // its cred is accounted for
			}
		case *ast.Ident:
			if x.Name == cred {
				t.Errorf("verify.go:%d: the credential is used outside the allowed checks: a comparison or copy of the plaintext could leak timing", fset.Position(x.Pos()).Line)
			}
		}
		return true
	})
	if n := uses["HashKey("+cred+")"]; n != 1 {
		t.Fatalf("Verify hashes the credential %d times, want exactly once", n)
	}

	// 2. HashKey runs unconditionally once the format gate is passed: its
	// statement is a top-level statement of Verify, every statement before
	// it that reads the credential is an if that only returns (the
	// missing/malformed gate), and nothing before it touches the store.
	hashAt := -1
	for i, st := range verify.Body.List {
		src := exprString(fset, st)
		if strings.Contains(src, "HashKey("+cred+")") {
			hashAt = i
			break
		}
		if strings.Contains(src, "lookup(") || strings.Contains(src, "cache") {
			t.Errorf("verify.go:%d: the store is consulted before the credential is hashed", fset.Position(st.Pos()).Line)
		}
		if strings.Contains(src, cred) {
			ifs, ok := st.(*ast.IfStmt)
			if !ok || ifs.Else != nil || len(ifs.Body.List) != 1 {
				t.Errorf("verify.go:%d: a statement before the hash reads the credential and is not a refusal gate", fset.Position(st.Pos()).Line)
				continue
			}
			if _, ok := ifs.Body.List[0].(*ast.ReturnStmt); !ok {
				t.Errorf("verify.go:%d: the gate before the hash does not just return", fset.Position(st.Pos()).Line)
			}
			if s := exprString(fset, ifs.Body.List[0]); !strings.Contains(s, "MissingKey") && !strings.Contains(s, "MalformedKey") {
				t.Errorf("verify.go:%d: the gate before the hash returns %s, not MissingKey or MalformedKey", fset.Position(st.Pos()).Line, s)
			}
		}
	}
	if hashAt < 0 {
		t.Fatal("HashKey is not called at the top level of Verify: some well-formed credentials might not be hashed")
	}
	if !strings.Contains(exprString(fset, verify.Body.List[hashAt]), "lookup(HashKey("+cred+"))") {
		t.Error("the hash is not what is looked up: want v.Store.lookup(HashKey(cred))")
	}

	// 3. The lookup takes a Hash, so it cannot compare strings.
	lp := lookup.Type.Params.List
	if len(lp) != 1 || types(lp[0].Type) != "Hash" {
		t.Errorf("Store.lookup takes %s, want a single Hash", exprString(fset, lookup.Type.Params))
	}
}

func types(e ast.Expr) string {
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// exprString prints a node as Go source, on one line.
func exprString(fset *token.FileSet, n ast.Node) string {
	var sb strings.Builder
	if err := printNode(&sb, fset, n); err != nil {
		return ""
	}
	return sb.String()
}
