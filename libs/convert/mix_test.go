package convert

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"quantfleet.dev/libs/ggml"
)

type schema struct {
	nEmbd, nFF, nVocab, nLayer, nHead, nHeadKV int
	sections                                   map[string]map[string]string // level → tensor → type
}

var schemaHeader = regexp.MustCompile(`n_embd=(\d+), n_ff=(\d+), n_vocab=(\d+), n_layer=(\d+), n_head=(\d+), n_head_kv=(\d+)`)

func loadSchema(t *testing.T, path string) schema {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := schema{sections: map[string]map[string]string{}}
	var cur map[string]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "#"):
			if m := schemaHeader.FindStringSubmatch(line); m != nil {
				v := make([]int, 6)
				for i := range v {
					v[i], _ = strconv.Atoi(m[i+1])
				}
				s.nEmbd, s.nFF, s.nVocab, s.nLayer, s.nHead, s.nHeadKV = v[0], v[1], v[2], v[3], v[4], v[5]
			}
		case strings.HasPrefix(line, "["):
			name := line[1:strings.IndexByte(line, ']')]
			cur = map[string]string{}
			s.sections[name] = cur
		default:
			fields := strings.Fields(line)
			cur[fields[0]] = strings.ToUpper(fields[1])
		}
	}
	if s.nLayer == 0 {
		t.Fatalf("%s: no model header", path)
	}
	return s
}

// syntheticTensors builds a dense model's GGUF tensor list with the shapes type selection looks at.
func syntheticTensors(s schema, tied, qkNorm bool) []MixInput {
	e, ff := uint64(s.nEmbd), uint64(s.nFF)
	ts := []MixInput{
		{Name: "token_embd.weight", Ne: []uint64{e, uint64(s.nVocab)}},
		{Name: "output_norm.weight", Ne: []uint64{e}},
	}
	if !tied {
		ts = append(ts, MixInput{Name: "output.weight", Ne: []uint64{e, uint64(s.nVocab)}})
	}
	for b := 0; b < s.nLayer; b++ {
		add := func(n string, ne ...uint64) {
			ts = append(ts, MixInput{Name: fmt.Sprintf("blk.%d.%s", b, n), Ne: ne})
		}
		add("attn_norm.weight", e)
		add("attn_q.weight", e, e)
		add("attn_k.weight", e, e/uint64(s.nHead)*uint64(s.nHeadKV))
		add("attn_v.weight", e, e/uint64(s.nHead)*uint64(s.nHeadKV))
		add("attn_output.weight", e, e)
		if qkNorm {
			add("attn_q_norm.weight", 128)
			add("attn_k_norm.weight", 128)
		}
		add("ffn_norm.weight", e)
		add("ffn_gate.weight", e, ff)
		add("ffn_up.weight", e, ff)
		add("ffn_down.weight", ff, e)
	}
	for i := range ts {
		ts[i].Type = ggml.BF16
		if len(ts[i].Ne) == 1 {
			ts[i].Type = ggml.F32
		}
	}
	SortTensors(ts, func(m MixInput) string { return m.Name })
	return ts
}

// syntheticMoETensors builds a mixture-of-experts model's GGUF tensor list (gpt-oss layout:
// head size 64, n_ff per expert, stacked ffn_*_exps, router, untied output).
func syntheticMoETensors(s schema, nExpert int) []MixInput {
	e, ff, x := uint64(s.nEmbd), uint64(s.nFF), uint64(nExpert)
	q, kv := uint64(64*s.nHead), uint64(64*s.nHeadKV)
	ts := []MixInput{
		{Name: "token_embd.weight", Ne: []uint64{e, 201088}},
		{Name: "output_norm.weight", Ne: []uint64{e}},
		{Name: "output.weight", Ne: []uint64{e, 201088}},
	}
	for b := 0; b < s.nLayer; b++ {
		add := func(n string, ne ...uint64) {
			ts = append(ts, MixInput{Name: fmt.Sprintf("blk.%d.%s", b, n), Ne: ne})
		}
		add("attn_norm.weight", e)
		add("attn_q.weight", e, q)
		add("attn_k.weight", e, kv)
		add("attn_v.weight", e, kv)
		add("attn_output.weight", q, e)
		add("attn_sinks.weight", uint64(s.nHead))
		add("post_attention_norm.weight", e)
		add("ffn_gate_inp.weight", e, x)
		add("ffn_gate_exps.weight", e, ff, x)
		add("ffn_up_exps.weight", e, ff, x)
		add("ffn_down_exps.weight", ff, e, x)
	}
	for i := range ts {
		ts[i].Type = ggml.BF16
		if len(ts[i].Ne) == 1 || strings.Contains(ts[i].Name, "ffn_gate_inp") {
			ts[i].Type = ggml.F32
		}
	}
	SortTensors(ts, func(m MixInput) string { return m.Name })
	return ts
}

