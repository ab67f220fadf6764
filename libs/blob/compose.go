package blob

// S3 multipart limits that Compose plans around.
const (
	minPartSize  = 5 << 20  // every part but the last must be at least this big
	maxCopySize  = 5 << 30  // largest single part (and largest UploadPartCopy source range)
	maxParts     = 10000    // most parts in one upload
	maxGlueBytes = 64 << 20 // flush an in-memory part once it reaches this size
)

// segment is a resolved compose part: inline data, or n bytes of key at off.
type segment struct {
	data []byte
	key  string
	off  int64
	n    int64
}

func (s segment) size() int64 {
	if s.data != nil {
		return int64(len(s.data))
	}
	return s.n
}

// plannedPart is one part of the multipart upload: a server-side copy of a source range, or bytes
// uploaded from memory, gathered from inline data and downloaded source ranges.
type plannedPart struct {
	copy   bool
	src    segment   // when copy
	pieces []segment // when !copy, concatenated in order
	size   int64
}

// planCompose turns segments into multipart parts so that every part except the last has at least
// minPart bytes and no copy exceeds maxCopy. Source ranges of at least minPart bytes become
// server-side copies; smaller ones are downloaded and merged with their neighbours (a "glue" part).
// When a glue part is still short before a large source range, it borrows the range's first bytes.
func planCompose(segs []segment, minPart, maxCopy, maxGlue int64) []plannedPart {
	rest := make([]int64, len(segs)+1) // rest[i]: bytes in segs[i:]
	for i := len(segs) - 1; i >= 0; i-- {
		rest[i] = rest[i+1] + segs[i].size()
	}
	var out []plannedPart
	var cur plannedPart
	flush := func() {
		if cur.size > 0 {
			out = append(out, cur)
		}
		cur = plannedPart{}
	}
	add := func(s segment) {
		cur.pieces = append(cur.pieces, s)
		cur.size += s.size()
	}
	for i, s := range segs {
		if s.size() == 0 {
			continue
		}
		last := rest[i+1] == 0 // nothing follows this segment
		if s.data != nil {
			add(s)
			if cur.size >= maxGlue {
				flush()
			}
			continue
		}
		if cur.size > 0 && cur.size < minPart {
			need := minPart - cur.size
			if s.n-need >= minPart || (last && s.n > need) {
				add(segment{key: s.key, off: s.off, n: need})
				s.off += need
				s.n -= need
				flush()
			} else {
				add(s)
				if cur.size >= maxGlue {
					flush()
				}
				continue
			}
		} else if cur.size > 0 {
			flush()
		}
		if s.n >= minPart || last {
			k := (s.n + maxCopy - 1) / maxCopy
			chunk := (s.n + k - 1) / k
			for off, end := s.off, s.off+s.n; off < end; off += chunk {
				n := min(chunk, end-off)
				out = append(out, plannedPart{copy: true, src: segment{key: s.key, off: off, n: n}, size: n})
			}
			continue
		}
		add(s)
	}
	flush()
	return out
}
