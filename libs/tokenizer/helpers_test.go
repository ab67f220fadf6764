package tokenizer

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"quantfleet.dev/libs/sharedtest"
)

// evalDocs splits eval.txt like the reference harness: on "\n\f\n", Python str.strip(), drop empty.
func evalDocs(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sharedtest.Dir(t), "data", "eval.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range strings.Split(string(b), "\n\f\n") {
		if d = strings.TrimFunc(d, pyIsSpace); d != "" {
			out = append(out, d)
		}
	}
	return out
}

// pyIsSpace is Python's str.isspace for one character.
func pyIsSpace(r rune) bool {
	switch {
	case r >= 0x09 && r <= 0x0D, r >= 0x1C && r <= 0x20, r == 0x85, r == 0xA0, r == 0x1680,
		r >= 0x2000 && r <= 0x200A, r == 0x2028, r == 0x2029, r == 0x202F, r == 0x205F, r == 0x3000:
		return true
	}
	return false
}

func readGzipJSON(t testing.TB, path string, v any) {
	t.Helper()
	if err := json.Unmarshal(readGzip(t, path), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// readGzip returns the uncompressed contents of a .gz file.
func readGzip(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(g)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// untarCases unpacks testdata/cases.tar.gz into a temporary directory.
func untarCases(t testing.TB) string {
	t.Helper()
	dst := t.TempDir()
	f, err := os.Open(filepath.Join("testdata", "cases.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(g)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dst+string(filepath.Separator)) {
			t.Fatalf("bad tar entry %q", h.Name)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// pyJSONDumps reproduces Python's json.dumps(value, ensure_ascii=False) for the value types that
// GGUF arrays decode to (lists of str, float, int), as gguf_dump.py hashes them.
func pyJSONDumps(v any) string {
	var b strings.Builder
	writeList := func(n int, item func(i int)) {
		b.WriteByte('[')
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			item(i)
		}
		b.WriteByte(']')
	}
	switch x := v.(type) {
	case []string:
		writeList(len(x), func(i int) { b.WriteString(pyJSONString(x[i])) })
	case []float32:
		writeList(len(x), func(i int) { b.WriteString(pyFloatRepr(float64(x[i]))) })
	case []int32:
		writeList(len(x), func(i int) { b.WriteString(strconv.Itoa(int(x[i]))) })
	default:
		panic(fmt.Sprintf("pyJSONDumps: unsupported %T", v))
	}
	return b.String()
}

// pyJSONString is a JSON string as Python writes it with ensure_ascii=False; the dump tool decoded
// GGUF strings with errors="replace", which lossyUTF8 matches.
func pyJSONString(s string) string {
	if !utf8.ValidString(s) {
		s = lossyUTF8([]byte(s))
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if r < 0x20 {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// pyFloatRepr is Python's repr(float) as json.dumps writes it.
func pyFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case f == 0:
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // shortest round-trip digits: "-d.ddde±XX"
	sign := ""
	if e[0] == '-' {
		sign, e = "-", e[1:]
	}
	mant, expStr, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expStr)
	digits := strings.Replace(mant, ".", "", 1)
	if exp < -4 || exp >= 16 {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		es := fmt.Sprintf("%+03d", exp)
		return sign + m + "e" + es
	}
	var s string
	switch {
	case exp < 0:
		s = "0." + strings.Repeat("0", -exp-1) + digits
	case exp+1 >= len(digits):
		s = digits + strings.Repeat("0", exp+1-len(digits)) + ".0"
	default:
		s = digits[:exp+1] + "." + digits[exp+1:]
	}
	return sign + s
}
