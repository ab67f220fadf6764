package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

const (
	userAgent = "quantfleet-hub/1"
	// maxFailures is how many attempts in a row may fail without receiving
	// a byte before a file download gives up (huggingface_hub uses 5 too).
	maxFailures  = 5
	maxRedirects = 10
)

// Tunables, variables so tests can shorten them.
var (
	stallTimeout = 2 * time.Minute        // no body bytes for this long aborts the attempt
	retryBackoff = 500 * time.Millisecond // first wait after an attempt that received nothing
)

// File is one file of a Snapshot.
type File struct {
	Path   string // repository-relative, '/'-separated
	Size   int64  // bytes; -1 when the Hub did not say
	ETag   string // blob id: LFS SHA-256 or git blob SHA-1; "" when the Hub did not say
	LFS    bool
	Cached bool // already complete in the local snapshot when resolved
}

// Snapshot is a model revision resolved to a commit, with the files selected
// for download.
type Snapshot struct {
	Repo     string
	Revision string // as asked: branch, tag or commit
	Commit   string // full commit sha the revision resolved to
	Dir      string // local snapshot directory, complete after Fetch
	Files    []File
	Skipped  []string // repository files the filter rejected
}

// Size is the total size of the snapshot's files whose size is known.
func (s *Snapshot) Size() int64 {
	var n int64
	for _, f := range s.Files {
		if f.Size > 0 {
			n += f.Size
		}
	}
	return n
}

// Download fetches the files of modelID ("org/name[@revision]") that allow
// accepts (nil: DefaultAllow, with weights pruned as Resolve describes) into
// the cache and returns the local snapshot directory. Files already in the
// cache are not requested again.
func (c *Client) Download(ctx context.Context, modelID string, allow func(path string) bool) (dir string, err error) {
	s, err := c.Resolve(ctx, modelID, allow)
	if err != nil {
		return "", err
	}
	if err := c.Fetch(ctx, s); err != nil {
		return "", err
	}
	return s.Dir, nil
}

// modelInfo is the part of GET /api/models/{repo}/revision/{rev}?blobs=true
// that we use.
type modelInfo struct {
	SHA      string `json:"sha"`
	Siblings []struct {
		RFilename string `json:"rfilename"`
		BlobID    string `json:"blobId"`
		Size      *int64 `json:"size"`
		LFS       *struct {
			SHA256 string `json:"sha256"`
			Size   int64  `json:"size"`
		} `json:"lfs"`
	} `json:"siblings"`
}

// Resolve asks the Hub which commit modelID's revision points to and which
// of its files allow accepts.
//
// With allow nil, DefaultAllow selects the files and the weights are pruned
// to those a loader reads: when model.safetensors.index.json exists (it is
// fetched into the snapshot to find out) only the shards its weight_map
// names, otherwise only top-level *.safetensors. This skips duplicates such
// as Mistral's consolidated.safetensors. Resolve downloads nothing else.
func (c *Client) Resolve(ctx context.Context, modelID string, allow func(path string) bool) (*Snapshot, error) {
	repo, rev, err := ParseModelID(modelID)
	if err != nil {
		return nil, err
	}
	filter := allow
	if filter == nil {
		filter = DefaultAllow
	}
	root, err := c.cacheDir()
	if err != nil {
		return nil, err
	}
	info, err := c.modelInfo(ctx, repo, rev)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{
		Repo:     repo,
		Revision: rev,
		Commit:   info.SHA,
		Dir:      filepath.Join(root, RepoFolderName(repo), "snapshots", info.SHA),
	}
	for _, sib := range info.Siblings {
		p := sib.RFilename
		if !validRepoPath(p) {
			return nil, fmt.Errorf("hub: resolve %s@%s: unsafe file name %q in model info", repo, rev, p)
		}
		if !filter(p) {
			s.Skipped = append(s.Skipped, p)
			continue
		}
		f := File{Path: p, Size: -1}
		switch {
		case sib.LFS != nil:
			f.LFS, f.ETag, f.Size = true, strings.ToLower(sib.LFS.SHA256), sib.LFS.Size
		case sib.BlobID != "":
			f.ETag = strings.ToLower(sib.BlobID)
			if sib.Size != nil {
				f.Size = *sib.Size
			}
		}
		f.Cached = complete(filepath.Join(s.Dir, filepath.FromSlash(p)), f.Size)
		s.Files = append(s.Files, f)
	}
	if allow == nil {
		if err := c.pruneWeights(ctx, s); err != nil {
			return nil, err
		}
	}
	if len(s.Files) == 0 {
		return nil, &hubError{
			msg:   fmt.Sprintf("model %s@%s has no files to download (%d files skipped by the filter%s)", repo, rev, len(s.Skipped), example(s.Skipped)),
			kinds: []error{ErrNoFiles},
		}
	}
	return s, nil
}

