//! Who this daemon is to the others sharing a database: its [`Identity`] (an owner id
//! unique per process and per engine, the URL it serves players at, its lease), and
//! whether another owner id names a daemon of this host that has certainly exited.
//!
//! No database here: ids are made from the host, its boot, the PID namespace, the
//! process and a random per-process token, and read back the same way. Anything it
//! cannot be sure of counts as alive, so a galaxy is never taken from a live daemon
//! before its lease runs out.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::super::stored_int;

/// Who this daemon is to the others, and the lease it holds its galaxies under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `host:boot:pidns:pid:start-unix-ms:token.n` — the host name, the kernel's boot
    /// id (`-` when it cannot be read), the inode of the PID namespace (`0` likewise),
    /// the process id, when this identity was made, this process's random token and the
    /// identity's number in it: unique per process (and per engine in one process), also
    /// across restarts that reuse a process id, and readable by an operator.
    pub id: String,
    /// Where this daemon serves players (`GWAR_ADVERTISE_URL`).
    pub url: String,
    /// How long a take or a renewal holds a galaxy (`GWAR_OWNERSHIP_LEASE_SECS`).
    pub lease: Duration,
}

/// This process's random token, in every identity it makes: an identity under this
/// process's id without it belonged to an earlier process.
static PROCESS_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Identities this process has made (tests and embedders may run several engines).
static IDENTITIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// This process's token: the process's random hash keys mixed with the clock.
fn process_token() -> &'static str {
    PROCESS_TOKEN.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        hasher.write_u128(now.as_nanos());
        format!("{:016x}", hasher.finish())
    })
}

/// An identity's id, split (see [`Identity::id`]).
#[derive(Debug, PartialEq, Eq)]
struct IdParts<'a> {
    host: &'a str,
    boot: &'a str,
    pidns: &'a str,
    pid: u32,
    /// The process's token (without the identity's number).
    token: &'a str,
}

impl<'a> IdParts<'a> {
    fn parse(id: &'a str) -> Option<IdParts<'a>> {
        let mut parts = id.rsplitn(6, ':');
        let token = parts.next()?.split('.').next()?;
        let _started_ms: u64 = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let pidns = parts.next()?;
        let boot = parts.next()?;
        let host = parts.next()?;
        Some(IdParts {
            host,
            boot,
            pidns,
            pid,
            token,
        })
    }

    /// Same host, same boot of its kernel, same PID namespace — each known: process ids
    /// mean the same to both.
    fn shares_processes_with(&self, other: &IdParts<'_>) -> bool {
        self.boot != "-"
            && self.pidns != "0"
            && (self.host, self.boot, self.pidns) == (other.host, other.boot, other.pidns)
    }
}

impl Identity {
    /// A new identity for this process.
    pub fn new(url: &str, lease: Duration) -> Identity {
        // gethostname(2), not /proc: a unit with `ProcSubset=pid` hides /proc/sys.
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .map(|name| name.trim().replace(':', "_"))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        // Tells two machines (or two boots) apart whatever their host names: random per boot.
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|id| id.trim().replace('-', ""))
            .filter(|id| !id.is_empty() && !id.contains(':'))
            .unwrap_or_else(|| "-".to_owned());
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let started_ms = started.as_millis();
        let number = IDENTITIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Identity {
            id: format!(
                "{host}:{boot}:{}:{}:{started_ms}:{}.{number}",
                pid_namespace(),
                std::process::id(),
                process_token()
            ),
            url: url.to_owned(),
            lease: lease.max(Duration::from_millis(1)),
        }
    }

