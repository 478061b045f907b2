package embedded

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/store"
)

// FileName is the database file inside Config.Dir.
const FileName = "betrace.db"

// dbFormat is written to the meta bucket; a file of a newer format is
// refused rather than misread.
const dbFormat = 1

var (
	bucketMeta        = []byte("meta")
	bucketRules       = []byte("rules")
	bucketModules     = []byte("modules")
	bucketViolations  = []byte("violations")
	bucketCounts      = []byte("counts")
	bucketTallyTokens = []byte("tally-tokens")
	keyFormat         = []byte("format")
)

// lockTimeout is how long Open waits for another process to release the
// database file before it gives up.
var lockTimeout = time.Second

var (
	// ErrInUse is returned by Open when another process holds the
	// database file.
	ErrInUse = errors.New("data directory is in use by another betrace process")
	// ErrClosed is returned by every call after Close. It wraps
	// store.ErrUnavailable.
	ErrClosed = fmt.Errorf("store is closed: %w", store.ErrUnavailable)
)

// Store is the embedded store. It is safe for concurrent use.
type Store struct {
	cfg  Config
	now  func() time.Time
	db   *bolt.DB
	path string

	// closeMu is held for reading by every call and for writing by Close,
	// so Close waits for calls in flight and later calls see closed.
	closeMu sync.RWMutex
	closed  bool

	// idxMu guards idx: the writer goroutine holds it for writing while
	// it changes idx, queries hold it for reading.
	idxMu sync.RWMutex
	idx   *index

	appends chan *appendReq
	trims   chan chan error
	stop    chan struct{}
	done    chan struct{}

	trimmed atomic.Uint64
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the store in cfg.Dir, rebuilds the
// violation index, trims violations past retention and starts the
// background writer. now is the clock retention uses; nil means time.Now.
func Open(cfg Config, now func() time.Time) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded: open: %w", err)
	}
	path := filepath.Join(cfg.Dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("embedded: open %s: %w", path, ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", path, store.CheckFull(err))
	}
	s := &Store{
		cfg:     cfg,
		now:     now,
		db:      db,
		path:    path,
		appends: make(chan *appendReq, 1024),
		trims:   make(chan chan error),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	for {
		more, err := s.commit(nil, openTrimBatch)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("embedded: open %s: trim: %w", path, err)
		}
		if !more {
			break
		}
	}
	go s.run()
	return s, nil
}

// init creates the buckets, checks the format and builds the index.
func (s *Store) init() error {
	err := s.update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketRules, bucketModules, bucketViolations, bucketCounts, bucketTallyTokens} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keyFormat); {
		case v == nil:
			return meta.Put(keyFormat, []byte{dbFormat})
		case len(v) != 1:
			return fmt.Errorf("%w: bad format marker", store.ErrCorrupt)
		case v[0] > dbFormat:
			return fmt.Errorf("written by a newer betrace (format %d, this build reads %d)", v[0], dbFormat)
		}
		return nil
	})
	if err != nil {
		return err
	}
	idx := &index{}
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketViolations).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			ts, id, ok := splitKey(k)
			if !ok {
				return fmt.Errorf("%w: violation key %x is too short", store.ErrCorrupt, k)
			}
			h, err := decodeHeader(v)
			if err != nil {
				return fmt.Errorf("%w: violation %q: %v", store.ErrCorrupt, id, err)
			}
			e := idx.makeEntry(ts, bytes.Clone(id), string(h.severity), string(h.ruleID), string(h.traceID))
			idx.upsert(&e)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rebuild violation index: %w", err)
	}
	s.idx = idx
	return nil
}

// enter starts a call: it fails once the store is closed or ctx is done.
// The caller must call the returned function when it is finished.
func (s *Store) enter(ctx context.Context, op string) (func(), error) {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return nil, fmt.Errorf("embedded: %s: %w", op, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		s.closeMu.RUnlock()
		return nil, fmt.Errorf("embedded: %s: %w", op, err)
	}
	return s.closeMu.RUnlock, nil
}

// Ping reports whether the database is open and readable.
func (s *Store) Ping(ctx context.Context) error {
	exit, err := s.enter(ctx, "ping")
	if err != nil {
		return err
	}
	defer exit()
	err = s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRules) == nil {
			return fmt.Errorf("%w: rules bucket is missing", store.ErrCorrupt)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("embedded: ping: %w", err)
	}
	return nil
}

// Close waits for calls in flight, writes what the writer still holds,
// stops it and closes the database. It is idempotent.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.stop)
	<-s.done
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("embedded: close: %w", err)
	}
	return nil
}

// Trimmed is how many violations retention has removed since Open,
// including those removed by Open itself.
func (s *Store) Trimmed() uint64 { return s.trimmed.Load() }

