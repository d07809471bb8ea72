//! `ecluse iptables`: the rules that send a pod's outbound traffic through
//! the transparent listener, as an init container installs them.
//!
//! The rule list is a pure function of the options ([`plan`]); running it is
//! a thin loop at the edge ([`apply`]). Every rule lives in chains of ecluse's
//! own, reached by one jump from `OUTPUT`, so installing flushes and refills
//! those chains (twice gives the same rules) and removing deletes the jumps
//! and the chains and touches nothing else.

use std::net::IpAddr;
use std::process::Command;

/// The nat chain redirecting TCP 80 and 443 to the transparent listener.
pub const NAT_CHAIN: &str = "ECLUSE_OUTPUT";
/// The filter chain dropping UDP 443, so QUIC clients fall back to TCP.
pub const QUIC_CHAIN: &str = "ECLUSE_QUIC";

/// An address family and the ranges ecluse never redirects in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The address the kernel's own REDIRECT target lands on is loopback;
    /// traffic to exactly this address is left alone (as Istio's init does)
    /// so local sidecar ports keep working. Other loopback addresses are
    /// redirected like any destination.
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }
}

/// A destination range excluded from redirection (`--exclude`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

/// What `ecluse iptables` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The uid ecluse runs as: its own connections go out untouched.
    pub proxy_uid: u32,
    /// The transparent listener's port.
    pub port: u16,
    pub exclude: Vec<Cidr>,
}

/// One invocation of iptables (or ip6tables), and how its failure is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Runs; failure is an error.
    Run(Vec<String>),
    /// Creates a chain unless it exists (`-N` fails when it does).
    CreateChain {
        table: &'static str,
        chain: &'static str,
    },
    /// Adds `rule` to `chain` unless present: `-C` first, then `-A`.
    EnsureRule {
        table: &'static str,
        chain: &'static str,
        rule: Vec<String>,
    },
    /// Deletes `rule` from `chain` as long as it is there.
    DeleteRule {
        table: &'static str,
        chain: &'static str,
        rule: Vec<String>,
    },
    /// Flushes and deletes a chain if it exists.
    DeleteChain {
        table: &'static str,
        chain: &'static str,
    },
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The jumps from the built-in `OUTPUT` chains into ecluse's.
fn jumps() -> [(&'static str, &'static str, Vec<String>); 2] {
    [
        ("nat", "OUTPUT", args(&["-p", "tcp", "-j", NAT_CHAIN])),
        ("filter", "OUTPUT", args(&["-p", "udp", "-j", QUIC_CHAIN])),
    ]
}

/// The steps installing the rules for one family.
pub fn install(family: Family, options: &Options) -> Vec<Step> {
    let uid = options.proxy_uid.to_string();
    let port = options.port.to_string();
    let mut steps = vec![
        Step::CreateChain {
            table: "nat",
            chain: NAT_CHAIN,
        },
        Step::Run(args(&["-t", "nat", "-F", NAT_CHAIN])),
        Step::Run(args(&[
            "-t",
            "nat",
            "-A",
            NAT_CHAIN,
            "-d",
            family.loopback(),
            "-j",
            "RETURN",
        ])),
    ];
    for cidr in options.exclude.iter().filter(|c| c.family() == family) {
        steps.push(Step::Run(args(&[
            "-t",
            "nat",
            "-A",
            NAT_CHAIN,
            "-d",
            &cidr.to_string(),
            "-j",
            "RETURN",
        ])));
    }
    for dport in ["443", "80"] {
        steps.push(Step::Run(args(&[
            "-t",
            "nat",
            "-A",
            NAT_CHAIN,
            "-p",
            "tcp",
            "--dport",
            dport,
            "-m",
            "owner",
            "!",
            "--uid-owner",
            &uid,
            "-j",
            "REDIRECT",
            "--to-ports",
            &port,
        ])));
    }
    steps.extend([
        Step::CreateChain {
            table: "filter",
            chain: QUIC_CHAIN,
        },
        Step::Run(args(&["-t", "filter", "-F", QUIC_CHAIN])),
        Step::Run(args(&[
            "-t",
            "filter",
            "-A",
            QUIC_CHAIN,
            "-p",
            "udp",
            "--dport",
            "443",
            "-m",
            "owner",
            "!",
            "--uid-owner",
            &uid,
            "-j",
            "DROP",
        ])),
    ]);
    // The jumps last: until the chains are filled, nothing enters them.
    for (table, chain, rule) in jumps() {
        steps.push(Step::EnsureRule { table, chain, rule });
    }
    steps
}

/// The steps removing everything [`install`] adds, for one family.
pub fn remove() -> Vec<Step> {
    let mut steps: Vec<Step> = jumps()
        .into_iter()
        .map(|(table, chain, rule)| Step::DeleteRule { table, chain, rule })
        .collect();
    steps.push(Step::DeleteChain {
        table: "nat",
        chain: NAT_CHAIN,
    });
    steps.push(Step::DeleteChain {
        table: "filter",
        chain: QUIC_CHAIN,
    });
    steps
}

