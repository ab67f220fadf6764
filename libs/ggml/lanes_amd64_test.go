//go:build !purego

package ggml

import (
	"testing"
	"unsafe"
)

// laneOffsets pairs the Go offsets of the lane structures with the ones kquants_amd64.s assumes.
var laneOffsets = map[string][2]uintptr{
	"qkx2.w":       {unsafe.Offsetof(qkx2Lanes{}.w), 1024},
	"qkx2.fl":      {unsafe.Offsetof(qkx2Lanes{}.fl), 2048},
	"qkx2.nums":    {unsafe.Offsetof(qkx2Lanes{}.nums), 3072},
	"qkx2.scale":   {unsafe.Offsetof(qkx2Lanes{}.scale), 3200},
	"qkx2.theMin":  {unsafe.Offsetof(qkx2Lanes{}.theMin), 3232},
	"qkx2.iscaleL": {unsafe.Offsetof(qkx2Lanes{}.iscaleL), 3264},
	"qkx2.minL":    {unsafe.Offsetof(qkx2Lanes{}.minL), 3296},
	"qkx2.degen":   {unsafe.Offsetof(qkx2Lanes{}.degen), 3328},
	"qkx2.best":    {unsafe.Offsetof(qkx2Lanes{}.best), 3360},
	"qkx2.min":     {unsafe.Offsetof(qkx2Lanes{}.min), 3392},
	"qkx2.max":     {unsafe.Offsetof(qkx2Lanes{}.max), 3424},
	"qkx2.sumW":    {unsafe.Offsetof(qkx2Lanes{}.sumW), 3456},
	"qkx2.sumX":    {unsafe.Offsetof(qkx2Lanes{}.sumX), 3488},
	"qkx2.min0":    {unsafe.Offsetof(qkx2Lanes{}.min0), 3520},
	"qkx2.size":    {unsafe.Sizeof(qkx2Lanes{}), 3552},
	"qx.w":         {unsafe.Offsetof(qxLanes{}.w), 512},
	"qx.wx":        {unsafe.Offsetof(qxLanes{}.wx), 1024},
	"qx.L":         {unsafe.Offsetof(qxLanes{}.L), 1536},
	"qx.nums":      {unsafe.Offsetof(qxLanes{}.nums), 2048},
	"qx.scale":     {unsafe.Offsetof(qxLanes{}.scale), 2128},
	"qx.iscaleL":   {unsafe.Offsetof(qxLanes{}.iscaleL), 2160},
	"qx.zero":      {unsafe.Offsetof(qxLanes{}.zero), 2192},
	"qx.size":      {unsafe.Sizeof(qxLanes{}), 2224},
}

// TestLaneLayout checks the structure offsets hard-coded in kquants_amd64.s.
func TestLaneLayout(t *testing.T) {
	for name, o := range laneOffsets {
		if o[0] != o[1] {
			t.Errorf("%s: Go offset %d, the assembly assumes %d", name, o[0], o[1])
		}
	}
}

func init() {
	if useAVX2 {
		kernelVariants = append(kernelVariants, struct {
			name string
			use  func() (restore func())
		}{"sse2", func() func() {
			useAVX2 = false
			return func() { useAVX2 = true }
		}})
	}
}
