package ggufmeta

import (
	"fmt"
	"path/filepath"
	"testing"
)

type modelIDVectors struct {
	// [model id, total params, [full name, org, basename, finetune, version, size label]]
	Components [][3]any `json:"components"`
	// [input, id_to_title(input)]
	Titles [][2]string `json:"titles"`
}

func loadModelIDVectors(t *testing.T) modelIDVectors {
	var v modelIDVectors
	readJSON(t, filepath.Join("testdata", "model_id.json"), &v)
	if len(v.Components) == 0 || len(v.Titles) == 0 {
		t.Fatal("no test vectors")
	}
	return v
}

func optString(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestModelIDComponents(t *testing.T) {
	for _, c := range loadModelIDVectors(t).Components {
		id, total := c[0].(string), int64(c[1].(float64))
		t.Run(fmt.Sprintf("%q/%d", id, total), func(t *testing.T) {
			got := modelIDComponents(id, total)
			gotList := []any{optString(got.fullName), optString(got.org), optString(got.basename),
				optString(got.finetune), optString(got.version), optString(got.sizeLabel)}
			want := c[2].([]any)
			if fmt.Sprintf("%#v", gotList) != fmt.Sprintf("%#v", want) {
				t.Errorf("get_model_id_components(%q, %d):\n got %#v\nwant %#v", id, total, gotList, want)
			}
		})
	}
}

func TestIDToTitle(t *testing.T) {
	for _, c := range loadModelIDVectors(t).Titles {
		t.Run(fmt.Sprintf("%q", c[0]), func(t *testing.T) {
			if got := idToTitle(c[0]); got != c[1] {
				t.Errorf("id_to_title(%q) = %q, want %q", c[0], got, c[1])
			}
		})
	}
}
