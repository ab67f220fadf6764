package sentencepiece

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestZZ(t *testing.T) {
	m, _ := Load("/work/shared/models/tiny-llama/tokenizer.model")
	p, err := NewProcessor(m)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open("../tokenizer/testdata/eval_ids.json.gz")
	g, _ := gzip.NewReader(f)
	var r struct {
		Ids     [][]int  `json:"ids"`
		Extra   []string `json:"extra"`
		SpExtra [][]int  `json:"sp_extra"`
		SpDec   []string `json:"sp_extra_decode"`
	}
	json.NewDecoder(g).Decode(&r)
	b, _ := os.ReadFile("/work/shared/data/eval.txt")
	var docs []string
	for _, d := range strings.Split(string(b), "\n\f\n") {
		d = strings.TrimSpace(d)
		if d != "" {
			docs = append(docs, d)
		}
	}
	fmt.Println(len(docs))
	bad := 0
	t0 := time.Now()
	n := 0
	for i, d := range docs {
		got := p.Encode(d)
		n += len(got)
		if !reflect.DeepEqual(got, r.Ids[i]) {
			bad++
			if bad < 3 {
				for j := range got {
					if j >= len(r.Ids[i]) || got[j] != r.Ids[i][j] {
						fmt.Println(i, j, got[max(0, j-3):min(len(got), j+5)], r.Ids[i][max(0, j-3):min(len(r.Ids[i]), j+5)])
						break
					}
				}
			}
		}
	}
	fmt.Println("bad", bad, "tokens", n, time.Since(t0))
	for i, e := range r.Extra {
		got := p.Encode(e)
		if !reflect.DeepEqual(got, r.SpExtra[i]) && !(len(got) == 0 && len(r.SpExtra[i]) == 0) {
			fmt.Printf("extra %q %v %v\n", e, got, r.SpExtra[i])
		}
		if d := p.Decode(got); d != r.SpDec[i] {
			fmt.Printf("dec %q %q\n", d, r.SpDec[i])
		}
	}
}