/// The command lines a step runs, for `--dry-run` (one line per command,
/// conditions as shell so the output can be read as a script).
pub fn render(cmd: &str, step: &Step) -> String {
    let line = |a: &[String]| format!("{cmd} -w {}", a.join(" "));
    match step {
        Step::Run(a) => line(a),
        Step::CreateChain { table, chain } => format!(
            "{} 2>/dev/null || {}",
            line(&args(&["-t", table, "-n", "-L", chain])),
            line(&args(&["-t", table, "-N", chain]))
        ),
        Step::EnsureRule { table, chain, rule } => format!(
            "{} 2>/dev/null || {}",
            line(&with(&["-t", table, "-C", chain], rule)),
            line(&with(&["-t", table, "-A", chain], rule))
        ),
        Step::DeleteRule { table, chain, rule } => format!(
            "while {} 2>/dev/null; do {}; done",
            line(&with(&["-t", table, "-C", chain], rule)),
            line(&with(&["-t", table, "-D", chain], rule))
        ),
        Step::DeleteChain { table, chain } => format!(
            "{} 2>/dev/null && {{ {}; {}; }}",
            line(&args(&["-t", table, "-n", "-L", chain])),
            line(&args(&["-t", table, "-F", chain])),
            line(&args(&["-t", table, "-X", chain]))
        ),
    }
}

fn with(head: &[&str], rule: &[String]) -> Vec<String> {
    let mut out = args(head);
    out.extend(rule.iter().cloned());
    out
}

/// The ip6tables command matching an iptables one: `iptables-legacy`
/// becomes `ip6tables-legacy`, `/sbin/iptables` `/sbin/ip6tables`.
pub fn ip6_command(cmd: &str) -> String {
    let (dir, base) = match cmd.rsplit_once('/') {
        Some((d, b)) => (format!("{d}/"), b),
        None => (String::new(), cmd),
    };
    match base.strip_prefix("iptables") {
        Some(rest) => format!("{dir}ip6tables{rest}"),
        None => format!("{dir}ip6{base}"),
    }
}

/// Whether IPv6 rules are installed too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6 {
    /// When ip6tables works on this host (the kernel has IPv6).
    Auto,
    On,
    Off,
}

fn run(cmd: &str, a: &[String]) -> Result<bool, String> {
    let status = Command::new(cmd)
        .arg("-w")
        .args(a)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    Ok(status.success())
}