// modelInfo gets GET /api/models/{repo}/revision/{rev}?blobs=true, retrying
// transient failures.
func (c *Client) modelInfo(ctx context.Context, repo, rev string) (*modelInfo, error) {
	u := c.endpoint() + "/api/models/" + repo + "/revision/" + url.PathEscape(rev) + "?blobs=true"
	for attempt := 1; ; attempt++ {
		info, err := c.modelInfoOnce(ctx, u, repo, rev)
		if err == nil || !isRetryable(err) || ctx.Err() != nil || attempt == maxFailures {
			return info, err
		}
		c.logger().Warn("model info request failed, retrying", zap.String("model", repo), zap.Error(err))
		if err := sleep(ctx, retryBackoff<<(attempt-1)); err != nil {
			return nil, err
		}
	}
}

func (c *Client) modelInfoOnce(ctx context.Context, u, repo, rev string) (*modelInfo, error) {
	resp, err := c.request(ctx, http.MethodGet, u, nil, followAll)
	if err != nil {
		err = fmt.Errorf("hub: resolve %s@%s: %w", repo, rev, err)
		if ctx.Err() == nil {
			err = retryable{err}
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, c.statusError(resp, repo, rev, "")
	}
	var info modelInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&info); err != nil {
		return nil, fmt.Errorf("hub: resolve %s@%s: bad model info: %w", repo, rev, err)
	}
	if !isHex(info.SHA, 40) {
		return nil, fmt.Errorf("hub: resolve %s@%s: model info has no valid commit sha (got %q)", repo, rev, info.SHA)
	}
	return &info, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// weightsIndex is the sharded-checkpoint index transformers writes.
const weightsIndex = "model.safetensors.index.json"

// pruneWeights drops the *.safetensors files a transformers loader would
// not read (see Resolve).
func (c *Client) pruneWeights(ctx context.Context, s *Snapshot) error {
	var keep func(p string) bool
	if i := slices.IndexFunc(s.Files, func(f File) bool { return f.Path == weightsIndex }); i >= 0 {
		f, err := c.newFetcher(s)
		if err != nil {
			return err
		}
		if err := f.file(ctx, s.Files[i]); err != nil {
			return err
		}
		s.Files[i].Cached = true
		data, err := os.ReadFile(filepath.Join(s.Dir, weightsIndex))
		if err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(data, &idx); err != nil {
			return fmt.Errorf("hub: %s of %s: %w", weightsIndex, s.Repo, err)
		}
		shards := map[string]bool{}
		for _, shard := range idx.WeightMap {
			shards[shard] = true
		}
		for shard := range shards {
			if !slices.ContainsFunc(s.Files, func(f File) bool { return f.Path == shard }) {
				return fmt.Errorf("hub: %s of %s names shard %q, which the repository lacks", weightsIndex, s.Repo, shard)
			}
		}
		keep = func(p string) bool { return shards[p] }
	} else {
		keep = func(p string) bool { return !strings.Contains(p, "/") }
	}
	s.Files = slices.DeleteFunc(s.Files, func(f File) bool {
		if strings.HasSuffix(f.Path, ".safetensors") && !keep(f.Path) {
			s.Skipped = append(s.Skipped, f.Path)
			return true
		}
		return false
	})
	return nil
}

func example(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return ", e.g. " + names[0]
}

func (c *Client) newFetcher(s *Snapshot) (*fetcher, error) {
	root, err := c.cacheDir()
	if err != nil {
		return nil, err
	}
	if err := validateRepo(s.Repo); err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrInvalidModelID, s.Repo, err)
	}
	if !isHex(s.Commit, 40) {
		return nil, fmt.Errorf("hub: fetch %s: invalid commit %q", s.Repo, s.Commit)
	}
	f := &fetcher{
		c:       c,
		s:       s,
		log:     c.logger().With(zap.String("model", s.Repo), zap.String("commit", s.Commit)),
		storage: filepath.Join(root, RepoFolderName(s.Repo)),
		locks:   filepath.Join(root, ".locks", RepoFolderName(s.Repo)),
	}
	f.snapshot = filepath.Join(f.storage, "snapshots", s.Commit)
	return f, nil
}

