package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// openDB opens the SQLite file that holds both users and sessions,
// creating it readable by its owner only: it holds password hashes and
// session data.
func openDB(path string) (*sql.DB, error) {
	if path == "" || path == ":memory:" {
		// Every pooled connection to :memory: would be a different, empty
		// database.
		return nil, fmt.Errorf("database path %q: want a file path", path)
	}
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	// A file: URI keeps '?', '#' and '%' in the path part of the name. It
	// must be absolute: file://rel.db would name a host "rel.db".
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	// WAL lets page loads read while a login writes; busy_timeout makes a
	// writer wait for another instead of failing at once; immediate
	// transactions take the write lock up front, so two read-then-write
	// transactions cannot fail each other with SQLITE_BUSY. synchronous
	// stays FULL, as sqlitestore asks: a power cut must not undo a
	// committed logout.
	uriPath := filepath.ToSlash(abs)
	if !strings.HasPrefix(uriPath, "/") {
		uriPath = "/" + uriPath // C:/x.db on Windows
	}
	dsn := (&url.URL{Scheme: "file", Path: uriPath}).String() +
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

const usersSchema = `CREATE TABLE IF NOT EXISTS users (
	id            INTEGER PRIMARY KEY,
	username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
	password_hash TEXT NOT NULL,
	created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
) STRICT`

// user is one row of the users table.
type user struct {
	ID           int64
	Username     string
	PasswordHash string
}

// Errors of the users table.
var (
	errNoUser        = errors.New("no such user")
	errUsernameTaken = errors.New("username taken")
)

// users reads and writes the users table.
type users struct{ db *sql.DB }

func newUsers(ctx context.Context, db *sql.DB) (*users, error) {
	if _, err := db.ExecContext(ctx, usersSchema); err != nil {
		return nil, fmt.Errorf("create users table: %w", err)
	}
	return &users{db: db}, nil
}

// Create adds a user and returns its id, or errUsernameTaken if the name
// is in use, whatever its case.
func (u *users) Create(ctx context.Context, username, passwordHash string) (int64, error) {
	var id int64
	err := u.db.QueryRowContext(ctx,
		`INSERT INTO users (username, password_hash) VALUES (?, ?) RETURNING id`,
		username, passwordHash).Scan(&id)
	// Checking for the name first would race with a concurrent signup;
	// the UNIQUE constraint is the one place that cannot.
	if se := (*sqlite.Error)(nil); errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE {
		return 0, errUsernameTaken
	}
	if err != nil {
		return 0, fmt.Errorf("create user: %w", err)
	}
	return id, nil
}

// ByName returns the user called username, ignoring case, or errNoUser.
func (u *users) ByName(ctx context.Context, username string) (*user, error) {
	return u.one(ctx, `SELECT id, username, password_hash FROM users WHERE username = ?`, username)
}

// ByID returns the user with id, or errNoUser.
func (u *users) ByID(ctx context.Context, id int64) (*user, error) {
	return u.one(ctx, `SELECT id, username, password_hash FROM users WHERE id = ?`, id)
}

// SetPassword replaces the password hash of user id, or returns errNoUser.
func (u *users) SetPassword(ctx context.Context, id int64, passwordHash string) error {
	res, err := u.db.ExecContext(ctx, `UPDATE users SET password_hash = ? WHERE id = ?`, passwordHash, id)
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	if n == 0 {
		return errNoUser
	}
	return nil
}

func (u *users) one(ctx context.Context, query string, arg any) (*user, error) {
	var r user
	err := u.db.QueryRowContext(ctx, query, arg).Scan(&r.ID, &r.Username, &r.PasswordHash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNoUser
	}
	if err != nil {
		return nil, fmt.Errorf("load user: %w", err)
	}
	return &r, nil
}
