package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/pgstore"
	"github.com/hallpass/hallpass/store/redisstore"
	"github.com/hallpass/hallpass/store/sqlitestore"
)

// sessionStore is a hallpass.Store the app must close when it stops.
type sessionStore interface {
	hallpass.Store
	Close() error
}

// openStore opens the session store that spec names: "" (the app's own
// SQLite file, db), the path of another SQLite file, "memory", a
// redis:// or rediss:// URL, or a postgres:// or postgresql:// URL. Users
// always stay in db.
func openStore(ctx context.Context, spec string, db *sql.DB) (sessionStore, error) {
	switch {
	case spec == "":
		return sqlitestore.New(db, nil)
	case spec == "memory":
		return memstore.New(nil), nil
	case strings.HasPrefix(spec, "redis://"), strings.HasPrefix(spec, "rediss://"):
		return redisstore.Open(spec, nil)
	case strings.HasPrefix(spec, "postgres://"), strings.HasPrefix(spec, "postgresql://"):
		return pgstore.Open(ctx, spec, nil)
	case !strings.Contains(spec, "://"):
		// A path: sessions in a SQLite file of their own.
		return sqlitestore.Open(spec, nil)
	}
	return nil, fmt.Errorf("-store %q: want empty (the -db file), a SQLite file path, memory, redis://… or postgres://…", redact(spec))
}

// storeKind names the kind of store spec opens, for metrics labels.
func storeKind(spec string) string {
	switch {
	case spec == "", !strings.Contains(spec, "://") && spec != "memory":
		return "sqlite"
	case spec == "memory":
		return "memory"
	case strings.HasPrefix(spec, "redis"):
		return "redis"
	default:
		return "postgres"
	}
}

// redact hides the password of a store URL, in its user information
// (net/url's Redacted) or as a password query parameter (dropped), so it
// never reaches a log or an error message. A spec that is not a URL
// stays as it is; one that does not parse keeps only its scheme and what
// follows the last "@", less any query.
func redact(spec string) string {
	scheme, rest, ok := strings.Cut(spec, "://")
	if !ok {
		return spec
	}
	u, err := url.Parse(spec)
	if err != nil {
		// Unparsable: keep the scheme and what follows the last "@",
		// without any query.
		rest, _, _ = strings.Cut(rest[strings.LastIndex(rest, "@")+1:], "?")
		return scheme + "://…@" + rest
	}
	if q := u.Query(); q.Has("password") {
		q.Del("password")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
