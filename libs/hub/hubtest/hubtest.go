// Package hubtest runs a fake Hugging Face Hub for tests: the model info API
// (GET /api/models/{repo}/revision/{rev}[?blobs=true]) and file resolution
// (HEAD/GET /{repo}/resolve/{rev}/{path}) with the Hub's headers (X-Repo-Commit,
// ETag, X-Linked-Etag, X-Linked-Size, X-Error-Code), Range requests, LFS
// redirects to a CDN on another host name, private and gated repos, and fault
// injection (connections cut mid-file, corrupted bodies).
package hubtest

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// File is a file of a fake repository.
type File struct {
	Path string // '/'-separated, relative to the repository root
	Data []byte
	LFS  bool // stored in Git LFS: its ETag is the SHA-256 of Data
}

// Request is a request the fake Hub or its CDN received.
type Request struct {
	Method        string
	Path          string // unescaped URL path
	Range         string
	Authorization string
	CDN           bool
}

// IsFileGet reports whether r downloads file contents.
func (r Request) IsFileGet() bool {
	return r.Method == http.MethodGet && (r.CDN || strings.Contains(r.Path, "/resolve/"))
}

type commit struct {
	sha   string
	files map[string]File
}

type repo struct {
	commits map[string]*commit // by sha
	refs    map[string]string  // branch or tag -> sha
	token   string             // required token, if any
	gated   bool               // model info public, files need the token
}

type fault struct {
	cutAfter int64 // cut the body after this many bytes; <0: no cut
	corrupt  bool
	status   int // answer this status instead, failures more times
	failures int
}

// Server is a fake Hub. Its methods are safe to call while it serves.
type Server struct {
	URL    string // endpoint, for hub.Client.Endpoint
	CDNURL string // CDN base, on host name "localhost" so it is another origin than URL

	hub, cdn *httptest.Server

	mu          sync.Mutex
	repos       map[string]*repo
	faults      map[string]*fault // by repo + "/" + path
	requests    []Request
	redirectLFS bool
	noBlobs     bool
	ignoreRange bool
	seq         int
}

// New starts a fake Hub and its CDN, closed when the test ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{repos: map[string]*repo{}, faults: map[string]*fault{}}
	s.hub = httptest.NewServer(http.HandlerFunc(s.serveHub))
	s.cdn = httptest.NewServer(http.HandlerFunc(s.serveCDN))
	tb.Cleanup(s.Close)
	s.URL = s.hub.URL
	s.CDNURL = strings.Replace(s.cdn.URL, "127.0.0.1", "localhost", 1)
	return s
}

// Close shuts the servers down.
func (s *Server) Close() {
	s.hub.Close()
	s.cdn.Close()
}

// Client returns an HTTP client for the servers.
func (s *Server) Client() *http.Client { return s.hub.Client() }

// AddRepo makes a new commit holding exactly files, points "main" at it and
// returns its sha. Earlier commits stay reachable by sha.
func (s *Server) AddRepo(repoID string, files ...File) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoID]
	if r == nil {
		r = &repo{commits: map[string]*commit{}, refs: map[string]string{}}
		s.repos[repoID] = r
	}
	s.seq++
	h := sha1.New()
	fmt.Fprintf(h, "%s\x00%d\x00", repoID, s.seq)
	c := &commit{files: map[string]File{}}
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%s\x00", f.Path, blobID(f))
		c.files[f.Path] = f
	}
	c.sha = hex.EncodeToString(h.Sum(nil))
	r.commits[c.sha] = c
	r.refs["main"] = c.sha
	return c.sha
}

// AddDir adds the regular files under dir as a new commit of repoID (see
// AddRepo). Weights and tokenizer models (*.safetensors, *.bin, *.model,
// *.gguf, *.pt, *.pth) and files over 10 MiB are LFS files, as on the Hub.
func (s *Server) AddDir(repoID, dir string) (string, error) {
	var files []File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		lfs := len(data) > 10<<20
		switch path.Ext(p) {
		case ".safetensors", ".bin", ".model", ".gguf", ".pt", ".pth":
			lfs = true
		}
		files = append(files, File{Path: filepath.ToSlash(rel), Data: data, LFS: lfs})
		return nil
	})
	if err != nil {
		return "", err
	}
	return s.AddRepo(repoID, files...), nil
}

// SetRef points a branch or tag of repoID at commit sha.
func (s *Server) SetRef(repoID, ref, sha string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos[repoID].refs[ref] = sha
}

// Private makes repoID answer only requests with "Authorization: Bearer
// token", like a private repo: without it the Hub says 401 RepoNotFound.
func (s *Server) Private(repoID, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos[repoID].token = token
}

// Gated makes repoID's files need token while its model info stays public,
// like a gated repo.
func (s *Server) Gated(repoID, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos[repoID].token = token
	s.repos[repoID].gated = true
}

// RedirectLFS makes file resolution of LFS files answer 302 to the CDN,
// which serves them without authentication under a signed-looking URL.
func (s *Server) RedirectLFS(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redirectLFS = on
}

