// Package atomicfile writes a file under a temporary name in its final directory and renames it into
// place only once it is complete, so a crash or an error never leaves a half-written file where a
// result is expected.
package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
)

// Mode is the permission of committed files.
const Mode = 0o644

// File is a file being written. Write to it, then Commit, or Abort (safe to defer: it does nothing
// after Commit).
type File struct {
	*os.File
	final     string
	closed    bool
	committed bool
}

// Create starts writing dir/name. dir must exist.
func Create(dir, name string) (*File, error) {
	f, err := os.CreateTemp(dir, "."+name+".*.partial")
	if err != nil {
		return nil, err
	}
	return &File{File: f, final: filepath.Join(dir, name)}, nil
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

// Commit closes the file and renames it to its final path.
func (f *File) Commit() error {
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.TempPath(), Mode); err != nil {
		return err
	}
	if err := os.Rename(f.TempPath(), f.final); err != nil {
		return err
	}
	f.committed = true
	return nil
}

// Abort discards the file unless it was committed.
func (f *File) Abort() {
	if f.committed {
		return
	}
	f.Close()
	os.Remove(f.TempPath())
}