    /// True when the daemon `owner` (an identity's id) has certainly exited, so its
    /// galaxies may be taken without waiting for its leases (a daemon restarted after a
    /// crash takes back its own galaxies at once): it ran on this host, in this boot of
    /// its kernel, in this PID namespace (all three known), and either its process id is
    /// gone (`kill(pid, 0)` says no such process) or it is this process's and the owner
    /// lacks this process's token. Anything less certain counts as
    /// alive, and the lease decides: another machine, a boot id or namespace that could
    /// not be read (a unit with `ProcSubset=pid`), a process that exists (whoever's:
    /// `EPERM` means alive), an id that does not parse.
    pub(super) fn outlived(&self, owner: &str) -> bool {
        let (Some(mine), Some(theirs)) = (IdParts::parse(&self.id), IdParts::parse(owner)) else {
            return false;
        };
        if owner == self.id || !mine.shares_processes_with(&theirs) {
            return false;
        }
        if theirs.pid == mine.pid {
            // Another engine of this process, or an earlier process under its id.
            return theirs.token != mine.token;
        }
        let Ok(pid) = i32::try_from(theirs.pid) else {
            return false;
        };
        matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
    }

    /// The lease in milliseconds, as the statements take it.
    pub(super) fn lease_ms(&self) -> i64 {
        stored_int(self.lease.as_millis())
    }
}

/// True when the advertised URL `url` names a loopback or unspecified address
/// (`127.0.0.1`, `localhost`, `[::1]`, `0.0.0.0`, `[::]`): fine for daemons on one machine,
/// useless to a daemon on another.
pub(super) fn reachable_only_here(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => rest.split(':').next().unwrap_or(rest),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// The inode of this process's PID namespace (`/proc/self/ns/pid` reads `pid:[N]`), or
/// `0` where there is none to read: process ids mean the same only inside one.
fn pid_namespace() -> u64 {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advertised_loopback_or_unspecified_address_reaches_only_this_machine() {
        for url in [
            "http://127.0.0.1:3050",
            "http://localhost:1",
            "https://[::1]:3050",
            "http://0.0.0.0:3050",
            "http://[::]",
        ] {
            assert!(reachable_only_here(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:3050",
            "https://game.example",
            "http://[fd00::5]:1",
        ] {
            assert!(!reachable_only_here(url), "{url}");
        }
    }

    #[test]
    fn only_a_daemon_of_this_host_boot_and_namespace_whose_process_is_gone_has_exited() {
        let me = Identity::new("http://127.0.0.1:1", Duration::from_secs(15));
        let parts: Vec<String> = me.id.split(':').map(str::to_owned).collect();
        assert_eq!(parts.len(), 6, "{}", me.id);
        let with = |at: usize, value: &str| {
            let mut other = parts.clone();
            other[at] = value.to_owned();
            other.join(":")
        };
        // A process id no process has (above Linux's largest, 2^22).
        let gone = with(3, "4999999");
        assert!(me.outlived(&gone), "its process is gone");
        assert!(
            me.outlived(&with(5, "0123456789abcdef.0")),
            "an earlier process under this process's id"
        );
        let another_engine_here = Identity::new("http://127.0.0.1:2", Duration::from_secs(15));
        assert!(
            !me.outlived(&another_engine_here.id),
            "another engine of this process"
        );
        // Any live process under that id counts as the daemon, whatever it runs now.
        let mut other_program = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(!me.outlived(&with(3, &other_program.id().to_string())));
        other_program.kill().unwrap();
        other_program.wait().unwrap();
        // Anything it cannot be sure of is alive.
        assert!(!me.outlived(&me.id), "itself");
        assert!(!me.outlived(&with(0, "another-host")), "another host");
        assert!(
            !me.outlived(&with(1, "0123abcd")),
            "another boot or machine"
        );
        assert!(!me.outlived(&with(2, "12345")), "another PID namespace");
        assert!(!me.outlived("garbage"));
        assert!(!me.outlived(&with(3, "x")), "no process id");
        // Where the boot id or the namespace could not be read, never.
        let unknown = |at: usize, value: &str| {
            let mut id = parts.clone();
            id[at] = value.to_owned();
            let me = Identity {
                id: id.join(":"),
                ..me.clone()
            };
            id[3] = "4999999".to_owned();
            me.outlived(&id.join(":"))
        };
        assert!(!unknown(1, "-"), "no boot id");
        assert!(!unknown(2, "0"), "no PID namespace");
        assert!(unknown(4, "1"), "(the same with both known: gone)");
        assert_eq!(
            IdParts::parse(&another_engine_here.id).unwrap().token,
            process_token()
        );
    }
}
