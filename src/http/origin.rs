//! Admin requests only from the admin listener's own origin (README, *Operations*): the
//! checks that keep a web page in an operator's browser from driving the admin API.
//!
//! Two attacks, two checks, both answered 403 before anything else of the request is read:
//! - **DNS rebinding**: a page on `evil.example` has its name re-resolved to 127.0.0.1 and
//!   then reads the admin listener's answers as its own origin. Its requests carry
//!   `Host: evil.example:PORT`, so every request on a TCP admin listener must name the
//!   listener in `Host`: its bound address, and when bound to loopback or to a wildcard
//!   address `localhost` and the loopback addresses (`127.0.0.1`, `[::1]`); when bound to
//!   a wildcard, any IP address (the listener answers on all of them, and an address
//!   literal cannot be rebound; as an origin, only the request's own `Host` or loopback).
//!   The port in `Host` is not compared: an SSH tunnel or a port forward changes it
//!   (`ssh -L 9000:127.0.0.1:3051`, then `curl localhost:9000`), and rebinding needs a
//!   name, not a port. Names
//!   in `GWAR_ADMIN_HOSTS` pass too (`host`: on any port; `host:port`: on that one). A
//!   request without `Host` (HTTP/1.0; HTTP/1.1 requires it and gets 400) names nothing
//!   and is refused too (no browser omits it, and curl always sends one).
//! - **Cross-site request forgery**: a page anywhere makes the browser send a `POST` or a
//!   form to `http://127.0.0.1:3051/admin/save`. The browser says where the page came
//!   from in `Origin` (or, from older code paths, only in `Referer`): a state-changing
//!   request (any method but `GET` and `HEAD`) whose `Origin`, or without one `Referer`,
//!   is present and is not the listener's own origin is refused (sent twice: refused
//!   when either value is foreign). Own means: the same
//!   authority as the request's `Host` (the page was served where the request goes), a
//!   name of the listener as above with the port exact (a scheme's default port when the
//!   origin names none: another site on `localhost:8080` is another origin), or a name in
//!   `GWAR_ADMIN_HOSTS`. `Origin: null` (a sandboxed frame, a `file:` page) is foreign.
//!   curl and scripts send neither header and are not affected.
//!
//! On a Unix-socket admin listener `Host` is not checked: no browser connects to a Unix
//! socket, so rebinding cannot reach it, and curl sends `Host: localhost`, other clients
//! whatever their URL says. The `Origin` rule holds there too (own: the request's `Host`
//! or a name in `GWAR_ADMIN_HOSTS`), which is what protects a socket put behind a reverse
//! proxy; such a proxy should check `Host` itself.
//!
//! No CORS header is ever sent, so a browser never lets another origin read an answer; a
//! preflight (`OPTIONS`) finds no route that takes it (405, or 403 with a foreign origin).

use std::net::{IpAddr, SocketAddr};

use super::error::ApiError;
use super::message::{Listener, Request};
use crate::settings::AdminHost;

/// Which requests the admin listener takes, by the names they carry.
#[derive(Clone, Debug)]
pub struct AdminOrigin {
    /// The TCP address the listener is bound to; `None` for a Unix socket.
    bound: Option<SocketAddr>,
    /// `GWAR_ADMIN_HOSTS`.
    extra: Vec<AdminHost>,
}

impl AdminOrigin {
    /// The rules for `listener` (after binding, so that port 0 is the real port), with the
    /// extra names of `GWAR_ADMIN_HOSTS`.
    pub fn for_listener(listener: &Listener, extra: Vec<AdminHost>) -> std::io::Result<Self> {
        let bound = match listener {
            Listener::Tcp(tcp) => Some(tcp.local_addr()?),
            Listener::Unix(_) => None,
        };
        Ok(AdminOrigin { bound, extra })
    }

    /// The rules of a TCP listener bound to `bound`.
    #[cfg(test)]
    pub fn tcp(bound: SocketAddr, extra: Vec<AdminHost>) -> Self {
        AdminOrigin {
            bound: Some(bound),
            extra,
        }
    }

