module github.com/hallpass/hallpass/bench

go 1.26.0

replace github.com/hallpass/hallpass => ../

require (
	github.com/alexedwards/scs/v2 v2.9.0
	github.com/gorilla/sessions v1.4.0
	github.com/hallpass/hallpass v0.0.0-00010101000000-000000000000
)

require github.com/gorilla/securecookie v1.1.2 // indirect
