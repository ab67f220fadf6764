// Package modelstore puts source checkpoints into object storage once: a local directory is
// uploaded content-addressed (models/<sha256 of its manifest>/…), so a second job with the same
// files skips the upload; a Hugging Face Hub model is mirrored per commit
// (models/hub/<org>--<name>/<commit>/…). A manifest object written last marks a complete copy.
package modelstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"quantfleet.dev/libs/fault"
	"slices"
	"strings"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/hub"
)

// ManifestName is the object, under a model's prefix, that lists its files; it is written after
// every file, so its presence means the copy is complete.
const ManifestName = ".quantfleet-manifest.json"

// ErrNotModelDir reports a local directory without a checkpoint's files.
var ErrNotModelDir = fault.New(fault.ErrBadInput, "not a model directory")

// File is one file of a model.
type File struct {
	Name   string `json:"name"` // slash-separated, relative to the model root
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"` // hex
	ETag   string `json:"etag,omitempty"`   // Hub blob id, for mirrored models
}

// Manifest lists a model's files in name order.
type Manifest struct {
	Source string `json:"source,omitempty"` // "local" or "hub:<repo>@<commit>"
	Files  []File `json:"files"`
}

// Hash is the SHA-256 over "name\tsize\tsha256\n" lines of the files in name order: the same files
// give the same hash wherever they live.
func (m Manifest) Hash() string {
	h := sha256.New()
	for _, f := range m.Files {
		fmt.Fprintf(h, "%s\t%d\t%s\n", f.Name, f.Size, f.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// skipExt are formats quantfleet never reads; uploading them would only cost time.
var skipExt = map[string]bool{".bin": true, ".pt": true, ".pth": true, ".gguf": true, ".h5": true,
	".msgpack": true, ".ckpt": true, ".onnx": true, ".ot": true, ".partial": true}

// Wanted reports whether a local model file is uploaded: top-level regular files (or links to
// them) except hidden ones and weight formats other than safetensors.
func Wanted(name string) bool {
	return !strings.HasPrefix(name, ".") && !skipExt[strings.ToLower(path.Ext(name))]
}

// ScanDir lists and hashes the files of a local model directory.
func ScanDir(ctx context.Context, dir string) (Manifest, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return Manifest{}, fmt.Errorf("model directory: %w", err)
	}
	var m Manifest
	m.Source = "local"
	hasConfig := false
	for _, e := range entries {
		if !Wanted(e.Name()) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return Manifest{}, err
		}
		p := filepath.Join(dir, e.Name())
		// Stat follows links: a Hugging Face cache snapshot's files are symlinks to its blobs.
		st, err := os.Stat(p)
		if err != nil {
			return Manifest{}, fmt.Errorf("%w: %s: %w", ErrNotModelDir, p, err)
		}
		if !st.Mode().IsRegular() {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return Manifest{}, err
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return Manifest{}, fmt.Errorf("hashing %s: %w", p, err)
		}
		m.Files = append(m.Files, File{Name: e.Name(), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
		hasConfig = hasConfig || e.Name() == "config.json"
	}
	if !hasConfig {
		return Manifest{}, fmt.Errorf("%w: %s has no config.json", ErrNotModelDir, dir)
	}
	slices.SortFunc(m.Files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	return m, nil
}

// LocalPrefix is where a local model with manifest hash h is stored.
func LocalPrefix(h string) string { return "models/" + h + "/" }

// HubPrefix is where commit of a Hub repo is mirrored.
func HubPrefix(repo, commit string) string {
	return "models/hub/" + strings.ReplaceAll(repo, "/", "--") + "/" + commit + "/"
}

// Progress is told about uploaded bytes.
type Progress func(file string, done, total int64)

// UploadDir stores the files of a local model directory under LocalPrefix(manifest hash) unless a
// complete copy is there already. It returns the prefix and whether anything was uploaded.
func UploadDir(ctx context.Context, store blob.Store, dir string, progress Progress) (prefix string, uploaded bool, err error) {
	m, err := ScanDir(ctx, dir)
	if err != nil {
		return "", false, err
	}
	prefix = LocalPrefix(m.Hash())
	if ok, err := Complete(ctx, store, prefix); err != nil || ok {
		return prefix, false, err
	}
	for _, f := range m.Files {
		if err := putFile(ctx, store, filepath.Join(dir, filepath.FromSlash(f.Name)), prefix+f.Name, f, progress); err != nil {
			return "", false, err
		}
	}
	if err := putManifest(ctx, store, prefix, m); err != nil {
		return "", false, err
	}
	return prefix, true, nil
}

// Complete reports whether prefix holds a complete copy (its manifest exists).
func Complete(ctx context.Context, store blob.Store, prefix string) (bool, error) {
	ok, err := store.Exists(ctx, prefix+ManifestName)
	if err != nil {
		return false, fmt.Errorf("checking %s: %w", prefix, err)
	}
	return ok, nil
}

func putFile(ctx context.Context, store blob.Store, local, key string, f File, progress Progress) error {
	fh, err := os.Open(local)
	if err != nil {
		return err
	}
	defer fh.Close()
	var r io.Reader = fh
	if progress != nil {
		r = &ProgressReader{R: fh, F: func(n int64) { progress(f.Name, n, f.Size) }}
	}
	if _, err := store.Put(ctx, key, r, f.Size, blob.PutOptions{}); err != nil {
		return fmt.Errorf("uploading %s: %w", f.Name, err)
	}
	return nil
}

func putManifest(ctx context.Context, store blob.Store, prefix string, m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	_, err = store.Put(ctx, prefix+ManifestName, strings.NewReader(string(b)), int64(len(b)), blob.PutOptions{})
	return err
}

// ProgressReader calls F with the running byte count after every Read of R.
type ProgressReader struct {
	R io.Reader
	F func(n int64)
	n int64
}

func (p *ProgressReader) Read(b []byte) (int, error) {
	n, err := p.R.Read(b)
	p.n += int64(n)
	p.F(p.n)
	return n, err
}

// MirrorHub copies modelID ("org/name[@revision]") from the Hub into the store once per commit,
// downloading through client (its cache and token). It returns the prefix and the repo id.
func MirrorHub(ctx context.Context, store blob.Store, client *hub.Client, modelID string, progress Progress) (prefix, repo string, err error) {
	snap, err := client.Resolve(ctx, modelID, nil)
	if err != nil {
		return "", "", err
	}
	prefix = HubPrefix(snap.Repo, snap.Commit)
	if ok, err := Complete(ctx, store, prefix); err != nil || ok {
		return prefix, snap.Repo, err
	}
	if err := client.Fetch(ctx, snap); err != nil {
		return "", "", err
	}
	m := Manifest{Source: "hub:" + snap.Repo + "@" + snap.Commit}
	for _, hf := range snap.Files {
		local := filepath.Join(snap.Dir, filepath.FromSlash(hf.Path))
		st, err := os.Stat(local)
		if err != nil {
			return "", "", err
		}
		f := File{Name: hf.Path, Size: st.Size(), ETag: hf.ETag}
		if err := putFile(ctx, store, local, prefix+hf.Path, f, progress); err != nil {
			return "", "", err
		}
		m.Files = append(m.Files, f)
	}
	slices.SortFunc(m.Files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	if err := putManifest(ctx, store, prefix, m); err != nil {
		return "", "", err
	}
	return prefix, snap.Repo, nil
}

// ParseS3URL splits "s3://bucket/prefix" into its bucket and prefix (no leading or trailing "/").
func ParseS3URL(s string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3:// URL", s)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	prefix = strings.Trim(prefix, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%q has no bucket", s)
	}
	if prefix != "" {
		if err := blob.ValidateKey(prefix); err != nil {
			return "", "", fmt.Errorf("%q: %w", s, err)
		}
	}
	return bucket, prefix, nil
}
