// Package atomicfile writes outputs under a temporary name in their final directory and renames them
// into place only once they are complete, so a crash or an error never leaves a half-written file
// where a result is expected. It also decides what an output may replace:
//
//   - nothing is there;
//   - a file output: a regular file of the same kind (its first bytes are Options.Magic, e.g. "GGUF");
//   - a directory output: a directory quantfleet wrote, recognised by the MarkerName file that Dir.Commit
//     writes into every directory it commits;
//   - anything at all with Options.Overwrite (the commands' --overwrite).
//
// Anything else fails with ErrExists (bad input), before any work is done and again just before the
// rename. Temporary names are "." + name + ".<digits>.partial"; a live writer holds an flock on its
// temporary file or directory, so the next Create or MkdirTemp in the same directory removes those a
// crashed run left behind, and nothing else.
package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"quantfleet.dev/libs/fault"
)

// Mode is the permission of committed files.
const Mode = 0o644

// MarkerName is the file Dir.Commit writes into every directory it commits: a directory holding it
// (with MarkerText as its first bytes) was written by quantfleet and may be replaced by a new output
// of the same name. Loaders (transformers, vLLM) ignore it; uploads skip hidden files.
const MarkerName = ".quantfleet-output"

// MarkerText starts the marker file.
const MarkerText = "written by quantfleet; a new output of this name may replace this directory\n"

var (
	// ErrExists reports an output path that holds something quantfleet may not replace.
	ErrExists = fault.New(fault.ErrBadInput, "output path exists")
	// ErrBadName reports an output name that is not a plain file name.
	ErrBadName = fault.New(fault.ErrBadInput, "bad output name")
	// ErrOutputDir reports an output directory that cannot be created or written: a file in its
	// place, or no permission.
	ErrOutputDir = fault.New(fault.ErrBadInput, "output directory")
)

// MkdirAll creates the output directory dir (and its parents) if missing.
func MkdirAll(dir string) error {
	return dirError(dir, os.MkdirAll(dir, 0o755))
}

// dirError classifies an error of creating dir or a file in it: a path through a file, or a missing
// permission, is the user's to fix.
func dirError(dir string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, fs.ErrExist) || errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("%w %s: %w", ErrOutputDir, dir, err)
	}
	return fmt.Errorf("output directory %s: %w", dir, err)
}

// tempName matches the temporary names of Create and MkdirTemp (os.CreateTemp puts decimal digits
// for the "*"), and the ".old" name of a directory being replaced.
var tempName = regexp.MustCompile(`^\..+\.[0-9]+\.partial(\.old)?$`)

// CheckName is the one check of an output name (--output-name) for every command that writes: one
// path element, not "." or "..", not a temporary name of this package.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("%w: %q must be a file name, not a path", ErrBadName, name)
	case tempName.MatchString(name):
		return fmt.Errorf("%w: %q looks like a temporary file name of quantfleet", ErrBadName, name)
	}
	return nil
}

// Options say what an output may replace.
type Options struct {
	// Magic: an existing regular file that starts with these bytes is an earlier output of the same
	// kind (file outputs only). Empty: no existing file is replaced.
	Magic string
	// Overwrite replaces whatever is at the final path.
	Overwrite bool
}

// check reports whether final may be replaced by a new output (a directory when dir).
func (o Options) check(final string, dir bool) error {
	st, err := os.Lstat(final)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return dirError(filepath.Dir(final), err)
	}
	if o.Overwrite {
		return nil
	}
	what := "a file"
	switch {
	case st.IsDir() && dir:
		if startsWith(filepath.Join(final, MarkerName), MarkerText) {
			return nil
		}
		what = "a directory quantfleet did not write (it holds no " + MarkerName + ")"
	case st.IsDir():
		what = "a directory"
	case st.Mode().IsRegular() && !dir && o.Magic != "":
		if startsWith(final, o.Magic) {
			return nil
		}
		what = "a file that is not " + o.Magic
	case st.Mode()&os.ModeSymlink != 0:
		what = "a symbolic link"
	case !st.Mode().IsRegular():
		what = "a special file"
	}
	return fmt.Errorf("%w: %s is %s; choose another --output-name or --output-dir, or pass --overwrite to replace it",
		ErrExists, final, what)
}

// startsWith reports whether the regular file at path (symlinks not followed) starts with prefix.
func startsWith(path, prefix string) bool {
	st, err := os.Lstat(path)
	if err != nil || !st.Mode().IsRegular() {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, len(prefix))
	_, err = io.ReadFull(f, b)
	return err == nil && bytes.Equal(b, []byte(prefix))
}

// File is a file being written. Write to it, then Commit, or Abort (safe to defer: it does nothing
// after Commit).
type File struct {
	*os.File
	final     string
	opts      Options
	lock      *os.File
	closed    bool
	committed bool
}

// Create starts writing dir/name (dir must exist) after checking that the output may replace what
// is at dir/name, and removes the temporary files of crashed runs from dir.
func Create(dir, name string, o Options) (*File, error) {
	if err := prepare(dir, name, o, false); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "."+name+".*.partial")
	if err != nil {
		return nil, dirError(dir, err)
	}
	lock, err := lockPath(f.Name())
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &File{File: f, final: filepath.Join(dir, name), opts: o, lock: lock}, nil
}