    /// Refuses (403) a request that names a foreign host or comes from a foreign origin.
    pub(super) fn check(&self, request: &Request) -> Result<(), ApiError> {
        let host = request.header("host");
        if let Some(bound) = self.bound {
            // Without a Host (HTTP/1.0 allows it) there is no name to check: refused too,
            // so that every call on a TCP listener names it (curl always sends one).
            let host = host.unwrap_or_default();
            let named = AdminHost::parse(host).ok();
            if !named.is_some_and(|named| self.names_listener(bound, &named, None)) {
                return Err(ApiError::new(
                    403,
                    format!(
                        "admin call: Host {host:?} is not a name of this admin listener \
                         ({bound}); add it to GWAR_ADMIN_HOSTS if it is"
                    ),
                ));
            }
        }
        if request.method == "GET" {
            return Ok(());
        }
        // Every value counts (a header sent twice is judged by its worst): Origin's, or
        // without any, Referer's.
        let values = |name: &'static str| {
            request
                .headers
                .iter()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
                .map(move |(_, v)| (name, v.as_str()))
        };
        let mut sent = values("Origin").peekable();
        let sent: Vec<(&str, &str)> = match sent.peek() {
            Some(_) => sent.collect(),
            None => values("Referer").collect(),
        };
        match sent
            .into_iter()
            .find(|(_, value)| !self.own_origin(value, host))
        {
            None => Ok(()),
            Some((header, value)) => Err(ApiError::new(
                403,
                format!(
                    "admin call: {header} {value:?} is not this admin listener's own origin; \
                     state-changing admin calls are not taken from other sites"
                ),
            )),
        }
    }

    /// Whether `url` (an `Origin`, or a `Referer`) is of the listener's own origin; `host`
    /// is the request's `Host`.
    fn own_origin(&self, url: &str, host: Option<&str>) -> bool {
        let Some((scheme, rest)) = url.split_once("://") else {
            return false;
        };
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let Ok(named) = AdminHost::parse(authority) else {
            return false;
        };
        if host.is_some_and(|host| host.eq_ignore_ascii_case(authority)) {
            return true;
        }
        match self.bound {
            Some(bound) => self.names_listener(bound, &named, Some(default_port)),
            None => self.extra.iter().any(|extra| matches_extra(extra, &named)),
        }
    }

    /// Whether `named` is one of the listener's names. `default_port`: `None` for a `Host`
    /// (any port passes), the scheme's port for an origin (the port must then be exact).
    fn names_listener(
        &self,
        bound: SocketAddr,
        named: &AdminHost,
        default_port: Option<u16>,
    ) -> bool {
        if self.extra.iter().any(|extra| matches_extra(extra, named)) {
            return true;
        }
        // A `Host`'s port is not compared: an SSH tunnel or a port forward changes it, and
        // what the check guards against (rebinding) needs a name, not a port.
        let port_fits = match default_port {
            None => true,
            Some(default) => named.port.unwrap_or(default) == bound.port(),
        };
        let ip = bound.ip().to_canonical();
        let local = ip.is_loopback() || ip.is_unspecified();
        let host_fits = match literal_ip(&named.host) {
            // Any address for `Host` on a wildcard; an origin must be one of ours by
            // itself (another machine's page on the same port is another site).
            Some(named_ip) => {
                named_ip == ip
                    || (local && named_ip.is_loopback())
                    || (ip.is_unspecified() && default_port.is_none())
            }
            None => local && named.host == "localhost",
        };
        port_fits && host_fits
    }
}

/// A `GWAR_ADMIN_HOSTS` entry naming `named`: the same host, and the same port if the
/// entry names one.
fn matches_extra(extra: &AdminHost, named: &AdminHost) -> bool {
    extra.host == named.host && (extra.port.is_none() || extra.port == named.port)
}

