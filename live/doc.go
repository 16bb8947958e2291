// Package live keeps open pages in step with their hallpass session: a
// small script warns before the idle timeout and offers to stay signed
// in, keeps the tabs of one browser in agreement, and leaves the page at
// once when the session ends on another device; a server-sent events
// handler tells it so.
//
// # Mounting
//
// A Hub learns of ends from the Manager's events, so it is made first:
//
//	store := memstore.New(nil)
//	bc, _ := hallpass.Store(store).(hallpass.Broadcaster) // nil unless the store can broadcast
//	hub := live.NewHub(bc, nil)
//	defer hub.Close()
//	m, err := hallpass.New(hallpass.Config{
//		Store:  store,
//		Events: hallpass.Sinks{hallpass.SlogSink{}, hub},
//	})
//	...
//	mux.Handle("GET /hallpass-live.js", live.Script())
//	mux.Handle("GET /session", m.StatusHandler())         // never extends
//	mux.Handle("POST /session/extend", m.ExtendHandler()) // behind csrf, like any POST
//	mux.Handle("GET /session/events", hub.Handler(m))
//	http.ListenAndServe(addr, m.Handler(csrf.New(nil).Handler(mux)))
//
// Every page of a signed-in user then carries, in its <head>, the CSRF
// token (csrf.MetaTag) and the script, configured by data-attributes:
//
//	<meta name="csrf-token" content="...">
//	<script src="/hallpass-live.js" defer
//		data-status-url="/session"
//		data-extend-url="/session/extend"
//		data-events-url="/session/events"
//		data-login-url="/login"
//		data-warn-before="120"></script>
//
// The values shown are the defaults, except data-events-url: without it
// the script opens no stream and learns of ends elsewhere from its status
// polls only. data-warn-before is in seconds. Mark the sign-out form
// with the attribute data-hallpass-signout, so that its own ended event
// does not race its navigation and the other tabs are told:
//
//	<form method="post" action="/logout" data-hallpass-signout>
//
// Guest pages may carry the script too: it then does nothing but
// reload when another tab signs in.
//
// # What the script does
//
//   - Asks the status URL for the deadlines, with the header
//     Hallpass-Background: 1, so polling never keeps a session alive.
//   - Shortly before the idle deadline, shows a modal <dialog> (class
//     hallpass-dialog, buttons hallpass-stay and hallpass-close; style
//     them as you like). "Stay signed in" POSTs to the extend URL with
//     the token from <meta name="csrf-token"> in X-CSRF-Token. Escape or
//     "Close" dismisses it; doing nothing lets the session expire.
//     Before the absolute deadline, which nothing extends, the dialog
//     only warns.
//   - When the session ended (ended event, or a status that no longer
//     shows the user), goes to the login URL with ?ended=revoked,
//     ?ended=expired or ?ended=logged_out and ?next= the current path
//     (check it with hallpass.SafeNext).
//   - Tells the other tabs of the browser, on BroadcastChannel "hallpass"
//     or, without it, through localStorage "storage" events: an extend
//     updates their deadlines and closes their dialogs, a sign-out or an
//     end sends them to the login URL, a sign-in reloads those showing a
//     guest or another user.
//
// Pages work as before without it, or without JavaScript: the server
// ends sessions whatever the page shows.
//
// # Content Security Policy
//
// The script needs no inline code, eval or inline styles. It needs:
//
//	script-src 'self'   (the script's own URL)
//	connect-src 'self'  (fetch to the status and extend URLs, EventSource)
//
// With default-src 'none', add both. Serve the script from the app's own
// origin.
//
// # Streams
//
// Hub.Handler serves each page one stream (see its documentation). Each
// stream checks on start, on each user-wide end, when the Broadcaster
// may have lost messages, and every Options.CheckInterval, that its
// session is still among the user's live sessions (Manager.UserSessions),
// and ends when the session's deadline passes. Streams hold a connection
// each: prefer HTTP/2, where browsers do not limit connections per host
// to 6, and keep Options.MaxStreams below that limit otherwise.
//
// Sessions in sealed cookies (Config.Sealer) have no server-side list:
// their streams end on events that name their session and at the
// absolute deadline, but not on user-wide ends (RevokeAll): those reach
// the page at its next request.
package live
