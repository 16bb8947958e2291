package main

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"net/http"
	"slices"

	"github.com/hallpass/hallpass"
)

// cartKey holds the cart in the session: item id → quantity.
const cartKey = "cart"

// maxQty bounds one line of a cart, so that a cart stays small enough for
// any session store, cookies included.
const maxQty = 99

// item is a product of the catalog.
type item struct {
	ID    string
	Name  string
	Price int // cents
	Stock int
}

// PriceText formats the price for a page.
func (i item) PriceText() string { return fmt.Sprintf("€%d.%02d", i.Price/100, i.Price%100) }

// catalog is what the shop sells; newShop stores it with its stock the
// first time.
var catalog = []item{
	{"lamp", "Desk lamp", 3900, 5},
	{"mug", "Enamel mug", 1200, 20},
	{"notebook", "Dot-grid notebook", 950, 12},
	{"plant", "Small cactus", 700, 3},
	{"socks", "Wool socks", 1500, 8},
}

// shop keeps the stock and the signed-in users' saved carts.
type shop struct {
	db *sql.DB
}

func newShop(ctx context.Context, db *sql.DB) (*shop, error) {
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL, stock INTEGER NOT NULL CHECK (stock >= 0))`,
		// A signed-in user's cart outlives the session: it is there on the
		// next device and days later.
		`CREATE TABLE IF NOT EXISTS saved_carts (user_id INTEGER NOT NULL, item TEXT NOT NULL, qty INTEGER NOT NULL, PRIMARY KEY (user_id, item))`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("shop schema: %w", err)
		}
	}
	for _, it := range catalog {
		if _, err := db.ExecContext(ctx, `INSERT INTO items (id, name, price, stock) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
			it.ID, it.Name, it.Price, it.Stock); err != nil {
			return nil, fmt.Errorf("shop catalog: %w", err)
		}
	}
	return &shop{db: db}, nil
}

// items returns the catalog with current stock.
func (sh *shop) items(ctx context.Context) ([]item, error) {
	rows, err := sh.db.QueryContext(ctx, `SELECT id, name, price, stock FROM items ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []item
	for rows.Next() {
		var it item
		if err := rows.Scan(&it.ID, &it.Name, &it.Price, &it.Stock); err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

func known(id string) bool {
	return slices.ContainsFunc(catalog, func(it item) bool { return it.ID == id })
}

// saved returns a user's saved cart.
func (sh *shop) saved(ctx context.Context, userID string) (map[string]int, error) {
	rows, err := sh.db.QueryContext(ctx, `SELECT item, qty FROM saved_carts WHERE user_id = ?`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cart := make(map[string]int)
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		cart[id] = n
	}
	return cart, rows.Err()
}

// save replaces a user's saved cart.
func (sh *shop) save(ctx context.Context, userID string, cart map[string]int) error {
	tx, err := sh.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM saved_carts WHERE user_id = ?`, userID); err != nil {
		return err
	}
	for _, id := range slices.Sorted(maps.Keys(cart)) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO saved_carts (user_id, item, qty) VALUES (?, ?, ?)`, userID, id, cart[id]); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// mergeCart is Config.OnLogin: the guest's cart joins the user's saved
// one (quantities add up, to maxQty), and both the session and the saved
// cart become the merge. A failure aborts the login, which then leaves
// the guest's session as it was.
func (sh *shop) mergeCart(ctx context.Context, s *hallpass.Session) error {
	guest, err := hallpass.Get[map[string]int](s, cartKey)
	if err != nil {
		guest = nil // a damaged cart is not worth refusing a login
	}
	cart, err := sh.saved(ctx, s.UserID())
	if err != nil {
		return fmt.Errorf("saved cart: %w", err)
	}
	for id, n := range guest {
		if known(id) && n > 0 {
			cart[id] = min(cart[id]+n, maxQty)
		}
	}
	if err := sh.save(ctx, s.UserID(), cart); err != nil {
		return fmt.Errorf("save merged cart: %w", err)
	}
	if len(cart) == 0 {
		return s.Delete(cartKey)
	}
	return s.Set(cartKey, cart)
}

type cartLine struct {
	Item item
	Qty  int
}

type cartPage struct {
	Lines []cartLine
	Total string
}

// changeCart handles POST /cart/add and /cart/remove: delta is +1 or -1.
func (a *app) changeCart(delta int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !parseForm(w, r) {
			return
		}
		id := r.PostFormValue("item")
		if !known(id) {
			u, _ := a.currentUser(r)
			a.render(w, r, http.StatusNotFound, "notfound", "Not found", u, "The shop has no such item.")
			return
		}
		s := hallpass.FromRequest(r)
		cart, err := hallpass.Get[map[string]int](s, cartKey)
		if err != nil || cart == nil {
			cart = make(map[string]int)
		}
		switch n := cart[id] + delta; {
		case n <= 0:
			delete(cart, id)
		default:
			cart[id] = min(n, maxQty)
		}
		if err := s.Set(cartKey, cart); err != nil {
			a.serverError(w, r, err)
			return
		}
		if u := s.UserID(); u != "" {
			if err := a.shop.save(r.Context(), u, cart); err != nil {
				a.serverError(w, r, err)
				return
			}
		}
		to := "/"
		if r.PostFormValue("from") == "cart" {
			to = "/cart"
		}
		http.Redirect(w, r, to, http.StatusSeeOther)
	}
}

// showCart handles GET /cart.
func (a *app) showCart(w http.ResponseWriter, r *http.Request) {
	u, err := a.currentUser(r)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	items, err := a.shop.items(r.Context())
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	cart, _ := hallpass.Get[map[string]int](hallpass.FromRequest(r), cartKey)
	var p cartPage
	total := 0
	for _, it := range items {
		if n := cart[it.ID]; n > 0 {
			p.Lines = append(p.Lines, cartLine{Item: it, Qty: n})
			total += n * it.Price
		}
	}
	p.Total = item{Price: total}.PriceText()
	a.render(w, r, http.StatusOK, "cart", "Cart", u, p)
}

// cartCount is how many things the cart holds, for the header.
func cartCount(s *hallpass.Session) int {
	cart, _ := hallpass.Get[map[string]int](s, cartKey)
	n := 0
	for _, q := range cart {
		n += q
	}
	return n
}
