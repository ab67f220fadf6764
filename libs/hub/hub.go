// Package hub downloads model repositories from the Hugging Face Hub into a
// local cache laid out like huggingface_hub's, so that caches are shared with
// Python tools:
//
//	<CacheDir>/models--org--name/
//	    blobs/<sha256 or git blob sha1>       file contents, verified
//	    blobs/<etag>.incomplete               partial download, resumed with Range
//	    refs/<revision>                       commit the revision resolved to
//	    snapshots/<commit>/<path> -> ../../blobs/<etag>
//
// Downloads are resumable across process restarts, verified (size for every
// file, SHA-256 for LFS files, git blob SHA-1 for small files) and never
// repeated once a file is in the cache.
package hub

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"quantfleet.dev/libs/fault"
	"strings"

	"go.uber.org/zap"
)

// DefaultEndpoint is the public Hub.
const DefaultEndpoint = "https://huggingface.co"

// Errors callers branch on. Errors returned by Client wrap them.
var (
	ErrInvalidModelID = fault.New(fault.ErrBadInput, "invalid model id")
	ErrNotFound       = fault.New(fault.ErrBadInput, "not found on the Hub")
	ErrAccessDenied   = fault.New(fault.ErrBadInput, "access denied")
	ErrChecksum       = errors.New("checksum mismatch")
	ErrNoFiles        = fault.New(fault.ErrBadInput, "no files to download")
)

// Client downloads model snapshots. The zero value is ready to use: empty
// fields take their defaults from the environment like huggingface_hub does.
// A Client is safe for concurrent use.
type Client struct {
	// Endpoint is the Hub base URL; default $HF_ENDPOINT, then https://huggingface.co.
	Endpoint string
	// Token is sent as "Authorization: Bearer" to Endpoint only (never to
	// redirect targets on other hosts); default $HF_TOKEN. It never appears
	// in errors, logs or files.
	Token string
	// HTTP is the client used for requests; default http.DefaultClient.
	// Its CheckRedirect is not used: redirects are followed by Client.
	HTTP *http.Client
	// CacheDir is the hub cache root; default $HF_HUB_CACHE, then $HF_HOME/hub,
	// then $XDG_CACHE_HOME/huggingface/hub, then ~/.cache/huggingface/hub.
	CacheDir string
	// Logger receives debug and retry messages; default none.
	Logger *zap.Logger
	// Progress, if set, is called as file bytes arrive (total is -1 when
	// unknown). Calls are serialized, never concurrent.
	Progress func(file string, done, total int64)
	// Concurrency is how many files download at once; default 4.
	Concurrency int
}

func (c *Client) endpoint() string {
	e := c.Endpoint
	if e == "" {
		e = os.Getenv("HF_ENDPOINT")
	}
	if e == "" {
		e = DefaultEndpoint
	}
	return strings.TrimRight(e, "/")
}

func (c *Client) token() string {
	if c.Token != "" {
		return c.Token
	}
	return os.Getenv("HF_TOKEN")
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) logger() *zap.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return zap.NewNop()
}

func (c *Client) concurrency() int {
	if c.Concurrency > 0 {
		return c.Concurrency
	}
	return 4
}

// cacheDir resolves the cache root the way huggingface_hub's constants.py does.
func (c *Client) cacheDir() (string, error) {
	if c.CacheDir != "" {
		return c.CacheDir, nil
	}
	for _, env := range []string{"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"} {
		if d := os.Getenv(env); d != "" {
			return d, nil
		}
	}
	if h := os.Getenv("HF_HOME"); h != "" {
		return filepath.Join(h, "hub"), nil
	}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "huggingface", "hub"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("hub: no cache directory: set HF_HOME: %w", err)
	}
	return filepath.Join(home, ".cache", "huggingface", "hub"), nil
}

// RepoFolderName is the cache folder of a model repo: "models--org--name".
func RepoFolderName(repo string) string {
	return "models--" + strings.ReplaceAll(repo, "/", "--")
}

// ParseModelID splits "org/name[@revision]" and validates it like the Hub
// does: each part 1–96 characters of [A-Za-z0-9._-], not starting or ending
// with '.' or '-', no "--" or "..", not ending in ".git". The revision
// (branch, tag or commit; default "main") may contain '/' as in "refs/pr/1".
func ParseModelID(s string) (repo, revision string, err error) {
	repo, revision = s, "main"
	if i := strings.IndexByte(s, '@'); i >= 0 {
		repo, revision = s[:i], s[i+1:]
		if err := validateRevision(revision); err != nil {
			return "", "", fmt.Errorf("%w %q: %v", ErrInvalidModelID, s, err)
		}
	}
	if err := validateRepo(repo); err != nil {
		return "", "", fmt.Errorf("%w %q: %v (want org/name[@revision])", ErrInvalidModelID, s, err)
	}
	return repo, revision, nil
}

func validateRepo(repo string) error {
	org, name, ok := strings.Cut(repo, "/")
	if !ok || strings.Contains(name, "/") {
		return errors.New("need exactly one '/'")
	}
	for _, part := range []string{org, name} {
		if err := validateName(part); err != nil {
			return err
		}
	}
	if strings.HasSuffix(name, ".git") {
		return errors.New("name cannot end in .git")
	}
	return nil
}

func validateName(s string) error {
	if s == "" || len(s) > 96 {
		return fmt.Errorf("%q must be 1 to 96 characters", s)
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return fmt.Errorf("%q has character %q (allowed: A-Z a-z 0-9 . _ -)", s, s[i])
		}
	}
	if first, last := s[0], s[len(s)-1]; first == '.' || first == '-' || last == '.' || last == '-' {
		return fmt.Errorf("%q cannot start or end with '.' or '-'", s)
	}
	if strings.Contains(s, "--") || strings.Contains(s, "..") {
		return fmt.Errorf("%q cannot contain \"--\" or \"..\"", s)
	}
	return nil
}

func isNameByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == '-'
}

// validateRevision keeps revisions safe as a path under refs/.
func validateRevision(rev string) error {
	if rev == "" || len(rev) > 256 {
		return errors.New("revision must be 1 to 256 characters")
	}
	for i := 0; i < len(rev); i++ {
		if b := rev[i]; !isNameByte(b) && b != '/' {
			return fmt.Errorf("revision has character %q", b)
		}
	}
	for _, seg := range strings.Split(rev, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("revision %q has an empty, '.' or '..' path segment", rev)
		}
	}
	return nil
}

// LooksLikeModelID reports whether s names a Hub model ("org/name[@rev]")
// rather than a local path: it must parse as a model id and not exist on disk.
func LooksLikeModelID(s string) bool {
	if _, _, err := ParseModelID(s); err != nil {
		return false
	}
	_, err := os.Lstat(s)
	return errors.Is(err, os.ErrNotExist)
}

// DefaultAllow selects what a quantizer needs: safetensors weights, JSON
// configs and indexes, tokenizer files and chat templates. PyTorch pickles,
// GGUF and other formats are skipped.
func DefaultAllow(p string) bool {
	base := path.Base(p)
	switch {
	case base == "tokenizer.model":
		return true
	case strings.HasPrefix(base, "."):
		return false
	}
	switch path.Ext(base) {
	case ".safetensors", ".json", ".txt", ".jinja":
		return true
	}
	return false
}
