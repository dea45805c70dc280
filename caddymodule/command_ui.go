package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"

	"github.com/caddy-apikey/caddy-apikey/adminapi"
)

// cliUICommand is caddy apikey ui.
func cliUICommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ui [--listen <host:port>] [--open]",
		Short: "Serves the operator's API Keys page on a local address, proxying the admin endpoint",
		Long: `Serves the operator's API Keys page (the admin endpoint's /apikey/ui/) on a
loopback address, and prints its URL (--open opens it in the browser).

Caddy's admin endpoint refuses a browser's request that names no origin,
which is what typing its URL sends, so a browser cannot open the page there
directly. This command listens on 127.0.0.1 (a free port, or --listen,
which must be a loopback address) and forwards the page's requests to the
admin endpoint (found as by the other apikey commands: --address, or
--config) as caddy apikey's own requests do. It forwards nothing but the
page (/apikey/ui/...), only from this machine, only for a Host header of
its own address (so a DNS-rebinding site cannot reach it) and only from
its own origin (cross-site requests are refused). It runs until
interrupted (Ctrl+C).`,
		Args: cobra.NoArgs,
		RunE: cliRunE(cliUI),
	}
	cmd.Flags().String("listen", "127.0.0.1:0", "Loopback address to serve the page on (port 0: a free one)")
	cmd.Flags().Bool("open", false, "Open the page in the browser")
	return cmd
}

func cliUI(c *cli, _ []string) error {
	listen, _ := c.cmd.Flags().GetString("listen")
	open, _ := c.cmd.Flags().GetBool("open")
	if err := cliLoopbackListen(listen); err != nil {
		return err
	}
	if err := c.findAdmin(); err != nil {
		return err
	}
	// Fail now, not in the browser, if Caddy or its page is not there.
	if _, err := c.call(http.MethodGet, uiPrefix, nil); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %v", listen, err)
	}
	p, err := newUIProxy(c.addr, ln.Addr().(*net.TCPAddr))
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	page := "http://" + ln.Addr().String() + uiPrefix
	fmt.Fprintf(c.out, "The API Keys page: %s\n(the admin endpoint at %s, for this machine only; Ctrl+C stops it)\n", page, c.addr)
	if open {
		if err := cliOpenBrowser(page); err != nil {
			fmt.Fprintf(c.cmd.ErrOrStderr(), "Could not open a browser (%v): open %s\n", err, page)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// uiPrefix is the operator's page on the admin endpoint.
const uiPrefix = "/apikey/ui/"

// cliLoopbackListen refuses a --listen that is not a loopback address:
// the page acts as the operator for anyone who can reach it.
func cliLoopbackListen(listen string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %v (write host:port, such as 127.0.0.1:0)", listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--listen %s: not a loopback address (127.0.0.1 or [::1]): the page acts as Caddy's operator for anyone who reaches it", listen)
	}
	return nil
}

// uiProxy forwards the operator's page from a loopback address to Caddy's
// admin endpoint.
type uiProxy struct {
	// hosts are the Host headers it answers: its own address, by IP or
	// as localhost.
	hosts map[string]bool
	// origins are the Origin headers it accepts: the same, over http.
	origins map[string]bool
	// cop refuses cross-origin state-changing requests.
	cop   *http.CrossOriginProtection
	proxy *httputil.ReverseProxy
}

// Interface guard.
var _ http.Handler = (*uiProxy)(nil)

// uiMaxBody bounds a request's body (the page's requests are small JSON).
const uiMaxBody = 1 << 20

