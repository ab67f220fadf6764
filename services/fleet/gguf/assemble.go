package gguf

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"

	"quantfleet.dev/libs/blob"
	libgguf "quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/services/fleet"
)

// ErrInvalidOutput reports an assembled file that failed validation.
var ErrInvalidOutput = quantize.ErrInvalidOutput

// ErrShard reports a missing shard or one of the wrong size.
var ErrShard = fleet.ErrShard

// Assemble writes header ‖ shards (in task order) to dst with one Compose: shards of 5 MiB or more
// are copied server-side, smaller ones are merged in memory. shardKey maps a task id to its
// shard's key. Every shard must exist with its task's size.
func Assemble(ctx context.Context, store blob.Store, p *Plan, headerKey string, shardKey func(task string) string, dst string) (blob.ObjectInfo, error) {
	if err := p.Check(); err != nil {
		return blob.ObjectInfo{}, err
	}
	hi, err := store.Stat(ctx, headerKey)
	if err != nil {
		return blob.ObjectInfo{}, fmt.Errorf("header: %w", err)
	}
	if hi.Size != p.HeaderSize {
		return blob.ObjectInfo{}, fmt.Errorf("%w: header %s has %d bytes, plan says %d", ErrShard, headerKey, hi.Size, p.HeaderSize)
	}
	parts := []blob.Part{blob.ObjectPart(headerKey)}
	for _, t := range p.Tasks {
		k := shardKey(t.ID)
		oi, err := store.Stat(ctx, k)
		if err != nil {
			return blob.ObjectInfo{}, fmt.Errorf("%w: task %s (%s): %w", ErrShard, t.ID, t.Label, err)
		}
		if uint64(oi.Size) != t.Size {
			return blob.ObjectInfo{}, fmt.Errorf("%w: %s has %d bytes, task %s needs %d", ErrShard, k, oi.Size, t.ID, t.Size)
		}
		parts = append(parts, blob.ObjectPart(k))
	}
	oi, err := store.Compose(ctx, dst, parts)
	if err != nil {
		return blob.ObjectInfo{}, err
	}
	if oi.Size != p.FileSize() {
		return oi, fmt.Errorf("%w: %s has %d bytes, want %d", ErrInvalidOutput, dst, oi.Size, p.FileSize())
	}
	return oi, nil
}

// Validate reads the assembled file back from the store, as quantize.ValidateGGUF does with a local
// file: the header must parse and list the plan's tensors (name, type, dims, offset) in order, every
// tensor must pass the row checks and dequantize without NaN or Inf. When sums (task id → hex
// SHA-256 of its shard) is given, each task's region must match. The file is read once, in order;
// Validate returns its SHA-256 (hex). tick, if not nil, is called after each tensor.
func Validate(ctx context.Context, store blob.Store, p *Plan, key string, sums map[string]string, tick func(done int)) (string, error) {
	r, err := store.Open(ctx, key)
	if err != nil {
		return "", err
	}
	defer r.Close()
	if r.Size() != p.FileSize() {
		return "", fmt.Errorf("%w: %s has %d bytes, want %d", ErrInvalidOutput, key, r.Size(), p.FileSize())
	}
	f, err := libgguf.Read(r, r.Size())
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidOutput, err)
	}
	if f.DataOffset != p.HeaderSize {
		return "", fmt.Errorf("%w: data section at %d, want %d", ErrInvalidOutput, f.DataOffset, p.HeaderSize)
	}
	if err := quantize.CheckHeader(&f.Header); err != nil {
		return "", err
	}
	if len(f.Header.Tensors) != len(p.Tensors) {
		return "", fmt.Errorf("%w: %d tensors, want %d", ErrInvalidOutput, len(f.Header.Tensors), len(p.Tensors))
	}
	for i, t := range f.Header.Tensors {
		w := p.Tensors[i]
		if t.Name != w.Name || t.Type != w.Type || t.Offset != w.Offset || !slices.Equal(t.Dims, w.Ne) {
			return "", fmt.Errorf("%w: tensor %d is %s %s %v @%d, want %s %s %v @%d", ErrInvalidOutput,
				i, t.Name, t.Type, t.Dims, t.Offset, w.Name, w.Type, w.Ne, w.Offset)
		}
	}

	rc, _, err := store.Get(ctx, key)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	file := sha256.New()
	in := bufio.NewReaderSize(io.TeeReader(rc, file), 1<<20)
	if _, err := io.CopyN(io.Discard, in, p.HeaderSize); err != nil {
		return "", fmt.Errorf("reading %s: %w", key, err)
	}
	done := 0
	for _, t := range p.Tasks {
		buf := make([]byte, t.Size)
		if _, err := io.ReadFull(in, buf); err != nil {
			return "", fmt.Errorf("reading %s: %w", key, err)
		}
		if want, ok := sums[t.ID]; ok {
			got := sha256.Sum256(buf)
			if hex.EncodeToString(got[:]) != want {
				return "", fmt.Errorf("%w: task %s (%s) bytes have SHA-256 %x, the shard had %s", ErrInvalidOutput, t.ID, t.Label, got, want)
			}
		}
		for _, tp := range p.Tensors[t.First : t.First+t.Count] {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			data := buf[tp.Offset-t.Offset : tp.Offset-t.Offset+tp.Size]
			if err := quantize.CheckTensorData(tp.Name, tp.Type, data); err != nil {
				return "", err
			}
			done++
			if tick != nil {
				tick(done)
			}
		}
	}
	if _, err := in.Peek(1); err != io.EOF {
		return "", fmt.Errorf("%w: %s is longer than the plan", ErrInvalidOutput, key)
	}
	return hex.EncodeToString(file.Sum(nil)), nil
}