// Fetch downloads the snapshot's files that are not cached yet, a few at a
// time, and links them into the snapshot directory.
func (c *Client) Fetch(ctx context.Context, s *Snapshot) error {
	f, err := c.newFetcher(s)
	if err != nil {
		return err
	}
	if s.Revision != "" && s.Revision != s.Commit {
		if err := validateRevision(s.Revision); err != nil {
			return fmt.Errorf("hub: fetch %s: %w", s.Repo, err)
		}
		ref := filepath.Join(f.storage, "refs", filepath.FromSlash(s.Revision))
		if err := writeFileAtomic(ref, []byte(s.Commit)); err != nil {
			return fmt.Errorf("hub: fetch %s: %w", s.Repo, err)
		}
	}
	var missing int
	var missingBytes int64
	for _, file := range s.Files {
		if !validRepoPath(file.Path) {
			return fmt.Errorf("hub: fetch %s: unsafe file name %q", s.Repo, file.Path)
		}
		if !file.Cached {
			missing++
			missingBytes += max(file.Size, 0)
		}
	}
	if missing > 0 {
		f.log.Info("downloading", zap.String("revision", s.Revision), zap.Int("files", missing), zap.Int64("bytes", missingBytes))
	}
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.concurrency())
	for _, file := range s.Files {
		g.Go(func() error { return f.file(gctx, file) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	f.log.Info("snapshot ready", zap.String("dir", f.snapshot), zap.Int("files", len(s.Files)),
		zap.Int64("downloaded_bytes", f.downloaded.Load()), zap.Duration("took", time.Since(start)))
	return nil
}

// fetcher is the state of one Fetch.
type fetcher struct {
	c                        *Client
	s                        *Snapshot
	log                      *zap.Logger
	storage, snapshot, locks string
	progressMu               sync.Mutex
	downloaded               atomic.Int64
}

func (f *fetcher) progress(file string, done, total int64) {
	if f.c.Progress == nil {
		return
	}
	f.progressMu.Lock()
	defer f.progressMu.Unlock()
	f.c.Progress(file, done, total)
}

// file makes one file present in the snapshot: from the snapshot itself, from
// an existing blob (shared with other revisions) or by downloading the blob.
func (f *fetcher) file(ctx context.Context, file File) error {
	pointer := filepath.Join(f.snapshot, filepath.FromSlash(file.Path))
	if complete(pointer, file.Size) {
		f.progress(file.Path, max(file.Size, 0), file.Size)
		return nil
	}
	fileURL := f.c.endpoint() + "/" + f.s.Repo + "/resolve/" + f.s.Commit + "/" + escapePath(file.Path)
	etag, size := file.ETag, file.Size
	if etag == "" {
		var err error
		if etag, size, err = f.head(ctx, fileURL, file.Path); err != nil {
			return err
		}
	}
	if !validBlobName(etag) {
		return fmt.Errorf("hub: %s: %s: the Hub gave an unusable ETag %q", f.s.Repo, file.Path, etag)
	}
	blob := filepath.Join(f.storage, "blobs", etag)
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	// The lock keeps two processes (or two identical files of one repo) from
	// writing the same .incomplete file.
	unlock, err := lockFile(ctx, filepath.Join(f.locks, etag+".lock"))
	if err != nil {
		return fmt.Errorf("hub: lock %s: %w", file.Path, err)
	}
	defer unlock()
	if complete(blob, size) {
		f.progress(file.Path, max(size, 0), size)
	} else if err := f.download(ctx, fileURL, file.Path, etag, size, blob); err != nil {
		return err
	}
	if err := linkBlob(blob, pointer); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	return nil
}

// head gets a file's ETag and size when the model info did not carry them,
// like huggingface_hub's get_hf_file_metadata: redirects to other hosts are
// not followed because the Hub puts X-Linked-Etag/X-Linked-Size on the 302.
func (f *fetcher) head(ctx context.Context, fileURL, name string) (etag string, size int64, err error) {
	hdr := http.Header{"Accept-Encoding": {"identity"}}
	resp, err := f.c.request(ctx, http.MethodHead, fileURL, hdr, followSameHost)
	if err != nil {
		return "", 0, fmt.Errorf("hub: %s: %s: %w", f.s.Repo, name, err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return "", 0, f.c.statusError(resp, f.s.Repo, f.s.Commit, name)
	}
	etag = resp.Header.Get("X-Linked-Etag")
	if etag == "" {
		etag = resp.Header.Get("ETag")
	}
	etag = strings.ToLower(normalizeETag(etag))
	size = -1
	for _, h := range []string{"X-Linked-Size", "Content-Length"} {
		if v, err := strconv.ParseInt(resp.Header.Get(h), 10, 64); err == nil && v >= 0 {
			size = v
			break
		}
	}
	if etag == "" {
		return "", 0, fmt.Errorf("hub: %s: %s: the Hub sent no ETag", f.s.Repo, name)
	}
	return etag, size, nil
}

// normalizeETag strips the weak prefix and quotes: W/"abc" -> abc.
func normalizeETag(s string) string {
	return strings.Trim(strings.TrimPrefix(strings.TrimSpace(s), "W/"), `"`)
}

// download fetches one blob into <blob>.incomplete, resuming from what is
// already there, verifies it and renames it into place.
func (f *fetcher) download(ctx context.Context, fileURL, name, etag string, size int64, blob string) error {
	inc := blob + ".incomplete"
	fh, err := os.OpenFile(inc, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	defer fh.Close()
	v := newVerifier(etag, size)
	off, err := fh.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if size >= 0 && off > size {
		off = 0
		if err := fh.Truncate(0); err != nil {
			return fmt.Errorf("hub: %w", err)
		}
	}
	if off > 0 {
		// Hash what an earlier run left so the whole file is verified.
		if _, err := io.Copy(v, io.NewSectionReader(fh, 0, off)); err != nil {
			return fmt.Errorf("hub: resume %s: %w", name, err)
		}
		f.log.Info("resuming download", zap.String("file", name), zap.Int64("offset", off), zap.Int64("size", size))
	}
	failures := 0
	for size < 0 || off < size {
		newOff, wrote, err := f.attempt(ctx, fileURL, name, fh, v, off, size)
		off = newOff
		if err == nil {
			if size < 0 || off == size {
				break
			}
			err = retryable{fmt.Errorf("connection closed at byte %d of %d", off, size)}
		}
		if !isRetryable(err) || ctx.Err() != nil {
			return err
		}
		if wrote > 0 {
			failures = 0
		} else {
			failures++
		}
		if failures >= maxFailures {
			return fmt.Errorf("hub: download %s/%s: giving up after %d attempts without progress: %w", f.s.Repo, name, failures, err)
		}
		f.log.Warn("download interrupted, resuming", zap.String("file", name), zap.Int64("offset", off), zap.Error(err))
		if failures > 0 {
			if err := sleep(ctx, retryBackoff<<(failures-1)); err != nil {
				return err
			}
		}
	}
	if err := v.check(); err != nil {
		fh.Close()
		os.Remove(inc)
		return &hubError{
			msg:   fmt.Sprintf("hub: download %s/%s: %v; the partial download was removed, run again to retry", f.s.Repo, name, err),
			kinds: []error{ErrChecksum},
		}
	}
	if err := fh.Sync(); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if err := os.Rename(inc, blob); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	f.log.Debug("downloaded", zap.String("file", name), zap.Int64("size", off), zap.String("blob", etag))
	return nil
}

// attempt is one GET of the file from byte off on. It returns the new end of
// the partial file and how many bytes this attempt wrote.
func (f *fetcher) attempt(ctx context.Context, fileURL, name string, fh *os.File, v *verifier, off, size int64) (int64, int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	hdr := http.Header{}
	if off > 0 {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := f.c.request(ctx, http.MethodGet, fileURL, hdr, followAll)
	if err != nil {
		if ctx.Err() != nil {
			return off, 0, err
		}
		return off, 0, retryable{fmt.Errorf("hub: download %s/%s: %w", f.s.Repo, name, err)}
	}
	defer resp.Body.Close()
	restart := func() error {
		off = 0
		v.reset()
		return fh.Truncate(0)
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if start, ok := contentRangeStart(resp.Header.Get("Content-Range")); !ok || start != off {
			return off, 0, fmt.Errorf("hub: download %s/%s: asked for bytes from %d, got Content-Range %q",
				f.s.Repo, name, off, resp.Header.Get("Content-Range"))
		}
	case http.StatusOK:
		if off > 0 { // Range ignored: start over.
			if err := restart(); err != nil {
				return off, 0, fmt.Errorf("hub: %w", err)
			}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		if err := restart(); err != nil {
			return off, 0, fmt.Errorf("hub: %w", err)
		}
		return off, 0, retryable{fmt.Errorf("hub: download %s/%s: range not satisfiable, starting over", f.s.Repo, name)}
	default:
		return off, 0, f.c.statusError(resp, f.s.Repo, f.s.Commit, name)
	}

	stalled := errors.New("no data received for " + stallTimeout.String())
	timer := time.AfterFunc(stallTimeout, func() { cancel(stalled) })
	defer timer.Stop()
	buf := make([]byte, 1<<20)
	var wrote int64
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			timer.Reset(stallTimeout)
			if size >= 0 && off+int64(n) > size {
				return off, wrote, fmt.Errorf("hub: download %s/%s: server sent more than the expected %d bytes", f.s.Repo, name, size)
			}
			if _, err := fh.WriteAt(buf[:n], off); err != nil {
				return off, wrote, fmt.Errorf("hub: %w", err)
			}
			v.Write(buf[:n])
			off += int64(n)
			wrote += int64(n)
			f.downloaded.Add(int64(n))
			f.progress(name, off, size)
			if err := ctx.Err(); err != nil {
				return off, wrote, err // stop promptly, even with the rest of the body buffered
			}
		}
		if rerr == io.EOF {
			return off, wrote, nil
		}
		if rerr != nil {
			if cause := context.Cause(ctx); cause == stalled {
				rerr = cause
			} else if ctx.Err() != nil {
				return off, wrote, ctx.Err()
			}
			return off, wrote, retryable{fmt.Errorf("hub: download %s/%s at byte %d: %w", f.s.Repo, name, off, redact(rerr))}
		}
	}
}

// contentRangeStart parses "bytes START-END/TOTAL".
func contentRangeStart(s string) (int64, bool) {
	s, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, false
	}
	first, _, ok := strings.Cut(s, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(first, 10, 64)
	return n, err == nil
}

// verifier hashes a blob the way its ETag was computed: SHA-256 for LFS
// files, git's blob SHA-1 ("blob <size>\x00" + content) for small files.
type verifier struct {
	h    hash.Hash
	kind string
	want string
	size int64
	n    int64
}

func newVerifier(etag string, size int64) *verifier {
	v := &verifier{want: etag, size: size}
	switch {
	case isHex(etag, 64):
		v.h, v.kind = sha256.New(), "sha256"
	case isHex(etag, 40) && size >= 0:
		v.h, v.kind = sha1.New(), "git blob sha1"
	}
	v.reset()
	return v
}

func (v *verifier) reset() {
	v.n = 0
	if v.h == nil {
		return
	}
	v.h.Reset()
	if v.kind == "git blob sha1" {
		fmt.Fprintf(v.h, "blob %d\x00", v.size)
	}
}

func (v *verifier) Write(p []byte) (int, error) {
	v.n += int64(len(p))
	if v.h != nil {
		v.h.Write(p)
	}
	return len(p), nil
}

func (v *verifier) check() error {
	if v.size >= 0 && v.n != v.size {
		return fmt.Errorf("%w: size is %d bytes, expected %d", ErrChecksum, v.n, v.size)
	}
	if v.h == nil {
		return nil
	}
	if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
		return fmt.Errorf("%w: %s is %s, expected %s", ErrChecksum, v.kind, got, v.want)
	}
	return nil
}

// redirectPolicy says which redirects request follows itself.
type redirectPolicy int

const (
	followAll      redirectPolicy = iota
	followSameHost                // return cross-host redirects to the caller
)

// request performs one HTTP request, following redirects itself so that the
// token goes to the Hub endpoint only, never to a CDN on another host.
func (c *Client) request(ctx context.Context, method, rawURL string, hdr http.Header, policy redirectPolicy) (*http.Response, error) {
	hc := *c.httpClient()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	ep, err := url.Parse(c.endpoint())
	if err != nil {
		return nil, fmt.Errorf("bad endpoint %q: %w", c.endpoint(), err)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("bad url: %w", redact(err))
	}
	tok := c.token()
	for hop := 0; ; hop++ {
		req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
		if err != nil {
			return nil, redact(err)
		}
		for k, vs := range hdr {
			req.Header[k] = append([]string(nil), vs...)
		}
		req.Header.Set("User-Agent", userAgent)
		if tok != "" && sameOrigin(u, ep) {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, redact(err)
		}
		loc := resp.Header.Get("Location")
		if !isRedirect(resp.StatusCode) || loc == "" {
			return resp, nil
		}
		next, err := u.Parse(loc)
		if err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("bad redirect location: %w", redact(err))
		}
		if policy == followSameHost && !sameOrigin(next, u) {
			return resp, nil
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if hop >= maxRedirects {
			return nil, fmt.Errorf("more than %d redirects", maxRedirects)
		}
		u = next
	}
}

func isRedirect(code int) bool {
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Host, b.Host)
}

// redact drops query strings (signed CDN URLs) and user info from URLs
// carried by net/http errors.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery, u.User, u.Fragment = "", nil, ""
			ue.URL = u.String()
		} else {
			ue.URL = "(unparsable url)"
		}
	}
	return err
}