func newUIProxy(adminAddr string, self *net.TCPAddr) (*uiProxy, error) {
	na, err := caddy.ParseNetworkAddress(adminAddr)
	if err != nil || na.PortRangeSize() > 1 {
		return nil, fmt.Errorf("invalid admin address %s: %v", adminAddr, err)
	}
	// As caddycmd.AdminAPIRequest: a TCP admin endpoint gets its own
	// origin (it checks Host and Origin); a Unix socket or file
	// descriptor, which checks neither, gets a placeholder host and no
	// origin.
	host, origin := na.JoinHostPort(0), ""
	dial := na.JoinHostPort(0)
	switch {
	case na.IsUnixNetwork():
		host = "127.0.0.1"
		dial = strings.SplitN(na.Host, "|", 2)[0] // without the socket's permission bits
	case na.IsFdNetwork():
		host = "127.0.0.1"
	default:
		origin = "http://" + host
	}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, na.Network, dial)
		},
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	port := fmt.Sprint(self.Port)
	p := &uiProxy{
		hosts:   map[string]bool{net.JoinHostPort(self.IP.String(), port): true, net.JoinHostPort("localhost", port): true},
		origins: map[string]bool{},
		cop:     http.NewCrossOriginProtection(),
	}
	for h := range p.hosts {
		p.origins["http://"+h] = true
	}
	p.proxy = &httputil.ReverseProxy{
		Transport: transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.Out
			out.URL.Scheme, out.URL.Host, out.Host = "http", host, host
			out.URL.Path, out.URL.RawPath = pr.In.URL.Path, ""
			// A request of caddy apikey, not of a browser: the browser's
			// origin was checked here, against this proxy's address.
			for _, h := range []string{"Origin", "Referer", "Cookie", "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Sec-Fetch-User"} {
				out.Header.Del(h)
			}
			if origin != "" {
				out.Header.Set("Origin", origin)
			}
		},
		ModifyResponse: func(res *http.Response) error {
			// The admin endpoint's CORS answer names its own origin: the
			// browser talks to this one.
			for _, h := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers"} {
				res.Header.Del(h)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			adminapi.WriteError(w, http.StatusBadGateway, "admin_unreachable", "cannot reach Caddy's admin endpoint at "+adminAddr+": "+err.Error())
		},
	}
	return p, nil
}

func (p *uiProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if ip, _, _ := net.SplitHostPort(r.RemoteAddr); !isLoopbackIP(ip) {
		adminapi.WriteError(w, http.StatusForbidden, "forbidden", "only this machine may use this page")
		return
	}
	if !p.hosts[strings.ToLower(r.Host)] {
		// DNS rebinding: another name that resolves to this address.
		adminapi.WriteError(w, http.StatusForbidden, "host_not_allowed", "host not allowed: "+r.Host)
		return
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none": // none: typed, or a bookmark
	default:
		adminapi.WriteError(w, http.StatusForbidden, "cross_origin", "cross-origin requests are refused")
		return
	}
	if o, ok := r.Header["Origin"]; ok && (len(o) != 1 || !p.origins[strings.ToLower(o[0])]) {
		adminapi.WriteError(w, http.StatusForbidden, "cross_origin", "origin not allowed")
		return
	}
	if ref := r.Header.Get("Referer"); ref != "" && !p.sameOrigin(ref) {
		adminapi.WriteError(w, http.StatusForbidden, "cross_origin", "referer not allowed")
		return
	}
	if err := p.cop.Check(r); err != nil {
		adminapi.WriteError(w, http.StatusForbidden, "cross_origin", err.Error())
		return
	}
	if strings.Contains(strings.ToLower(r.Header.Get("Upgrade")), "websocket") {
		adminapi.WriteError(w, http.StatusBadRequest, "bad_request", "WebSocket connections are not allowed")
		return
	}
	switch {
	case r.URL.Path == "/" || r.URL.Path == strings.TrimSuffix(uiPrefix, "/"):
		http.Redirect(w, r, uiPrefix, http.StatusFound)
		return
	case !strings.HasPrefix(r.URL.Path, uiPrefix) || !cleanPath(r.URL.Path):
		adminapi.WriteError(w, http.StatusNotFound, "not_found", "this address serves only the API Keys page, under "+uiPrefix)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, uiMaxBody)
	p.proxy.ServeHTTP(w, r)
}

// sameOrigin reports whether a Referer names this proxy's origin.
func (p *uiProxy) sameOrigin(ref string) bool {
	u, err := url.Parse(ref)
	return err == nil && u.Scheme == "http" && p.hosts[strings.ToLower(u.Host)]
}

// cleanPath reports whether p has no dot segments and no empty segment
// (path.Clean keeps it, but for a trailing slash).
func cleanPath(p string) bool {
	c := path.Clean(p)
	return c == p || c+"/" == p
}

func isLoopbackIP(s string) bool {
	ip := net.ParseIP(s)
	return ip != nil && ip.IsLoopback()
}

// cliOpenBrowser opens url in the desktop's browser.
func cliOpenBrowser(url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.Command("xdg-open", url)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	return nil
}
