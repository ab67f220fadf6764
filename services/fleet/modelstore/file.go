package modelstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"quantfleet.dev/libs/blob"
)

// DataPrefix holds uploaded data files (calibration text), content-addressed.
const DataPrefix = "data/"

// UploadFile stores a local file once under DataPrefix + its SHA-256 and returns the key.
func UploadFile(ctx context.Context, store blob.Store, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	key := DataPrefix + hex.EncodeToString(h.Sum(nil))
	if ok, err := store.Exists(ctx, key); err != nil || ok {
		return key, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	if _, err := store.Put(ctx, key, f, n, blob.PutOptions{}); err != nil {
		return "", fmt.Errorf("uploading %s: %w", path, err)
	}
	return key, nil
}