// hubError carries a complete message and the sentinels it matches.
type hubError struct {
	msg   string
	kinds []error
}

func (e *hubError) Error() string   { return e.msg }
func (e *hubError) Unwrap() []error { return e.kinds }

// retryable marks transient failures: network errors, 5xx, 408, 429.
type retryable struct{ error }

func (r retryable) Unwrap() error { return r.error }

func isRetryable(err error) bool {
	var r retryable
	return errors.As(err, &r)
}

// statusError turns a failed Hub response into an error naming the model,
// using the Hub's X-Error-Code header like huggingface_hub does.
func (c *Client) statusError(resp *http.Response, repo, rev, file string) error {
	code := resp.Header.Get("X-Error-Code")
	msg := resp.Header.Get("X-Error-Message")
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	hasToken := c.token() != ""
	e := func(m string, kinds ...error) error { return &hubError{msg: m, kinds: kinds} }
	st := resp.StatusCode
	switch {
	case code == "RevisionNotFound":
		return e(fmt.Sprintf("revision %q of model %s not found on the Hub", rev, repo), ErrNotFound)
	case code == "EntryNotFound" || (st == http.StatusNotFound && file != "" && code != "RepoNotFound"):
		return e(fmt.Sprintf("file %s not found in model %s at revision %s", file, repo, rev), ErrNotFound)
	case st == http.StatusNotFound || (code == "RepoNotFound" && hasToken):
		return e(fmt.Sprintf("model %s not found on the Hub", repo), ErrNotFound)
	case st == http.StatusUnauthorized || st == http.StatusForbidden:
		switch {
		case !hasToken && code == "RepoNotFound":
			// The Hub answers 401 for missing repos too when no token is sent.
			return e(fmt.Sprintf("model %s not found on the Hub, or access to it denied: gated or private model, pass --hf-token or set HF_TOKEN", repo), ErrNotFound, ErrAccessDenied)
		case !hasToken:
			return e(fmt.Sprintf("access to %s denied: gated or private model, pass --hf-token or set HF_TOKEN", repo), ErrAccessDenied)
		case code == "GatedRepo":
			return e(fmt.Sprintf("access to %s denied: gated model, accept its terms on the Hub with the token's account", repo), ErrAccessDenied)
		case st == http.StatusUnauthorized:
			return e(fmt.Sprintf("access to %s denied: the Hugging Face token was rejected (invalid or expired)", repo), ErrAccessDenied)
		default:
			return e(fmt.Sprintf("access to %s denied: gated or private model the given token cannot read", repo), ErrAccessDenied)
		}
	}
	what := "model " + repo
	if file != "" {
		what = "file " + file + " of model " + repo
	}
	err := fmt.Errorf("hub: %s: %s", what, resp.Status)
	if msg != "" {
		err = fmt.Errorf("%w: %s", err, msg)
	}
	if st >= 500 || st == http.StatusTooManyRequests || st == http.StatusRequestTimeout {
		return retryable{err}
	}
	return err
}

