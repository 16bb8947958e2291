package main

import (
	"cmp"
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

// userColumns are the columns added after the first release, each with
// its definition; newUsers adds those a database lacks.
var userColumns = [][2]string{
	{"email", "TEXT NOT NULL DEFAULT ''"},
	{"mfa_secret", "TEXT NOT NULL DEFAULT ''"}, // base32 TOTP secret; '' if not enrolled
	{"mfa_step", "INTEGER NOT NULL DEFAULT 0"}, // last TOTP time step accepted: a code works once
	{"role", "TEXT NOT NULL DEFAULT ''"},       // "admin" or ''
}

const userSelect = `SELECT id, username, password_hash, email, mfa_secret, role FROM users`

// user is one row of the users table.
type user struct {
	ID           int64
	Username     string
	PasswordHash string
	Email        string
	MFASecret    string
	Role         string
}

// IsAdmin reports whether u may use the admin pages.
func (u *user) IsAdmin() bool { return u != nil && u.Role == "admin" }

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
	for _, c := range userColumns {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('users') WHERE name = ?`, c[0]).Scan(&n); err != nil {
			return nil, fmt.Errorf("users table: %w", err)
		}
		if n == 0 {
			if _, err := db.ExecContext(ctx, `ALTER TABLE users ADD COLUMN `+c[0]+` `+c[1]); err != nil {
				return nil, fmt.Errorf("users table: add %s: %w", c[0], err)
			}
		}
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
	return u.one(ctx, userSelect+` WHERE username = ?`, username)
}

// ByID returns the user with id, or errNoUser.
func (u *users) ByID(ctx context.Context, id int64) (*user, error) {
	return u.one(ctx, userSelect+` WHERE id = ?`, id)
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

// set sets one column of user id, or returns errNoUser.
func (u *users) set(ctx context.Context, id int64, column string, v any) error {
	res, err := u.db.ExecContext(ctx, `UPDATE users SET `+column+` = ? WHERE id = ?`, v, id)
	if err != nil {
		return fmt.Errorf("set %s: %w", column, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return cmp.Or(err, errNoUser)
	}
	return nil
}

// SetMFA enrols user id in TOTP with secret ("" to turn it off).
func (u *users) SetMFA(ctx context.Context, id int64, secret string) error {
	return u.set(ctx, id, "mfa_secret", secret)
}

// SetEmail sets the email address of user id.
func (u *users) SetEmail(ctx context.Context, id int64, email string) error {
	return u.set(ctx, id, "email", email)
}

// MakeAdmin gives the user called username the admin role, if there is
// one, and reports whether there was.
func (u *users) MakeAdmin(ctx context.Context, username string) (bool, error) {
	res, err := u.db.ExecContext(ctx, `UPDATE users SET role = 'admin' WHERE username = ?`, username)
	if err != nil {
		return false, fmt.Errorf("make admin: %w", err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// UseMFAStep records that user id used the TOTP code of time step step,
// and reports false if that step, or a later one, was used already: a
// code works once, even within its 30 seconds.
func (u *users) UseMFAStep(ctx context.Context, id, step int64) (bool, error) {
	res, err := u.db.ExecContext(ctx, `UPDATE users SET mfa_step = ? WHERE id = ? AND mfa_step < ?`, step, id, step)
	if err != nil {
		return false, fmt.Errorf("use TOTP step: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// All returns every user, by name.
func (u *users) All(ctx context.Context) ([]*user, error) {
	rows, err := u.db.QueryContext(ctx, userSelect+` ORDER BY username`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*user
	for rows.Next() {
		var r user
		if err := rows.Scan(&r.ID, &r.Username, &r.PasswordHash, &r.Email, &r.MFASecret, &r.Role); err != nil {
			return nil, err
		}
		out = append(out, &r)
	}
	return out, rows.Err()
}

func (u *users) one(ctx context.Context, query string, arg any) (*user, error) {
	var r user
	err := u.db.QueryRowContext(ctx, query, arg).Scan(&r.ID, &r.Username, &r.PasswordHash, &r.Email, &r.MFASecret, &r.Role)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNoUser
	}
	if err != nil {
		return nil, fmt.Errorf("load user: %w", err)
	}
	return &r, nil
}
