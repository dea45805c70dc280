package keystore

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
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
//     lookup takes a Hash, not a string. The store is read (lookupMiss)
//     only after the whole format, checksum included, was checked: the
//     checksum runs after the cache (a cached hash is a stored key's), never
//     after the store.

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
// property broke. The checker is itself checked on altered copies of
// verify.go, each of which it must refuse.
func TestVerifyUsesThePlaintextOnlyToHash(t *testing.T) {
	src, err := os.ReadFile("verify.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plaintextUseProblems(t, string(src)) {
		t.Error(p)
	}

	const lookupLine = "e, h := v.Store.lookup(HashKey(cred))"
	if !strings.Contains(string(src), lookupLine) {
		t.Fatalf("verify.go no longer has %q: update the altered copies below", lookupLine)
	}
	for name, alter := range map[string]func(string) string{
		"a string compare with the credential": func(s string) string {
			return strings.Replace(s, lookupLine, "if cred == v.Format.Prefix {\n\t\treturn Result{}, nil\n\t}\n\t"+lookupLine, 1)
		},
		"a prefix check against stored data": func(s string) string {
			return strings.Replace(s, lookupLine, "_ = strings.HasPrefix(cred, v.Store.dir)\n\t"+lookupLine, 1)
		},
		"hashing only on some paths": func(s string) string {
			return strings.Replace(s, lookupLine, "var e *entry\n\tvar h Hash\n\tif !v.AcceptForeign {\n\t\te, h = v.Store.lookup(HashKey(cred))\n\t}", 1)
		},
		"hashing twice": func(s string) string {
			return strings.Replace(s, lookupLine, "_ = HashKey(cred)\n\t"+lookupLine, 1)
		},
		"looking up something else than the hash": func(s string) string {
			return strings.Replace(s, lookupLine, "h0 := HashKey(cred)\n\te, h := v.Store.lookup(h0)", 1)
		},
		"a store read before the checksum": func(s string) string {
			return strings.Replace(s, lookupLine, lookupLine+"\n\tif e == nil {\n\t\te, _ = v.Store.lookupMiss(h, v.vouch())\n\t}", 1)
		},
		"a lookup by string": func(s string) string {
			return strings.Replace(s, "func (s *Store) lookup(h Hash)", "func (s *Store) lookup(h string)", 1)
		},
	} {
		altered := alter(string(src))
		if altered == string(src) {
			t.Fatalf("%s: the alteration did not apply", name)
		}
		problems := plaintextUseProblems(t, altered)
		if len(problems) == 0 {
			t.Errorf("the checker accepts verify.go altered with %s", name)
		}
		t.Logf("altered with %s: %q", name, problems)
	}
}

