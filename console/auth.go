package console

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// Who may change anything. With a token (--console-token), every write
// action must carry it: no exception for loopback, so that a proxy on the
// same host does not turn into a way round it. Without one, write actions
// are allowed only on requests that arrive on a loopback address and name
// a loopback host (a page of another site that a DNS name pointed at
// 127.0.0.1 cannot pass), and the console is read-only to everyone else.
//
// Cross-site requests: every write form carries the console's CSRF secret,
// which only a page read from the console has (no other origin can read
// one), and a request whose Origin or Sec-Fetch-Site says it comes from
// another site is refused before anything else. Both secrets are compared
// in constant time.

// Form fields and header of write actions.
const (
	fieldCSRF   = "csrf"
	fieldToken  = "token"
	headerToken = "X-Orderly-Console-Token"
)

// writeMode says how the page should present write actions.
type writeMode int

const (
	writeRefused  writeMode = iota // read-only: no token set, not loopback
	writeLoopback                  // allowed: no token set, loopback
	writeToken                     // allowed with the token
)

func (c *Console) mode(r *http.Request) writeMode {
	switch {
	case c.cfg.Token != "":
		return writeToken
	case loopbackRequest(r):
		return writeLoopback
	}
	return writeRefused
}

// loopbackRequest: the connection arrived on a loopback address, and the
// Host it names is a loopback address or localhost.
func loopbackRequest(r *http.Request) bool {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		return false
	}
	ap, err := netip.ParseAddrPort(local.String())
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// sameOrigin refuses what a browser says came from another site.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// write wraps a write action with the checks above; it refuses with 403
// and a page that says why.
func (c *Console) write(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 256<<10)
		if err := r.ParseForm(); err != nil {
			c.fail(w, r, http.StatusBadRequest, "Bad request", "The form could not be read: "+err.Error())
			return
		}
		if !sameOrigin(r) {
			c.fail(w, r, http.StatusForbidden, "Refused: cross-site request",
				"This request came from another site (its Origin or Sec-Fetch-Site header says so). The console takes write actions only from its own pages.")
			return
		}
		mode := c.mode(r)
		if mode == writeRefused {
			c.fail(w, r, http.StatusForbidden, "Refused: the console is read-only here",
				"Write actions need a console token: start the worker with --console-token (or ORDERLY_CONSOLE_TOKEN) and give it in the form. Without a token, only requests to a loopback address (127.0.0.1, ::1, localhost) may change anything.")
			return
		}
		if !equal(r.PostFormValue(fieldCSRF), c.csrf) {
			c.fail(w, r, http.StatusForbidden, "Refused: stale or foreign form",
				"This form does not carry the console's current form key: it comes from another site, or from a page shown before the worker restarted. Reload the page and try again.")
			return
		}
		if mode == writeToken {
			given := r.PostFormValue(fieldToken)
			if given == "" {
				given = r.Header.Get(headerToken)
			}
			if given == "" {
				c.fail(w, r, http.StatusForbidden, "Refused: console token missing",
					"Write actions on this console need its token (--console-token, or ORDERLY_CONSOLE_TOKEN). Enter it in the form's token field.")
				return
			}
			if !equal(given, c.cfg.Token) {
				c.fail(w, r, http.StatusForbidden, "Refused: wrong console token",
					"The token given is not this console's token (--console-token, or ORDERLY_CONSOLE_TOKEN).")
				return
			}
		}
		h(w, r)
	})
}