/// The IP address a host names literally (`10.0.0.5`, `[::1]`), canonical (an IPv4-mapped
/// IPv6 address as IPv4).
fn literal_ip(host: &str) -> Option<IpAddr> {
    let text = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.to_owned(),
            path: "/admin/save".to_owned(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    fn origin(bound: &str, extra: &str) -> AdminOrigin {
        let extra = extra
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| AdminHost::parse(e).unwrap())
            .collect();
        AdminOrigin::tcp(bound.parse().unwrap(), extra)
    }

    fn host_passes(rules: &AdminOrigin, host: &str) -> bool {
        rules.check(&request("GET", &[("Host", host)])).is_ok()
    }

    #[test]
    fn a_loopback_listener_answers_to_its_loopback_names_on_any_port() {
        let rules = origin("127.0.0.1:3051", "");
        for good in [
            "127.0.0.1:3051",
            "localhost:3051",
            "LOCALHOST:3051",
            "[::1]:3051",
            "127.0.0.2:3051",
            "localhost",
            "127.0.0.1",
            "localhost:9000",
            "127.0.0.1:80",
        ] {
            assert!(host_passes(&rules, good), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:3051",
            "10.0.0.5:3051",
            "localhost.:3051",
            "127.0.0.1.evil.example:3051",
            "",
            "localhost:3051, evil.example",
            "user@localhost:3051",
        ] {
            assert!(!host_passes(&rules, bad), "{bad}");
        }
        assert!(
            rules.check(&request("POST", &[])).is_err(),
            "HTTP/1.0 without a Host names nothing: refused"
        );
        let own = ("Origin", "http://127.0.0.1:3051");
        let twice = [
            ("Host", "127.0.0.1:3051"),
            own,
            ("Origin", "http://evil.example"),
        ];
        assert!(
            rules.check(&request("POST", &twice)).is_err(),
            "an Origin sent twice is judged by its foreign value"
        );
        assert!(rules
            .check(&request("POST", &[("Host", "127.0.0.1:3051"), own]))
            .is_ok());
    }

    #[test]
    fn a_listener_on_one_address_answers_to_it_and_a_wildcard_to_every_address() {
        let one = origin("10.0.0.5:3051", "");
        assert!(host_passes(&one, "10.0.0.5:3051"));
        assert!(!host_passes(&one, "localhost:3051"));
        assert!(!host_passes(&one, "127.0.0.1:3051"));
        assert!(!host_passes(&one, "10.0.0.6:3051"));
        let v6 = origin("[fd00::5]:3051", "");
        assert!(host_passes(&v6, "[FD00::5]:3051"));
        assert!(!host_passes(&v6, "[fd00::6]:3051"));
        for wildcard in ["0.0.0.0:3051", "[::]:3051"] {
            let any = origin(wildcard, "");
            for good in ["10.0.0.5:3051", "localhost:3051", "[::1]:3051", "192.0.2.7"] {
                assert!(host_passes(&any, good), "{wildcard} {good}");
            }
            for bad in ["gw.example:3051", "gw.example"] {
                assert!(!host_passes(&any, bad), "{wildcard} {bad}");
            }
        }
    }

    #[test]
    fn admin_hosts_add_names_with_or_without_a_port() {
        let rules = origin("127.0.0.1:3051", "admin.internal,gw.example:8443");
        assert!(host_passes(&rules, "admin.internal:3051"));
        assert!(host_passes(&rules, "Admin.Internal:9999"));
        assert!(host_passes(&rules, "admin.internal"));
        assert!(host_passes(&rules, "gw.example:8443"));
        assert!(!host_passes(&rules, "gw.example:3051"));
        assert!(!host_passes(&rules, "gw.example"));
        assert!(!host_passes(&rules, "other.internal:3051"));
    }

    #[test]
    fn state_changing_requests_from_a_foreign_origin_are_refused() {
        let rules = origin("127.0.0.1:3051", "admin.internal");
        let host = ("Host", "127.0.0.1:3051");
        let call = |method: &str, header: (&str, &str)| {
            rules
                .check(&request(method, &[host, header]))
                .map_err(|e| e.status)
        };
        for own in [
            "http://127.0.0.1:3051",
            "http://localhost:3051",
            "HTTP://LOCALHOST:3051",
            "https://admin.internal",
            "http://admin.internal:8080",
        ] {
            assert_eq!(call("POST", ("Origin", own)), Ok(()), "{own}");
            assert_eq!(
                call("DELETE", ("Referer", &format!("{own}/x?y"))),
                Ok(()),
                "{own}"
            );
        }
        for foreign in [
            "http://evil.example",
            "http://localhost:8080",
            "http://localhost",
            "http://127.0.0.1",
            "null",
            "file://",
            "ftp://127.0.0.1:3051",
            "http://127.0.0.1:3051.evil.example",
            "http://user@127.0.0.1:3051",
            "",
        ] {
            for method in ["POST", "DELETE", "PUT", "OPTIONS"] {
                assert_eq!(
                    call(method, ("Origin", foreign)),
                    Err(403),
                    "{method} {foreign}"
                );
            }
            assert_eq!(call("POST", ("Referer", foreign)), Err(403), "{foreign}");
            assert_eq!(
                call("GET", ("Origin", foreign)),
                Ok(()),
                "reads are not refused"
            );
        }
        // Origin decides when both are sent.
        let both = request(
            "POST",
            &[
                host,
                ("Origin", "http://evil.example"),
                ("Referer", "http://127.0.0.1:3051/"),
            ],
        );
        assert_eq!(rules.check(&both).map_err(|e| e.status), Err(403));
        assert_eq!(
            rules.check(&request("POST", &[host])).map_err(|e| e.status),
            Ok(())
        );
    }

    #[test]
    fn on_a_wildcard_any_address_is_a_host_but_not_an_origin() {
        let rules = origin("0.0.0.0:3051", "");
        let post = |host: &str, origin: &str| {
            rules
                .check(&request("POST", &[("Host", host), ("Origin", origin)]))
                .map_err(|e| e.status)
        };
        assert_eq!(post("10.0.0.5:3051", "http://10.0.0.5:3051"), Ok(()));
        assert_eq!(post("10.0.0.5:3051", "http://localhost:3051"), Ok(()));
        assert_eq!(post("10.0.0.5:3051", "http://10.0.0.9:3051"), Err(403));
    }

    #[test]
    fn a_unix_socket_checks_no_host_but_the_origin_against_it() {
        let rules = AdminOrigin {
            bound: None,
            extra: vec![AdminHost::parse("admin.internal").unwrap()],
        };
        let call =
            |headers: &[(&str, &str)]| rules.check(&request("POST", headers)).map_err(|e| e.status);
        assert_eq!(call(&[("Host", "localhost")]), Ok(()));
        assert_eq!(call(&[("Host", "anything")]), Ok(()));
        assert_eq!(
            call(&[("Host", "localhost"), ("Origin", "http://localhost")]),
            Ok(())
        );
        assert_eq!(
            call(&[("Host", "localhost"), ("Origin", "https://admin.internal")]),
            Ok(())
        );
        assert_eq!(
            call(&[("Host", "localhost"), ("Origin", "http://evil.example")]),
            Err(403)
        );
        assert_eq!(
            call(&[("Host", "localhost"), ("Origin", "http://localhost:8080")]),
            Err(403)
        );
    }
}