// ViolationCount is how many violations are stored now.
func (s *Store) ViolationCount() int {
	s.idxMu.RLock()
	defer s.idxMu.RUnlock()
	return s.idx.n
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// --- rules ---

func ruleOp(verb, id string) string { return fmt.Sprintf("%s rule %q", verb, id) }

// ListRules returns every rule, ordered by ID.
func (s *Store) ListRules(ctx context.Context) ([]rules.Record, error) {
	exit, err := s.enter(ctx, "list rules")
	if err != nil {
		return nil, err
	}
	defer exit()
	out := []rules.Record{}
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRules).ForEach(func(k, v []byte) error {
			var r rules.Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("rule %q: %w: %v", k, store.ErrCorrupt, err)
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("embedded: list rules: %w", err)
	}
	return out, nil
}

// Rule returns one rule or store.ErrNotFound.
func (s *Store) Rule(ctx context.Context, id string) (rules.Record, error) {
	op := ruleOp("get", id)
	exit, err := s.enter(ctx, op)
	if err != nil {
		return rules.Record{}, err
	}
	defer exit()
	var r rules.Record
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRules).Get([]byte(id))
		if v == nil {
			return store.ErrNotFound
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("%w: %v", store.ErrCorrupt, err)
		}
		return nil
	})
	if err != nil {
		return rules.Record{}, fmt.Errorf("embedded: %s: %w", op, err)
	}
	return r, nil
}

// CreateRule stores a new rule as given, or returns store.ErrExists.
func (s *Store) CreateRule(ctx context.Context, r rules.Record) error {
	op := ruleOp("create", r.ID)
	exit, err := s.enter(ctx, op)
	if err != nil {
		return err
	}
	defer exit()
	if err := rules.ValidateID(r.ID); err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	val, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRules)
		if b.Get([]byte(r.ID)) != nil {
			return store.ErrExists
		}
		return b.Put([]byte(r.ID), val)
	})
	if err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	return nil
}

// UpdateRule replaces a rule whose stored Revision is r.Revision-1:
// store.ErrNotFound if it is gone, store.ErrConflict if it moved.
func (s *Store) UpdateRule(ctx context.Context, r rules.Record) error {
	op := ruleOp("update", r.ID)
	exit, err := s.enter(ctx, op)
	if err != nil {
		return err
	}
	defer exit()
	val, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRules)
		old := b.Get([]byte(r.ID))
		if old == nil {
			return store.ErrNotFound
		}
		var cur struct {
			Revision int64 `json:"revision"`
		}
		if err := json.Unmarshal(old, &cur); err != nil {
			return fmt.Errorf("%w: %v", store.ErrCorrupt, err)
		}
		if cur.Revision != r.Revision-1 {
			return fmt.Errorf("%w: stored revision is %d, this update is revision %d", store.ErrConflict, cur.Revision, r.Revision)
		}
		return b.Put([]byte(r.ID), val)
	})
	if err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	return nil
}

// DeleteRule removes a rule (not its modules) or returns store.ErrNotFound.
func (s *Store) DeleteRule(ctx context.Context, id string) error {
	op := ruleOp("delete", id)
	exit, err := s.enter(ctx, op)
	if err != nil {
		return err
	}
	defer exit()
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRules)
		if b.Get([]byte(id)) == nil {
			return store.ErrNotFound
		}
		return b.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	return nil
}

// --- modules ---

// normalizeSHA lower-cases a hex sha256 and checks its form.
func normalizeSHA(sha string) (string, error) {
	sha = strings.ToLower(sha)
	if len(sha) != 2*sha256.Size {
		return sha, fmt.Errorf("sha256 must be %d hex digits", 2*sha256.Size)
	}
	if _, err := hex.DecodeString(sha); err != nil {
		return sha, fmt.Errorf("sha256 must be %d hex digits", 2*sha256.Size)
	}
	return sha, nil
}

// PutModule stores module bytes under their sha256 (hex), after checking
// that they hash to it. Storing the same bytes again is a no-op; storing
// them over a corrupted copy repairs it.
func (s *Store) PutModule(ctx context.Context, sha string, module []byte) error {
	op := fmt.Sprintf("put module %s", sha)
	exit, err := s.enter(ctx, op)
	if err != nil {
		return err
	}
	defer exit()
	sha, err = normalizeSHA(sha)
	if err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	sum := sha256.Sum256(module)
	if got := hex.EncodeToString(sum[:]); got != sha {
		return fmt.Errorf("embedded: %s: digest mismatch: the bytes hash to %s", op, got)
	}
	same := false
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketModules).Get([]byte(sha))
		same = v != nil && bytes.Equal(v, module)
		return nil
	})
	if err == nil && !same {
		err = s.update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketModules).Put([]byte(sha), module)
		})
	}
	if err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	return nil
}

// Module returns the bytes stored under sha, verifying their digest:
// store.ErrCorrupt on mismatch, store.ErrNotFound if absent.
func (s *Store) Module(ctx context.Context, sha string) ([]byte, error) {
	op := fmt.Sprintf("get module %s", sha)
	exit, err := s.enter(ctx, op)
	if err != nil {
		return nil, err
	}
	defer exit()
	sha, err = normalizeSHA(sha)
	if err != nil {
		return nil, fmt.Errorf("embedded: %s: %w", op, err)
	}
	var out []byte
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketModules).Get([]byte(sha))
		if v == nil {
			return store.ErrNotFound
		}
		out = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("embedded: %s: %w", op, err)
	}
	sum := sha256.Sum256(out)
	if got := hex.EncodeToString(sum[:]); got != sha {
		return nil, fmt.Errorf("embedded: %s: %w: the stored bytes hash to %s", op, store.ErrCorrupt, got)
	}
	return out, nil
}

// update runs fn in a write transaction. A write refused for lack of space
// comes back wrapping store.ErrFull: bbolt rolls the transaction back, so
// the same write can be retried once space is freed.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	return store.CheckFull(s.db.Update(fn))
}