// NoBlobs makes the model info ignore ?blobs=true, listing names only, so
// clients must learn ETags and sizes from HEAD requests.
func (s *Server) NoBlobs(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noBlobs = on
}

// IgnoreRange makes file downloads answer 200 with the whole file even to
// Range requests, as some CDNs do.
func (s *Server) IgnoreRange(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ignoreRange = on
}

// Fail makes the next n GETs of file p of repoID answer status (say 503);
// with p empty, the next n model info requests.
func (s *Server) Fail(repoID, p string, status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ft := s.fault(repoID, p)
	ft.status, ft.failures = status, n
}

// CutAfter makes the next GET of file p of repoID (on the Hub or the CDN)
// send n body bytes and then drop the connection. It happens once.
func (s *Server) CutAfter(repoID, p string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault(repoID, p).cutAfter = n
}

// Corrupt makes every GET of file p of repoID serve bytes that do not match
// its ETag (same length), until Corrupt(repoID, p, false).
func (s *Server) Corrupt(repoID, p string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault(repoID, p).corrupt = on
}

func (s *Server) fault(repoID, p string) *fault {
	k := repoID + "/" + p
	if s.faults[k] == nil {
		s.faults[k] = &fault{cutAfter: -1}
	}
	return s.faults[k]
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// FileGets counts the GET requests that download file contents.
func (s *Server) FileGets() int {
	n := 0
	for _, r := range s.Requests() {
		if r.IsFileGet() {
			n++
		}
	}
	return n
}

// ResetRequests forgets the requests received so far.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

func (s *Server) record(r *http.Request, cdn bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{
		Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"),
		Authorization: r.Header.Get("Authorization"), CDN: cdn,
	})
}

// blobID is the Hub's ETag of f: SHA-256 for LFS files, else the git blob SHA-1.
func blobID(f File) string {
	if f.LFS {
		sum := sha256.Sum256(f.Data)
		return hex.EncodeToString(sum[:])
	}
	return gitBlobSHA1(f.Data)
}

func gitBlobSHA1(data []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

func hubError(w http.ResponseWriter, status int, code, msg string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// splitPath splits an escaped URL path into unescaped segments.
func splitPath(escaped string) ([]string, bool) {
	parts := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, false
		}
		parts[i] = u
	}
	return parts, true
}

func (s *Server) serveHub(w http.ResponseWriter, r *http.Request) {
	s.record(r, false)
	parts, ok := splitPath(r.URL.EscapedPath())
	switch {
	case !ok:
		http.Error(w, "bad path", http.StatusBadRequest)
	case len(parts) >= 6 && parts[0] == "api" && parts[1] == "models" && parts[4] == "revision" && r.Method == http.MethodGet:
		s.serveInfo(w, r, parts[2]+"/"+parts[3], strings.Join(parts[5:], "/"))
	case len(parts) >= 5 && parts[2] == "resolve" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.serveResolve(w, r, parts[0]+"/"+parts[1], parts[3], strings.Join(parts[4:], "/"))
	default:
		http.Error(w, "not a Hub endpoint", http.StatusNotFound)
	}
}

// lookup finds the repo and commit and checks authorization, writing the
// Hub's error response when it fails.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request, repoID, rev string, files bool) (*commit, bool) {
	s.mu.Lock()
	rp := s.repos[repoID]
	s.mu.Unlock()
	if rp == nil {
		if r.Header.Get("Authorization") == "" {
			// The Hub does not tell missing from private to anonymous users.
			hubError(w, http.StatusUnauthorized, "RepoNotFound", "Repository not found")
		} else {
			hubError(w, http.StatusNotFound, "RepoNotFound", "Repository not found")
		}
		return nil, false
	}
	if rp.token != "" && (files || !rp.gated) {
		switch auth := r.Header.Get("Authorization"); {
		case auth == "Bearer "+rp.token:
		case auth == "" && rp.gated:
			hubError(w, http.StatusUnauthorized, "GatedRepo", "Access to model "+repoID+" is restricted. You must have access to it and be authenticated to access it.")
			return nil, false
		case auth == "":
			hubError(w, http.StatusUnauthorized, "RepoNotFound", "Repository not found")
			return nil, false
		case rp.gated:
			hubError(w, http.StatusForbidden, "GatedRepo", "Access to model "+repoID+" is restricted and you are not in the authorized list.")
			return nil, false
		default:
			hubError(w, http.StatusUnauthorized, "", "Invalid credentials in Authorization header")
			return nil, false
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sha, ok := rp.refs[rev]
	if !ok {
		sha = rev
	}
	c := rp.commits[sha]
	if c == nil {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return nil, false
	}
	return c, true
}

type sibling struct {
	RFilename string `json:"rfilename"`
	BlobID    string `json:"blobId,omitempty"`
	Size      *int64 `json:"size,omitempty"`
	LFS       *lfs   `json:"lfs,omitempty"`
}

type lfs struct {
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	PointerSize int64  `json:"pointerSize"`
}

func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request, repoID, rev string) {
	s.mu.Lock()
	status := 0
	if ft := s.faults[repoID+"/"]; ft != nil && ft.failures > 0 {
		ft.failures--
		status = ft.status
	}
	s.mu.Unlock()
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	c, ok := s.lookup(w, r, repoID, rev, false)
	if !ok {
		return
	}
	s.mu.Lock()
	blobs := r.URL.Query().Get("blobs") == "true" && !s.noBlobs
	s.mu.Unlock()
	names := make([]string, 0, len(c.files))
	for p := range c.files {
		names = append(names, p)
	}
	slices.Sort(names)
	sibs := make([]sibling, 0, len(names))
	for _, p := range names {
		f := c.files[p]
		sib := sibling{RFilename: p}
		if blobs {
			size := int64(len(f.Data))
			sib.Size = &size
			sib.BlobID = gitBlobSHA1(f.Data)
			if f.LFS {
				pointer := fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", blobID(f), size)
				sib.BlobID = gitBlobSHA1([]byte(pointer))
				sib.LFS = &lfs{SHA256: blobID(f), Size: size, PointerSize: int64(len(pointer))}
			}
		}
		sibs = append(sibs, sib)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"_id": "fake", "id": repoID, "modelId": repoID, "sha": c.sha,
		"private": false, "gated": false, "siblings": sibs,
	})
}