// Check reports, without writing anything, whether an output (a directory when isDir) may be
// written to dir/name: for commands that learn much later whether the write succeeds.
func Check(dir, name string, isDir bool, o Options) error {
	if err := CheckName(name); err != nil {
		return err
	}
	return o.check(filepath.Join(dir, name), isDir)
}

func prepare(dir, name string, o Options, isDir bool) error {
	if err := Check(dir, name, isDir, o); err != nil {
		return err
	}
	cleanStale(dir)
	return nil
}

// TempPath is where the data is until Commit.
func (f *File) TempPath() string { return f.File.Name() }

// FinalPath is where Commit puts the file.
func (f *File) FinalPath() string { return f.final }

// Close flushes the data to stable storage and closes the file without committing it, so that it
// can be read back (validated) under TempPath first.
func (f *File) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	return errors.Join(f.File.Sync(), f.File.Close())
}

// Commit closes the file and renames it to its final path, if what is there may still be replaced.
func (f *File) Commit() error {
	if err := f.Close(); err != nil {
		return err
	}
	if err := f.opts.check(f.final, false); err != nil {
		return err
	}
	if err := os.Chmod(f.TempPath(), Mode); err != nil {
		return err
	}
	if st, err := os.Lstat(f.final); err == nil && st.IsDir() { // only with Overwrite
		if err := os.RemoveAll(f.final); err != nil {
			return err
		}
	}
	if err := os.Rename(f.TempPath(), f.final); err != nil {
		return err
	}
	f.committed = true
	f.lock.Close()
	return nil
}

// Abort discards the file unless it was committed.
func (f *File) Abort() {
	if f.committed {
		return
	}
	f.Close()
	os.Remove(f.TempPath())
	f.lock.Close()
}

// Dir is a directory output being written under Path.
type Dir struct {
	Path      string
	final     string
	opts      Options
	lock      *os.File
	committed bool
}

// MkdirTemp starts writing the directory dir/name (dir must exist), as Create does for a file.
func MkdirTemp(dir, name string, o Options) (*Dir, error) {
	if err := prepare(dir, name, o, true); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(dir, "."+name+".*.partial")
	if err != nil {
		return nil, dirError(dir, err)
	}
	lock, err := lockPath(tmp)
	if err == nil {
		err = os.Chmod(tmp, 0o755)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return &Dir{Path: tmp, final: filepath.Join(dir, name), opts: o, lock: lock}, nil
}

// FinalPath is where Commit puts the directory.
func (d *Dir) FinalPath() string { return d.final }

// Commit writes the marker into the directory and renames it to its final path, replacing an earlier
// output that may be replaced.
func (d *Dir) Commit() error {
	if err := d.opts.check(d.final, true); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d.Path, MarkerName), []byte(MarkerText), Mode); err != nil {
		return err
	}
	st, err := os.Lstat(d.final)
	switch {
	case errors.Is(err, os.ErrNotExist):
		err = os.Rename(d.Path, d.final)
	case err != nil:
	case st.IsDir():
		err = swapDir(d.Path, d.final)
	default: // a file or a link, with Overwrite
		if err = os.Remove(d.final); err == nil {
			err = os.Rename(d.Path, d.final)
		}
	}
	if err != nil {
		return err
	}
	d.committed = true
	d.lock.Close()
	return nil
}

// swapDir renames tmp to final, moving the old final aside first (locked, so that a concurrent
// cleanStale leaves it alone) and putting it back if the second rename fails.
func swapDir(tmp, final string) error {
	lock, err := lockPath(final)
	if err != nil {
		return err
	}
	defer lock.Close()
	old := tmp + ".old"
	if err := os.Rename(final, old); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return errors.Join(err, os.Rename(old, final))
	}
	return os.RemoveAll(old)
}

// Abort removes the directory unless it was committed.
func (d *Dir) Abort() {
	if d.committed {
		return
	}
	os.RemoveAll(d.Path)
	d.lock.Close()
}

// cleanStale removes the temporary files and directories of crashed runs from dir: names of this
// package only, never links, and only those whose writer's lock is gone (the kernel drops an flock
// with its process). Errors are ignored: a leftover only costs space.
func cleanStale(dir string) {
	if !canLock {
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !tempName.MatchString(e.Name()) || e.Type()&os.ModeSymlink != 0 {
			continue
		}
		p := filepath.Join(dir, e.Name())
		lock, err := lockPath(p)
		if err != nil {
			continue // a live writer's, or gone
		}
		os.RemoveAll(p)
		lock.Close()
	}
}

// CopyFile copies the file name of fsys to dst (created or truncated, with Mode): the files that
// ride along into an output or work directory unchanged (tokenizer, config, README).
func CopyFile(fsys fs.FS, name, dst string) error {
	in, err := fsys.Open(name)
	if err != nil {
		return fmt.Errorf("copying %s: %w", name, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, Mode)
	if err != nil {
		return fmt.Errorf("copying %s: %w", name, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s to %s: %w", name, dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copying %s to %s: %w", name, dst, err)
	}
	return nil
}