// complete reports whether p (following symlinks) is a regular file of the
// given size (any size when size < 0).
func complete(p string, size int64) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && (size < 0 || st.Size() == size)
}

// validRepoPath accepts relative, clean, '/'-separated paths that stay
// inside the snapshot directory.
func validRepoPath(p string) bool {
	return fs.ValidPath(p) && p != "." && !strings.ContainsAny(p, "\\\x00")
}

func validBlobName(s string) bool {
	if s == "" || len(s) > 128 || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return false
		}
	}
	return true
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < n; i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

var tmpSeq atomic.Int64

func tmpName(p string) string {
	return fmt.Sprintf("%s.%d.%d.tmp", p, os.Getpid(), tmpSeq.Add(1))
}

// linkBlob points pointer at blob with a relative symlink, as huggingface_hub
// does, replacing whatever was there atomically.
func linkBlob(blob, pointer string) error {
	rel, err := filepath.Rel(filepath.Dir(pointer), blob)
	if err != nil {
		return err
	}
	if cur, err := os.Readlink(pointer); err == nil && cur == rel {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(pointer), 0o755); err != nil {
		return err
	}
	tmp := tmpName(pointer)
	if err := os.Symlink(rel, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, pointer); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func writeFileAtomic(p string, data []byte) error {
	if cur, err := os.ReadFile(p); err == nil && string(cur) == string(data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := tmpName(p)
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