func (s *Server) serveResolve(w http.ResponseWriter, r *http.Request, repoID, rev, p string) {
	c, ok := s.lookup(w, r, repoID, rev, true)
	if !ok {
		return
	}
	f, ok := c.files[p]
	if !ok {
		w.Header().Set("X-Repo-Commit", c.sha)
		hubError(w, http.StatusNotFound, "EntryNotFound", p+" does not exist on \""+rev+"\"")
		return
	}
	h := w.Header()
	h.Set("X-Repo-Commit", c.sha)
	id := blobID(f)
	h.Set("ETag", `"`+id+`"`)
	if f.LFS {
		h.Set("X-Linked-Etag", `"`+id+`"`)
		h.Set("X-Linked-Size", strconv.Itoa(len(f.Data)))
		s.mu.Lock()
		redirect := s.redirectLFS
		s.mu.Unlock()
		if redirect {
			// Signed-looking query so tests can check it is never logged.
			loc := s.CDNURL + "/cdn/" + id + "?repo=" + url.QueryEscape(repoID) + "&file=" + url.QueryEscape(p) + "&X-Amz-Signature=SIGNATURE-SECRET"
			h.Set("Location", loc)
			w.WriteHeader(http.StatusFound)
			return
		}
	}
	s.serveBody(w, r, repoID, f)
}

func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	s.record(r, true)
	q := r.URL.Query()
	repoID, p := q.Get("repo"), q.Get("file")
	s.mu.Lock()
	var f File
	found := false
	if rp := s.repos[repoID]; rp != nil {
		for _, c := range rp.commits {
			if cf, ok := c.files[p]; ok && "/cdn/"+blobID(cf) == r.URL.Path {
				f, found = cf, true
				break
			}
		}
	}
	s.mu.Unlock()
	if !found || q.Get("X-Amz-Signature") != "SIGNATURE-SECRET" {
		http.Error(w, "AccessDenied", http.StatusForbidden)
		return
	}
	// A CDN's ETag is its own (here an md5-sized hex), not the Hub's.
	w.Header().Set("ETag", `"`+blobID(f)[:32]+`"`)
	s.serveBody(w, r, repoID, f)
}

// serveBody writes f's contents honouring "Range: bytes=N-" and "bytes=N-M",
// and applies injected faults.
func (s *Server) serveBody(w http.ResponseWriter, r *http.Request, repoID string, f File) {
	data := f.Data
	s.mu.Lock()
	var cut int64 = -1
	corrupt, status, ignoreRange := false, 0, s.ignoreRange
	if ft := s.faults[repoID+"/"+f.Path]; ft != nil && r.Method == http.MethodGet {
		if ft.failures > 0 {
			ft.failures--
			status = ft.status
		} else {
			cut, ft.cutAfter = ft.cutAfter, -1
			corrupt = ft.corrupt
		}
	}
	s.mu.Unlock()
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	if corrupt && len(data) > 0 {
		data = slices.Clone(data)
		data[len(data)/2] ^= 0xff
	}
	size := int64(len(data))
	start, end := int64(0), size-1
	status = http.StatusOK
	h := w.Header()
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	if rg := r.Header.Get("Range"); rg != "" && !ignoreRange {
		spec, ok := strings.CutPrefix(rg, "bytes=")
		a, b, ok2 := strings.Cut(spec, "-")
		first, err := strconv.ParseInt(a, 10, 64)
		if !ok || !ok2 || err != nil || first < 0 {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if first >= size {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		if b != "" {
			last, err := strconv.ParseInt(b, 10, 64)
			if err != nil || last < first {
				http.Error(w, "bad range", http.StatusBadRequest)
				return
			}
			end = min(last, size-1)
		}
		start, status = first, http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
	}
	body := data[start : end+1]
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if cut >= 0 && cut < int64(len(body)) {
		w.Write(body[:cut])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drops the connection mid-body
	}
	w.Write(body)
}