fn run_checked(cmd: &str, a: &[String]) -> Result<(), String> {
    let out = Command::new(cmd)
        .arg("-w")
        .args(a)
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{cmd} -w {} failed: {}",
        a.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Runs one step.
pub fn execute(cmd: &str, step: &Step) -> Result<(), String> {
    match step {
        Step::Run(a) => run_checked(cmd, a),
        Step::CreateChain { table, chain } => {
            if run(cmd, &args(&["-t", table, "-n", "-L", chain]))? {
                return Ok(());
            }
            run_checked(cmd, &args(&["-t", table, "-N", chain]))
        }
        Step::EnsureRule { table, chain, rule } => {
            if run(cmd, &with(&["-t", table, "-C", chain], rule))? {
                return Ok(());
            }
            run_checked(cmd, &with(&["-t", table, "-A", chain], rule))
        }
        Step::DeleteRule { table, chain, rule } => {
            // A rule added twice by hand is there twice; bounded so that a
            // `-D` that "succeeds" without deleting cannot spin.
            for _ in 0..64 {
                if !run(cmd, &with(&["-t", table, "-C", chain], rule))? {
                    return Ok(());
                }
                run_checked(cmd, &with(&["-t", table, "-D", chain], rule))?;
            }
            Err(format!("{cmd}: could not delete the jump from {chain}"))
        }
        Step::DeleteChain { table, chain } => {
            if !run(cmd, &args(&["-t", table, "-n", "-L", chain]))? {
                return Ok(());
            }
            run_checked(cmd, &args(&["-t", table, "-F", chain]))?;
            run_checked(cmd, &args(&["-t", table, "-X", chain]))
        }
    }
}

/// The families to act on, and their commands.
pub fn families(cmd: &str, ipv6: Ipv6) -> Vec<(Family, String)> {
    let mut out = vec![(Family::V4, cmd.to_string())];
    let cmd6 = ip6_command(cmd);
    let v6 = match ipv6 {
        Ipv6::Off => false,
        Ipv6::On => true,
        // A kernel without IPv6 has no ip6tables tables to list.
        Ipv6::Auto => run(&cmd6, &args(&["-t", "nat", "-n", "-L", "OUTPUT"])).unwrap_or(false),
    };
    if v6 {
        out.push((Family::V6, cmd6));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(exclude: &[&str]) -> Options {
        Options {
            proxy_uid: 1337,
            port: 15001,
            exclude: exclude.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    fn script(cmd: &str, steps: &[Step]) -> String {
        steps
            .iter()
            .map(|s| render(cmd, s))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn install_v4_golden() {
        let got = script(
            "iptables",
            &install(Family::V4, &options(&["10.96.0.0/12", "fd00::/8"])),
        );
        let want = "\
iptables -w -t nat -n -L ECLUSE_OUTPUT 2>/dev/null || iptables -w -t nat -N ECLUSE_OUTPUT
iptables -w -t nat -F ECLUSE_OUTPUT
iptables -w -t nat -A ECLUSE_OUTPUT -d 127.0.0.1/32 -j RETURN
iptables -w -t nat -A ECLUSE_OUTPUT -d 10.96.0.0/12 -j RETURN
iptables -w -t nat -A ECLUSE_OUTPUT -p tcp --dport 443 -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001
iptables -w -t nat -A ECLUSE_OUTPUT -p tcp --dport 80 -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001
iptables -w -t filter -n -L ECLUSE_QUIC 2>/dev/null || iptables -w -t filter -N ECLUSE_QUIC
iptables -w -t filter -F ECLUSE_QUIC
iptables -w -t filter -A ECLUSE_QUIC -p udp --dport 443 -m owner ! --uid-owner 1337 -j DROP
iptables -w -t nat -C OUTPUT -p tcp -j ECLUSE_OUTPUT 2>/dev/null || iptables -w -t nat -A OUTPUT -p tcp -j ECLUSE_OUTPUT
iptables -w -t filter -C OUTPUT -p udp -j ECLUSE_QUIC 2>/dev/null || iptables -w -t filter -A OUTPUT -p udp -j ECLUSE_QUIC";
        assert_eq!(got, want);
    }

    #[test]
    fn install_v6_excepts_only_its_own_loopback_and_ranges() {
        let got = script(
            "ip6tables",
            &install(Family::V6, &options(&["10.96.0.0/12", "fd00::/8"])),
        );
        assert!(
            got.contains("-A ECLUSE_OUTPUT -d ::1/128 -j RETURN"),
            "{got}"
        );
        assert!(
            got.contains("-A ECLUSE_OUTPUT -d fd00::/8 -j RETURN"),
            "{got}"
        );
        assert!(!got.contains("10.96.0.0"), "{got}");
        assert!(!got.contains("127.0.0.1"), "{got}");
    }

    #[test]
    fn remove_golden() {
        let want = "\
while iptables -w -t nat -C OUTPUT -p tcp -j ECLUSE_OUTPUT 2>/dev/null; do iptables -w -t nat -D OUTPUT -p tcp -j ECLUSE_OUTPUT; done
while iptables -w -t filter -C OUTPUT -p udp -j ECLUSE_QUIC 2>/dev/null; do iptables -w -t filter -D OUTPUT -p udp -j ECLUSE_QUIC; done
iptables -w -t nat -n -L ECLUSE_OUTPUT 2>/dev/null && { iptables -w -t nat -F ECLUSE_OUTPUT; iptables -w -t nat -X ECLUSE_OUTPUT; }
iptables -w -t filter -n -L ECLUSE_QUIC 2>/dev/null && { iptables -w -t filter -F ECLUSE_QUIC; iptables -w -t filter -X ECLUSE_QUIC; }";
        assert_eq!(script("iptables", &remove()), want);
    }

    #[test]
    fn cidrs_parse_and_refuse_nonsense() {
        let table: &[(&str, Result<&str, &str>)] = &[
            ("10.96.0.0/12", Ok("10.96.0.0/12")),
            ("192.0.2.7", Ok("192.0.2.7/32")),
            ("fd00::/8", Ok("fd00::/8")),
            ("::1", Ok("::1/128")),
            ("10.0.0.0/33", Err("prefix length must be 0 to 32")),
            ("fd00::/129", Err("prefix length must be 0 to 128")),
            ("example.com/8", Err("not an address")),
            ("10.0.0.0/x", Err("prefix length")),
        ];
        for (input, want) in table {
            let got = input.parse::<Cidr>().map(|c| c.to_string());
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(&g, w, "{input}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{input}: {e}"),
                (g, w) => panic!("{input}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn ip6_commands_follow_the_iptables_flavour() {
        for (v4, v6) in [
            ("iptables", "ip6tables"),
            ("iptables-legacy", "ip6tables-legacy"),
            ("iptables-nft", "ip6tables-nft"),
            ("/usr/sbin/iptables", "/usr/sbin/ip6tables"),
        ] {
            assert_eq!(ip6_command(v4), v6);
        }
    }
}