// plaintextUseProblems lists how the Verify and lookup of src break the
// rules above.
func plaintextUseProblems(t *testing.T, src string) []string {
	t.Helper()
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "verify.go", src, 0)
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
		return []string{"verify.go has no Verifier.Verify or Store.lookup"}
	}
	params := verify.Type.Params.List
	if len(params) == 0 || len(params[0].Names) == 0 || identName(params[0].Type) != "string" {
		return []string{"Verify's first parameter is not the credential string"}
	}
	cred := params[0].Names[0].Name
	var problems []string
	problem := func(n ast.Node, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("verify.go:%d: ", fset.Position(n.Pos()).Line)+fmt.Sprintf(format, args...))
	}

	// 1. The credential is used only by these expressions.
	allowed := map[string]bool{
		cred + ` == ""`:                     true, // missing
		"v.Format.CheckShape(" + cred + ")": true, // shape (no store)
		"v.Format.Check(" + cred + ")":      true, // format with checksum (no store)
		"foreignShaped(" + cred + ")":       true, // foreign shape (no store)
		"HashKey(" + cred + ")":             true, // the one hash
	}
	hashes := 0
	ast.Inspect(verify.Body, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.BinaryExpr, *ast.CallExpr:
			s := exprString(fset, x)
			if allowed[s] {
				if s == "HashKey("+cred+")" {
					hashes++
				}
				return false // its use of the credential is accounted for
			}
		case *ast.Ident:
			if x.Name == cred {
				problem(x, "the credential is used outside the allowed checks: a comparison or copy of the plaintext could leak timing")
			}
		}
		return true
	})
	if hashes != 1 {
		problem(verify, "Verify hashes the credential %d times, want exactly once", hashes)
	}

	// 2. HashKey runs unconditionally once the format gate is passed: its
	// statement is a top-level statement of Verify, every statement before
	// it that reads the credential is an if that only returns MissingKey
	// or MalformedKey, and nothing before it touches the store.
	hashAt := -1
	for i, st := range verify.Body.List {
		s := exprString(fset, st)
		if strings.Contains(s, "HashKey("+cred+")") {
			hashAt = i
			break
		}
		if strings.Contains(s, "lookup(") || strings.Contains(s, "cache") {
			problem(st, "the store is consulted before the credential is hashed")
		}
		if !strings.Contains(s, cred) {
			continue
		}
		ifs, ok := st.(*ast.IfStmt)
		if !ok || ifs.Else != nil || len(ifs.Body.List) != 1 {
			problem(st, "a statement before the hash reads the credential and is not a refusal gate")
			continue
		}
		_, isReturn := ifs.Body.List[0].(*ast.ReturnStmt)
		if rs := exprString(fset, ifs.Body.List[0]); !isReturn || (!strings.Contains(rs, "MissingKey") && !strings.Contains(rs, "MalformedKey")) {
			problem(st, "the gate before the hash does %s, not a return of MissingKey or MalformedKey", rs)
		}
	}
	switch {
	case hashAt < 0:
		problem(verify, "HashKey is not called by a top-level statement of Verify: some well-formed credentials might not be hashed")
	case !isSimple(verify.Body.List[hashAt]):
		problem(verify.Body.List[hashAt], "HashKey is called inside a conditional or loop: some well-formed credentials might not be hashed")
	case !strings.Contains(exprString(fset, verify.Body.List[hashAt]), "lookup(HashKey("+cred+"))"):
		problem(verify.Body.List[hashAt], "the hash is not what is looked up: want v.Store.lookup(HashKey(cred))")
	}

	// 3. The store is read (lookupMiss) only after a gate that checks the
	// whole format, checksum included, and returns MalformedKey.
	checked := token.NoPos
	ast.Inspect(verify.Body, func(n ast.Node) bool {
		ifs, ok := n.(*ast.IfStmt)
		if !ok || checked.IsValid() || !strings.Contains(exprString(fset, ifs.Cond), "v.Format.Check("+cred+")") {
			return true
		}
		if len(ifs.Body.List) == 1 && strings.Contains(exprString(fset, ifs.Body.List[0]), "MalformedKey") {
			checked = ifs.End()
		}
		return true
	})
	reads := 0
	ast.Inspect(verify.Body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || !strings.HasSuffix(exprString(fset, call.Fun), "lookupMiss") {
			return true
		}
		reads++
		if !checked.IsValid() || call.Pos() < checked {
			problem(call, "the store is read before the checksum was checked: a mistyped or made-up key could reach it")
		}
		return true
	})
	if reads == 0 {
		problem(verify, "Verify does not read the store through lookupMiss: the checker cannot tell that the checksum comes first")
	}

	// 4. The lookup takes a Hash, so it cannot compare strings.
	if lp := lookup.Type.Params.List; len(lp) != 1 || identName(lp[0].Type) != "Hash" {
		problem(lookup, "Store.lookup's parameters are not a single Hash")
	}
	return problems
}

// isSimple reports whether st runs all of its expressions: an assignment,
// a declaration or an expression statement, not an if, switch or loop.
func isSimple(st ast.Stmt) bool {
	switch st.(type) {
	case *ast.AssignStmt, *ast.DeclStmt, *ast.ExprStmt:
		return true
	}
	return false
}

func identName(e ast.Expr) string {
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// exprString prints a node as Go source, on one line.
func exprString(fset *token.FileSet, n ast.Node) string {
	var sb strings.Builder
	if err := printer.Fprint(&sb, fset, n); err != nil {
		return ""
	}
	return sb.String()
}
