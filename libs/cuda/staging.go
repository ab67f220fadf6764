package cuda

import (
	"runtime"
	"sync"
	"unsafe"
)

// stagingBytes is the size of each of a device's two staging buffers.
const stagingBytes = 32 << 20

// staging moves large uploads through two page-locked host buffers: the driver copies
// pageable memory through a staging area of its own, one thread at a time, at a fraction of
// the bus's speed (an AWQ job's 4 GB of calibration activations took 0.6 s on an H100
// machine). Here every core fills one buffer while the other's copy to the device runs.
type staging struct {
	mu    sync.Mutex
	buf   [2]unsafe.Pointer // stagingBytes each, from cuMemHostAlloc; nil until the first upload
	ready bool              // allocated, or failed to and plain copies are used
}

// upload copies src to device address dst (in the device's context, the calling thread
// locked to it) and returns when the copy has finished, as cuMemcpyHtoD does.
func (s *staging) upload(dst uint64, src []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ready {
		s.ready = true
		for i := range s.buf {
			if cu.memHostAlloc(&s.buf[i], stagingBytes, 0) != 0 {
				s.buf[i] = nil
			}
		}
	}
	if s.buf[0] == nil || s.buf[1] == nil { // no page-locked memory to be had
		return cuErr("cuMemcpyHtoD", cu.memcpyHtoD(dst, unsafe.Pointer(&src[0]), uint64(len(src))))
	}
	for i, off := 0, 0; off < len(src); i, off = i+1, off+stagingBytes {
		chunk := src[off:min(off+stagingBytes, len(src))]
		b := s.buf[i%2]
		// This buffer's previous copy (chunk i−2) ended at the last turn's synchronization.
		fill(unsafe.Slice((*byte)(b), len(chunk)), chunk)
		// The previous chunk's copy, which ran while this one was filled, has ended.
		if err := cuErr("cuCtxSynchronize", cu.ctxSynchronize()); err != nil {
			return err
		}
		if err := cuErr("cuMemcpyHtoDAsync", cu.memcpyHtoDAsync(dst+uint64(off), b, uint64(len(chunk)), 0)); err != nil {
			return err
		}
	}
	return cuErr("cuCtxSynchronize", cu.ctxSynchronize())
}

// fill copies src to dst on every core (one core's memmove is a few GB/s).
func fill(dst, src []byte) {
	const part = 4 << 20
	workers := min(runtime.GOMAXPROCS(0), (len(src)+part-1)/part)
	if workers <= 1 {
		copy(dst, src)
		return
	}
	var wg sync.WaitGroup
	step := (len(src) + workers - 1) / workers
	for lo := 0; lo < len(src); lo += step {
		hi := min(lo+step, len(src))
		wg.Add(1)
		go func() {
			defer wg.Done()
			copy(dst[lo:hi], src[lo:hi])
		}()
	}
	wg.Wait()
}

// free releases the buffers (in the device's context).
func (s *staging) free() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for i, b := range s.buf {
		if b != nil {
			if err := cuErr("cuMemFreeHost", cu.memFreeHost(b)); err != nil && first == nil {
				first = err
			}
			s.buf[i] = nil
		}
	}
	return first
}