// TestChooseTypesMatchesLlamaCppSnapshots checks the per-tensor types of every level against
// llama.cpp's own type-selection fixtures.
func TestChooseTypesMatchesLlamaCppSnapshots(t *testing.T) {
	cases := []struct {
		file, arch   string
		tied, qkNorm bool
		experts      int // > 0: a mixture of experts (row lengths not multiples of 256: fallbacks)
	}{
		{"qwen3-0.6b", "qwen3", false, true, 0},
		{"qwen3-14b", "qwen3", false, true, 0},
		{"meta-llama-3.1-70b-instruct", "llama", false, false, 0},
		{"gemma-3-4b-it", "gemma3", true, false, 0},
		{"gpt-oss-120b", "gpt-oss", false, false, 128},
	}
	for _, c := range cases {
		s := loadSchema(t, filepath.Join("testdata", "snapshots", c.file+".schema"))
		tensors := syntheticTensors(s, c.tied, c.qkNorm)
		if c.experts > 0 {
			tensors = syntheticMoETensors(s, c.experts)
		}
		for _, level := range Levels {
			want, ok := s.sections[level.Name]
			if !ok {
				t.Fatalf("%s has no section %s", c.file, level.Name)
			}
			t.Run(c.file+"/"+level.Name, func(t *testing.T) {
				types, err := ChooseTypes(level, MixModel{Arch: c.arch, BlockCount: s.nLayer, HeadCount: s.nHead, HeadCountKV: s.nHeadKV, NExpert: c.experts}, tensors)
				if err != nil {
					t.Fatal(err)
				}
				got := map[string]string{}
				for i, tt := range tensors {
					// The fixtures list quantizable tensors only (not norms, not the router).
					if allowsQuantization(tt.Name, nDims(tt.Ne)) && types[i] != level.Default {
						got[tt.Name] = types[i].String()
					}
				}
				var diffs []string
				for n, w := range want {
					if got[n] != w {
						diffs = append(diffs, fmt.Sprintf("%s: got %q want %s", n, got[n], w))
					}
				}
				for n, g := range got {
					if _, ok := want[n]; !ok {
						diffs = append(diffs, fmt.Sprintf("%s: got %s want default", n, g))
					}
				}
				sort.Strings(diffs)
				if len(diffs) > 0 {
					t.Errorf("%d differences, first: %s", len(diffs), strings.Join(diffs[:min(len(diffs), 5)], "; "))
				}
			})
		}
	}
}

func TestFallback(t *testing.T) {
	cases := []struct {
		ne0  uint64
		typ  ggml.Type
		want ggml.Type
		err  bool
	}{
		{4096, ggml.Q4_K, ggml.Q4_K, false},
		{4000, ggml.Q4_K, ggml.Q5_0, false},
		{4000, ggml.Q6_K, ggml.Q8_0, false},
		{4000, ggml.Q2_K, ggml.Q4_0, false},
		{4000, ggml.Q5_K, ggml.Q5_1, false},
		{100, ggml.Q3_K, ggml.F16, false},
		{100, ggml.Q8_0, 0, true},
	}
	for _, c := range cases {
		got, err := fallback(MixInput{Name: "x", Ne: []uint64{c.ne0, 8}}, c.typ)
		if (err != nil) != c.err || (!c.err && got != c.want) {
			t.Errorf("fallback(%d, %s) = %s, %v; want %s (err %v)", c.ne0, c.typ, got, err, c.want, c.err)
		}
	}
}

func TestPermuteRows(t *testing.T) {
	// 2 heads of 4 rows, 1 column: rows within a head go from [a0 a1 b0 b1] to [a0 b0 a1 b1].
	in := []float32{0, 1, 2, 3, 4, 5, 6, 7}
	got := permuteRows(in, 8, 1, 2)
	want := []float32{0, 2, 1, 3, 4, 6, 5, 7}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("permuteRows = %v, want %v", got, want)
		}
	}
}
