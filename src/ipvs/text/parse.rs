//! ipvsadm's command syntax turned into [`Change`]s: one parser for a command
//! line (`parse_command`) and for `ipvsadm -R` input (`parse_restore`, which
//! splits each line into words as ipvsadm does and parses them the same way).
//!
//! Two layers, like ipvsadm itself: `popt::tokenize` splits the words into
//! options and arguments with popt's rules (popt decides things such as
//! whether the word after `-p` is its timeout), then `CommandLine` applies
//! ipvsadm's meaning, defaults and checks to them, option by option and then
//! as a whole.
//!
//! We always behave like `ipvsadm -n`: host and service names are refused,
//! never resolved, so parsing stays pure.

use super::popt::{leading_option, tokenize, Id, Opt, Word};
use super::{CommandError, ListOptions, ParseError};
use crate::ipvs::{Change, Timeouts};
use crate::model::rules::{sched_flag, SchedFlag, MAX_THRESHOLD, MAX_WEIGHT, SCHED_FLAGS};
use crate::model::{
    DestKey, Destination, Family, Forward, Netmask, Persistence, Protocol, Scheduler, ServiceFlags,
    ServiceKey, Tunnel, TunnelChecksum, TunnelType, VirtualService,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(super) use crate::model::rules::MAX_TIMEOUT;

/// Parses `ipvsadm -R` input: one command per line, as ipvsadm reads it (words
/// separated by spaces, tabs or carriage returns; a word `ipvsadm` is dropped
/// wherever it stands, as ipvsadm's reader does). Blank lines are skipped and a
/// word starting with `#` comments out the rest of its line (ipvsadm 1.31
/// means to do that but its reader never sees the `#`: there, a comment line
/// is an error).
///
/// The whole input is parsed before anything can be applied: a bad line makes
/// the result that line's error, and no change. Each change comes with its
/// 1-based line number.
pub fn parse_restore(input: &str) -> Result<Vec<(usize, Change)>, ParseError> {
    let mut changes = Vec::new();
    for (index, line) in input.split('\n').enumerate() {
        let number = index + 1;
        let words = restore_words(line);
        if words.is_empty() {
            continue;
        }
        let change = parse_command(&words).map_err(|e| ParseError {
            line: number,
            message: e.message,
        })?;
        changes.push((number, change));
    }
    Ok(changes)
}

/// Splits one restore line into words like ipvsadm's `config_stream_read`.
fn restore_words(line: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for word in line.split([' ', '\t', '\r']).filter(|w| !w.is_empty()) {
        if word.starts_with('#') {
            break;
        }
        if word != "ipvsadm" {
            words.push(word);
        }
    }
    words
}

/// Parses one ipvsadm command given as its words, without the program name:
/// `["-A", "-t", "10.0.0.1:80", "-s", "rr"]`. Accepts the table-changing
/// commands `-A -E -D -a -e -d -C -Z` and `--set`, with every option ipvsadm
/// 1.31 accepts for them, long or short, clustered (`-At`) or with `=`.
pub fn parse_command(args: &[&str]) -> Result<Change, CommandError> {
    match parse_words(args, false)? {
        Invocation::Change(change) => Ok(change),
        // Only table changes get past `first` without `listing`.
        other => fail(format!("not a table change: {other:?}")),
    }
}

/// What a whole ipvsadm command line asks for: a table change, or one of
/// ipvsadm's other commands, each read with ipvsadm's rules for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// `-A -E -D -a -e -d -C -Z --set`, as [`parse_command`] reads them.
    Change(Change),
    /// `-L`, `-l`, `--list` with its options.
    List(ListRequest),
    /// `-S`, `--save` (`-n` is the only option it takes).
    Save,
    /// `-R`, `--restore`: rules on stdin.
    Restore,
    /// `--start-daemon` / `--stop-daemon STATE`.
    SyncDaemon { start: bool },
    /// `-h`, `--help`, alone or after a command: `command` is ipvsadm's long
    /// name of that command (`add-service`, `list`…).
    Help { command: Option<&'static str> },
    /// `-v`, `--version`.
    Version,
}

/// `-L` and its options, checked as ipvsadm checks them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListRequest {
    /// `-c`: the connection table instead of the services.
    pub connections: bool,
    /// `-t|-u|--sctp-service|-f SERVICE`: that service only.
    pub service: Option<ServiceKey>,
    /// `--timeout`: the protocol timeouts.
    pub timeout: bool,
    /// `--daemon`: the sync daemons.
    pub daemon: bool,
    /// The column options (`--stats`, `--rate`, `--thresholds`,
    /// `--persistent-conn`, `--tun-info`, `--exact`).
    pub options: ListOptions,
    /// `--nosort`: the kernel's order instead of ipvsadm's.
    pub nosort: bool,
}

/// Parses a whole ipvsadm command line (without the program name): every
/// command ipvsadm 1.31 has, with its options and ipvsadm's checks of
/// them. `-h`/`--help` anywhere asks for help (on the command it follows),
/// before any other check, so that `-a --help` helps rather than complains
/// that `-a` needs a service.
pub fn parse_invocation(args: &[&str]) -> Result<Invocation, CommandError> {
    let help = |w: &&str| *w == "--help" || *w == "-h";
    if args.iter().any(help) {
        let first = args
            .first()
            .and_then(|w| leading_option(w))
            .and_then(command_name);
        return Ok(Invocation::Help { command: first });
    }
    parse_words(args, true)
}

/// ipvsadm's long name of the command `id` is, if it is one.
fn command_name(id: Id) -> Option<&'static str> {
    Some(match id {
        Id::AddService => "add-service",
        Id::EditService => "edit-service",
        Id::DeleteService => "delete-service",
        Id::Clear => "clear",
        Id::List => "list",
        Id::Zero => "zero",
        Id::AddServer => "add-server",
        Id::EditServer => "edit-server",
        Id::DeleteServer => "delete-server",
        Id::Set => "set",
        Id::Restore => "restore",
        Id::Save => "save",
        Id::StartDaemon => "start-daemon",
        Id::StopDaemon => "stop-daemon",
        _ => return None,
    })
}

/// The parse of `args`; `listing`: whether ipvsadm's commands other than
/// table changes are taken (a command line) or refused (restore input).
fn parse_words(args: &[&str], listing: bool) -> Result<Invocation, CommandError> {
    let words = tokenize(args)?;
    if listing {
        // ipvsadm acts on these at once, whatever follows.
        if let Some(Word::Opt(opt)) = words.first() {
            match opt.id {
                Id::Help => return Ok(Invocation::Help { command: None }),
                Id::Version => return Ok(Invocation::Version),
                Id::Restore => return Ok(Invocation::Restore),
                Id::StartDaemon => return Ok(Invocation::SyncDaemon { start: true }),
                Id::StopDaemon => return Ok(Invocation::SyncDaemon { start: false }),
                _ => {}
            }
        }
    }
    let mut cmd = CommandLine {
        listing,
        ..CommandLine::default()
    };
    let mut positional = Vec::new();
    for word in words {
        match word {
            Word::Arg(a) => positional.push(a),
            Word::Opt(opt) => cmd.option(opt)?,
        }
    }
    cmd.finish(positional)
}

fn fail<T>(message: impl Into<String>) -> Result<T, CommandError> {
    Err(CommandError {
        message: message.into(),
    })
}

// ---------------------------------------------------------------------------
// Options -> a command, with ipvsadm's rules.

/// The table-changing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    AddService,
    EditService,
    DeleteService,
    Flush,
    AddServer,
    EditServer,
    DeleteServer,
    Set,
    Zero,
    List,
    Save,
}

impl Cmd {
    /// ipvsadm's name for the command, as its messages use it.
    fn name(self) -> &'static str {
        match self {
            Cmd::AddService => "add-service",
            Cmd::EditService => "edit-service",
            Cmd::DeleteService => "delete-service",
            Cmd::Flush => "flush",
            Cmd::AddServer => "add-server",
            Cmd::EditServer => "edit-server",
            Cmd::DeleteServer => "delete-server",
            Cmd::Set => "set",
            Cmd::Zero => "zero",
            Cmd::List => "list",
            Cmd::Save => "save",
        }
    }

    /// ipvsadm's `commands_v_options` row for this command.
    fn rule(self, class: Class) -> Rule {
        use Cmd::*;
        match (self, class) {
            // '1' in ipvsadm's table: optional, and at most one of them.
            (List, Class::Connection | Class::Service | Class::Timeout | Class::Daemon) => {
                Rule::Exclusive
            }
            (
                List,
                Class::Numeric
                | Class::Stats
                | Class::Rate
                | Class::Thresholds
                | Class::PersistentConn
                | Class::NoSort
                | Class::Exact
                | Class::TunInfo,
            ) => Rule::Optional,
            (Save, Class::Numeric) => Rule::Optional,
            (List | Save, _) => Rule::Illegal,
            (Flush | Set, Class::Service) => Rule::Illegal,
            (Zero, Class::Service) => Rule::Optional,
            (_, Class::Service) => Rule::Required,
            (
                AddService | EditService,
                Class::Scheduler
                | Class::Persistent
                | Class::Netmask
                | Class::OnePacket
                | Class::PersistenceEngine
                | Class::SchedFlags,
            ) => Rule::Optional,
            (AddServer | EditServer | DeleteServer, Class::Server) => Rule::Required,
            (
                AddServer | EditServer,
                Class::Forward
                | Class::Weight
                | Class::UThreshold
                | Class::LThreshold
                | Class::TunType
                | Class::TunPort
                | Class::TunNocsum
                | Class::TunCsum
                | Class::TunRemcsum,
            ) => Rule::Optional,
            _ => Rule::Illegal,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Required,
    Optional,
    /// Optional, but excludes the other options marked so.
    Exclusive,
    Illegal,
}

/// ipvsadm's option classes (`OPTC_*`): each may be given once per command,
/// and the command decides which are allowed. Declared in ipvsadm's order,
/// which is the order its checks report problems in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Mcast,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    SyncId,
    Exact,
    OnePacket,
    PersistenceEngine,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
}

impl Class {
    const ALL: [Class; 34] = [
        Class::Numeric,
        Class::Connection,
        Class::Service,
        Class::Scheduler,
        Class::Persistent,
        Class::Netmask,
        Class::Server,
        Class::Forward,
        Class::Weight,
        Class::UThreshold,
        Class::LThreshold,
        Class::Mcast,
        Class::Timeout,
        Class::Daemon,
        Class::Stats,
        Class::Rate,
        Class::Thresholds,
        Class::PersistentConn,
        Class::NoSort,
        Class::SyncId,
        Class::Exact,
        Class::OnePacket,
        Class::PersistenceEngine,
        Class::SchedFlags,
        Class::McastGroup,
        Class::McastPort,
        Class::McastTtl,
        Class::SyncMaxlen,
        Class::TunInfo,
        Class::TunType,
        Class::TunPort,
        Class::TunNocsum,
        Class::TunCsum,
        Class::TunRemcsum,
    ];

    /// ipvsadm's `optnames` entry.
    fn name(self) -> &'static str {
        match self {
            Class::Numeric => "numeric",
            Class::Connection => "connection",
            Class::Service => "service-address",
            Class::Scheduler => "scheduler",
            Class::Persistent => "persistent",
            Class::Netmask => "netmask",
            Class::Server => "real-server",
            Class::Forward => "forwarding-method",
            Class::Weight => "weight",
            Class::UThreshold => "u-threshold",
            Class::LThreshold => "l-threshold",
            Class::Mcast => "mcast-interface",
            Class::Timeout => "timeout",
            Class::Daemon => "daemon",
            Class::Stats => "stats",
            Class::Rate => "rate",
            Class::Thresholds => "thresholds",
            Class::PersistentConn => "persistent-conn",
            Class::NoSort => "nosort",
            Class::SyncId => "syncid",
            Class::Exact => "exact",
            Class::OnePacket => "ops",
            Class::PersistenceEngine => "pe",
            Class::SchedFlags => "sched-flags",
            Class::McastGroup => "mcast-group",
            Class::McastPort => "mcast-port",
            Class::McastTtl => "mcast-ttl",
            Class::SyncMaxlen => "sync-maxlen",
            Class::TunInfo => "tun-info",
            Class::TunType => "tun-type",
            Class::TunPort => "tun-port",
            Class::TunNocsum => "tun-nocsum",
            Class::TunCsum => "tun-csum",
            Class::TunRemcsum => "tun-remcsum",
        }
    }

    /// The class an option counts as; `-6` and `--sort` count as none (ipvsadm
    /// lets them repeat and accepts them with any command).
    fn of(id: Id) -> Option<Class> {
        Some(match id {
            Id::TcpService | Id::UdpService | Id::SctpService | Id::FwmarkService => Class::Service,
            Id::Scheduler => Class::Scheduler,
            Id::Persistent => Class::Persistent,
            Id::Netmask => Class::Netmask,
            Id::RealServer => Class::Server,
            Id::Masquerading | Id::Ipip | Id::Gatewaying => Class::Forward,
            Id::Weight => Class::Weight,
            Id::UThreshold => Class::UThreshold,
            Id::LThreshold => Class::LThreshold,
            Id::Numeric => Class::Numeric,
            Id::Connection => Class::Connection,
            Id::McastInterface => Class::Mcast,
            Id::Syncid => Class::SyncId,
            Id::Timeout => Class::Timeout,
            Id::Daemon => Class::Daemon,
            Id::Stats => Class::Stats,
            Id::Rate => Class::Rate,
            Id::Thresholds => Class::Thresholds,
            Id::PersistentConn => Class::PersistentConn,
            Id::NoSort => Class::NoSort,
            Id::Exact => Class::Exact,
            Id::Ops => Class::OnePacket,
            Id::Pe => Class::PersistenceEngine,
            Id::SchedFlags => Class::SchedFlags,
            Id::McastGroup => Class::McastGroup,
            Id::McastPort => Class::McastPort,
            Id::McastTtl => Class::McastTtl,
            Id::SyncMaxlen => Class::SyncMaxlen,
            Id::TunInfo => Class::TunInfo,
            Id::TunType => Class::TunType,
            Id::TunPort => Class::TunPort,
            Id::TunNocsum => Class::TunNocsum,
            Id::TunCsum => Class::TunCsum,
            Id::TunRemcsum => Class::TunRemcsum,
            _ => return None,
        })
    }
}

/// The virtual service named by `-t`, `-u`, `--sctp-service` or `-f`.
#[derive(Debug, Clone, Copy)]
enum ServiceArg {
    Inet {
        protocol: Protocol,
        addr: IpAddr,
        port: Option<u16>,
    },
    Fwmark(u32),
}

/// For each option class given: how it was written.
#[derive(Debug)]
struct Seen([Option<String>; Class::ALL.len()]);

impl Default for Seen {
    fn default() -> Self {
        Seen(std::array::from_fn(|_| None))
    }
}

impl Seen {
    fn get(&self, class: Class) -> Option<&String> {
        self.0.get(class as usize).and_then(Option::as_ref)
    }

    /// Records `written` for `class`; returns how it was first written if
    /// the class was already given.
    fn set(&mut self, class: Class, written: &str) -> Option<String> {
        let slot = self.0.get_mut(class as usize)?;
        match slot {
            Some(first) => Some(first.clone()),
            None => {
                *slot = Some(written.to_string());
                None
            }
        }
    }
}

/// Everything one command line says, gathered option by option.
#[derive(Debug, Default)]
struct CommandLine {
    /// Whether `-L` and `-S` are taken as commands (a command line), or
    /// refused (restore input).
    listing: bool,
    cmd: Option<(Cmd, String)>,
    seen: Seen,
    service: Option<ServiceArg>,
    ipv6: bool,
    scheduler: Option<Scheduler>,
    persistent: Option<u32>,
    /// `-M` as written; read once the service's family is known.
    netmask: Option<(String, String)>,
    pe_name: Option<String>,
    ops: bool,
    /// `-b` as written; read once the scheduler is known.
    sched_flags: Option<(String, String)>,
    server: Option<(IpAddr, Option<u16>)>,
    /// `-m`, `-g` or `-i`; the tunnel options are read once all are seen.
    method: Option<Forward>,
    weight: Option<u32>,
    u_threshold: u32,
    l_threshold: u32,
    tun_type: Option<TunnelType>,
    tun_port: u16,
    tun_checksum: TunnelChecksum,
}

impl CommandLine {
    fn option(&mut self, opt: Opt<'_>) -> Result<(), CommandError> {
        let Some((cmd, cmd_name)) = &self.cmd else {
            return self.first(opt);
        };
        if let Some(_other) = command_of(opt.id) {
            return fail(format!(
                "only one command per line: {} ({}) and {}",
                cmd_name,
                cmd.name(),
                opt.name
            ));
        }
        if let Some(class) = Class::of(opt.id) {
            if let Some(first) = self.seen.set(class, &opt.name) {
                let also = if first == opt.name {
                    String::new()
                } else {
                    format!(" (first as {first})")
                };
                return fail(format!(
                    "option {} ({}) given twice{also}",
                    opt.name,
                    class.name()
                ));
            }
        }
        let name = opt.name.as_str();
        let value = opt.value.unwrap_or_default();
        match opt.id {
            Id::TcpService | Id::UdpService | Id::SctpService => {
                let protocol = match opt.id {
                    Id::TcpService => Protocol::Tcp,
                    Id::UdpService => Protocol::Udp,
                    _ => Protocol::Sctp,
                };
                let (addr, port) = parse_addr(value).map_err(|why| CommandError {
                    message: format!("{why} in {name} {value}"),
                })?;
                self.service = Some(ServiceArg::Inet {
                    protocol,
                    addr,
                    port,
                });
            }
            Id::FwmarkService => {
                // strtol, then the unsigned range check: "-1" is refused too.
                let mark = c_number(value)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&n| n > 0);
                let Some(mark) = mark else {
                    return fail(format!(
                        "invalid fwmark {value:?} in {name}: expected 1 to {}",
                        u32::MAX
                    ));
                };
                self.service = Some(ServiceArg::Fwmark(mark));
            }
            Id::Ipv6 => {
                // ipvsadm only looks at -6 once -f has set a mark.
                if !matches!(self.service, Some(ServiceArg::Fwmark(_))) {
                    return fail(format!(
                        "{name} must follow -f: it makes a fwmark service IPv6 \
                         (-t/-u/--sctp-service take the family from the address)"
                    ));
                }
                self.ipv6 = true;
            }
            Id::Scheduler => {
                let scheduler = Scheduler::new(value).map_err(|_| CommandError {
                    message: format!(
                        "invalid scheduler {value:?} in {name}: expected a name of 1 to {} \
                         lower-case letters, digits or '_', such as wlc or rr",
                        Scheduler::MAX_LEN
                    ),
                })?;
                self.scheduler = Some(scheduler);
            }
            Id::Persistent => {
                let timeout = match opt.value {
                    None => Persistence::DEFAULT_TIMEOUT,
                    Some(v) => bounded(v, 1, MAX_TIMEOUT).ok_or_else(|| CommandError {
                        message: format!(
                            "invalid persistence timeout {v:?} in {name}: expected 1 to \
                             {MAX_TIMEOUT} seconds"
                        ),
                    })?,
                };
                self.persistent = Some(timeout);
            }
            Id::Netmask => self.netmask = Some((opt.name.clone(), value.to_string())),
            Id::RealServer => {
                let server = parse_addr(value).map_err(|why| CommandError {
                    message: format!("{why} in {name} {value}"),
                })?;
                self.server = Some(server);
            }
            Id::Masquerading => self.method = Some(Forward::Masq),
            Id::Gatewaying => self.method = Some(Forward::Route),
            Id::Ipip => self.method = Some(Forward::TUNNEL),
            Id::Weight => {
                // Upstream ipvsadm stops at 65535; Debian's (the one we test
                // against) and the kernel take any non-negative int.
                let weight = bounded(value, 0, MAX_WEIGHT).ok_or_else(|| CommandError {
                    message: format!(
                        "invalid weight {value:?} in {name}: expected 0 to {MAX_WEIGHT} (the \
                         kernel's and ipvsadm's limit)"
                    ),
                })?;
                self.weight = Some(weight);
            }
            Id::UThreshold | Id::LThreshold => {
                let n = bounded(value, 0, MAX_THRESHOLD).ok_or_else(|| CommandError {
                    message: format!(
                        "invalid connection threshold {value:?} in {name}: expected 0 to \
                         {MAX_THRESHOLD} (the kernel's and ipvsadm's limit)"
                    ),
                })?;
                if opt.id == Id::UThreshold {
                    self.u_threshold = n;
                } else {
                    self.l_threshold = n;
                }
            }
            Id::Ops => self.ops = true,
            Id::Pe => {
                self.pe_name = Some(engine_name(value).map_err(|why| CommandError {
                    message: format!("{why} in {name} {value}"),
                })?)
            }
            Id::SchedFlags => self.sched_flags = Some((opt.name.clone(), value.to_string())),
            Id::TunType => {
                let kind = match value {
                    "ipip" => TunnelType::Ipip,
                    "gue" => TunnelType::Gue,
                    "gre" => TunnelType::Gre,
                    _ => {
                        return fail(format!(
                            "invalid tunnel type {value:?} in {name}: expected ipip, gue or gre"
                        ))
                    }
                };
                self.tun_type = Some(kind);
            }
            Id::TunPort => {
                let port = bounded(value, 1, 65535).ok_or_else(|| CommandError {
                    message: format!(
                        "invalid tunnel port {value:?} in {name}: expected 1 to 65535"
                    ),
                })?;
                self.tun_port = u16::try_from(port).unwrap_or_default();
            }
            Id::TunNocsum => self.tun_checksum = TunnelChecksum::None,
            Id::TunCsum => self.tun_checksum = TunnelChecksum::Csum,
            Id::TunRemcsum => self.tun_checksum = TunnelChecksum::RemCsum,
            // Listing and sync-daemon options: the option table refuses
            // them for every command parsed here, in `finish`.
            _ => {}
        }
        Ok(())
    }

    /// popt hands ipvsadm the first option first, and it must be a command.
    fn first(&mut self, opt: Opt<'_>) -> Result<(), CommandError> {
        match command_of(opt.id) {
            Some(Ok(cmd @ (Cmd::List | Cmd::Save))) if !self.listing => fail(format!(
                "{} {}; only table changes are accepted here \
                 (-A, -E, -D, -a, -e, -d, -C, -Z, --set)",
                opt.name,
                if cmd == Cmd::List {
                    "lists the table"
                } else {
                    "prints the rules"
                }
            )),
            Some(Ok(cmd)) => {
                self.cmd = Some((cmd, opt.name));
                Ok(())
            }
            Some(Err(what)) => fail(format!(
                "{} {what}; only table changes are accepted here \
                 (-A, -E, -D, -a, -e, -d, -C, -Z, --set)",
                opt.name
            )),
            None => fail(format!(
                "a command must come first (-A, -E, -D, -a, -e, -d, -C, -Z or --set), \
                 not {}",
                opt.name
            )),
        }
    }

    fn finish(mut self, positional: Vec<&str>) -> Result<Invocation, CommandError> {
        let Some((cmd, cmd_name)) = self.cmd.take() else {
            return fail(
                "no command given: expected -A, -E, -D, -a, -e, -d, -C, -Z or --set".to_string(),
            );
        };
        let mut positional = positional.into_iter();
        let timeouts = if cmd == Cmd::Set {
            let mut values = [0u32; 3];
            for (slot, what) in values.iter_mut().zip(["tcp", "tcpfin", "udp"]) {
                let Some(text) = positional.next() else {
                    return fail(format!(
                        "{cmd_name} needs 3 timeout values: tcp tcpfin udp (seconds, 0 keeps \
                         the current value)"
                    ));
                };
                *slot = bounded(text, 0, MAX_TIMEOUT).ok_or_else(|| CommandError {
                    message: format!(
                        "invalid {what} timeout {text:?} in {cmd_name}: expected 0 to \
                         {MAX_TIMEOUT} seconds"
                    ),
                })?;
            }
            let [tcp, tcp_fin, udp] = values;
            Some(Timeouts { tcp, tcp_fin, udp })
        } else {
            None
        };
        if let Some(extra) = positional.next() {
            return fail(format!("unexpected argument {extra:?}"));
        }

        let scheduler = self
            .scheduler
            .clone()
            .unwrap_or_else(Scheduler::default_name);
        let sched_bits = match &self.sched_flags {
            Some((name, value)) => {
                parse_sched_flags(scheduler.as_str(), value).map_err(|why| CommandError {
                    message: format!("{why} in {name} {value}"),
                })?
            }
            None => 0,
        };

        self.check_options(cmd, &cmd_name)?;

        let change = match cmd {
            Cmd::List => return self.list_request(&cmd_name).map(Invocation::List),
            Cmd::Save => return Ok(Invocation::Save),
            Cmd::Flush => Ok(Change::Flush),
            Cmd::Set => Ok(Change::SetTimeouts(timeouts.unwrap_or_default())),
            Cmd::Zero => Ok(Change::Zero(self.key())),
            Cmd::DeleteService => Ok(Change::DelService(self.required_key()?)),
            Cmd::AddService | Cmd::EditService => {
                let service = self.service_config(scheduler, sched_bits)?;
                Ok(if cmd == Cmd::AddService {
                    Change::AddService(service)
                } else {
                    Change::EditService(service)
                })
            }
            Cmd::DeleteServer => {
                let key = self.required_key()?;
                let dest = self.dest_key()?;
                Ok(Change::DelDest(key, dest))
            }
            Cmd::AddServer | Cmd::EditServer => {
                let key = self.required_key()?;
                let dest = self.destination(&key)?;
                Ok(if cmd == Cmd::AddServer {
                    Change::AddDest(key, dest)
                } else {
                    Change::EditDest(key, dest)
                })
            }
        };
        change.map(Invocation::Change)
    }

    /// `-L`'s options as ipvsadm's `process_options` checks them beyond
    /// the option table: the connection, timeout and daemon listings have
    /// no column modes (but `-c` takes `--persistent-conn`, which adds the
    /// persistence engine's columns).
    fn list_request(&self, cmd_name: &str) -> Result<ListRequest, CommandError> {
        let given = |class| self.seen.get(class);
        let other_listing = [Class::Connection, Class::Timeout, Class::Daemon]
            .into_iter()
            .find_map(given);
        let columns = [Class::Stats, Class::Rate, Class::Thresholds]
            .into_iter()
            .find_map(given);
        let conflict = match (other_listing, columns) {
            (Some(listing), Some(column)) => Some((listing, column)),
            _ => [Class::Timeout, Class::Daemon]
                .into_iter()
                .find_map(given)
                .zip(given(Class::PersistentConn)),
        };
        if let Some((listing, column)) = conflict {
            return fail(format!(
                "{listing} and {column} cannot go together with {cmd_name} (list): {listing} \
                 prints no columns of services (ipvsadm: options conflicts in the list command)"
            ));
        }
        Ok(ListRequest {
            connections: given(Class::Connection).is_some(),
            service: self.key(),
            timeout: given(Class::Timeout).is_some(),
            daemon: given(Class::Daemon).is_some(),
            options: ListOptions {
                stats: given(Class::Stats).is_some(),
                rate: given(Class::Rate).is_some(),
                thresholds: given(Class::Thresholds).is_some(),
                persistent_conn: given(Class::PersistentConn).is_some(),
                tun_info: given(Class::TunInfo).is_some(),
                exact: given(Class::Exact).is_some(),
            },
            nosort: given(Class::NoSort).is_some(),
        })
    }

    /// ipvsadm's `generic_opt_check`: required options present, no option the
    /// command does not take, checked in ipvsadm's column order.
    fn check_options(&self, cmd: Cmd, cmd_name: &str) -> Result<(), CommandError> {
        let mut exclusive: Option<(Class, &String)> = None;
        for class in Class::ALL {
            let given = self.seen.get(class);
            match (cmd.rule(class), given) {
                (Rule::Exclusive, Some(written)) => {
                    if let Some((first_class, first)) = exclusive {
                        return fail(format!(
                            "options {first} ({}) and {written} ({}) exclude each other with \
                             {cmd_name} ({}): give one",
                            first_class.name(),
                            class.name(),
                            cmd.name()
                        ));
                    }
                    exclusive = Some((class, written));
                }
                (Rule::Required, None) => {
                    let what = match class {
                        Class::Service => "a service (-t, -u, --sctp-service or -f)",
                        Class::Server => "a real server (-r)",
                        _ => class.name(),
                    };
                    return fail(format!("{cmd_name} ({}) needs {what}", cmd.name()));
                }
                (Rule::Illegal, Some(written)) => {
                    return fail(format!(
                        "option {written} ({}) is not valid with {cmd_name} ({})",
                        class.name(),
                        cmd.name()
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn family(&self) -> Family {
        match self.service {
            Some(ServiceArg::Inet { addr, .. }) => Family::of(&addr),
            _ if self.ipv6 => Family::Ipv6,
            _ => Family::Ipv4,
        }
    }

    /// The service port; 0 when not given (and for fwmark services).
    fn service_port(&self) -> u16 {
        match self.service {
            Some(ServiceArg::Inet { port, .. }) => port.unwrap_or(0),
            _ => 0,
        }
    }

    fn key(&self) -> Option<ServiceKey> {
        Some(match self.service? {
            ServiceArg::Inet {
                protocol,
                addr,
                port,
            } => ServiceKey::Inet {
                protocol,
                addr,
                port: port.unwrap_or(0),
            },
            ServiceArg::Fwmark(mark) => ServiceKey::Fwmark {
                family: self.family(),
                mark,
            },
        })
    }

    /// `check_options` made sure the service is there; this keeps the
    /// parser panic-free should that ever change.
    fn required_key(&self) -> Result<ServiceKey, CommandError> {
        self.key().map_or_else(
            || fail("no service given (-t, -u, --sctp-service or -f)"),
            Ok,
        )
    }

    fn service_config(
        &self,
        scheduler: Scheduler,
        sched_bits: u32,
    ) -> Result<VirtualService, CommandError> {
        let key = self.required_key()?;
        let fwmark = matches!(key, ServiceKey::Fwmark { .. });
        if !fwmark && self.service_port() == 0 && self.persistent.is_none() {
            return fail(format!(
                "port 0 (or no port) for {key}: only persistent (-p) services may have port 0"
            ));
        }
        if self.ops
            && !matches!(
                key,
                ServiceKey::Fwmark { .. }
                    | ServiceKey::Inet {
                        protocol: Protocol::Udp,
                        ..
                    }
            )
        {
            return fail(format!(
                "one-packet scheduling (-o) is only for UDP or fwmark services, not {key}"
            ));
        }
        // ipvsadm reads -M as it comes, by the family known so far; we read it
        // once the service is known, so the order of -M and -t/-f/-6 does not
        // matter (ipvsadm silently drops -M given before an IPv6 -t or -6).
        let netmask =
            match &self.netmask {
                Some((name, value)) => Some(parse_netmask(self.family(), value).map_err(
                    |why| CommandError {
                        message: format!("{why} in {name} {value}"),
                    },
                )?),
                None => None,
            };
        let mut flags = ServiceFlags::default();
        if self.ops {
            flags = flags.with(ServiceFlags::ONE_PACKET);
        }
        flags = flags.with(sched_bits);
        Ok(VirtualService {
            key,
            scheduler,
            flags,
            // Without -p, ipvsadm still sends -M's mask, but a service
            // without persistence has no use for it (nor does any listing
            // show it), so the model has nowhere to keep it.
            persistence: self.persistent.map(|timeout| Persistence {
                timeout,
                netmask: netmask.unwrap_or_else(|| Netmask::host(key.family())),
            }),
            pe_name: self.pe_name.clone(),
        })
    }

    /// The real server's address and port: without a port, the service's.
    fn server(&self) -> Result<(IpAddr, u16), CommandError> {
        match self.server {
            Some((addr, port)) => Ok((addr, port.unwrap_or_else(|| self.service_port()))),
            None => fail("no real server given (-r)"),
        }
    }

    fn dest_key(&self) -> Result<DestKey, CommandError> {
        // -d does not apply -a's "direct routing uses the service port": the
        // port is the one given, or the service's.
        let (addr, port) = self.server()?;
        Ok(DestKey { addr, port })
    }

    fn destination(&self, key: &ServiceKey) -> Result<Destination, CommandError> {
        let (addr, mut port) = self.server()?;
        let method = self.method.unwrap_or(Forward::Route);
        let fwmark = matches!(key, ServiceKey::Fwmark { .. });
        // The kernel forwards direct-routed and tunnelled packets to the
        // service port, so ipvsadm overrides whatever port -r gave.
        if !fwmark && matches!(method, Forward::Route | Forward::Tunnel(_)) {
            port = self.service_port();
        }
        let family = Family::of(&addr);
        if family != key.family() && !method.is_tunnel() {
            return fail(format!(
                "real server {} is {} but service {key} is {}: only tunnelled (-i) real \
                 servers may differ in address family",
                DestKey { addr, port },
                family_name(family),
                family_name(key.family())
            ));
        }
        let forward = match method {
            Forward::Tunnel(_) => Forward::Tunnel(self.tunnel()?),
            plain => plain,
        };
        if !method.is_tunnel() {
            let tunnel_opts = [
                Class::TunType,
                Class::TunPort,
                Class::TunNocsum,
                Class::TunCsum,
                Class::TunRemcsum,
            ];
            if let Some(written) = tunnel_opts.iter().find_map(|&c| self.seen.get(c)) {
                return fail(format!(
                    "tunnel option {written} needs tunnelling (-i/--ipip) as forwarding method"
                ));
            }
        }
        Ok(Destination {
            addr,
            port,
            forward,
            weight: self.weight.unwrap_or(1),
            upper_threshold: self.u_threshold,
            lower_threshold: self.l_threshold,
        })
    }

    /// ipvsadm's `tunnel_types_v_options`: which of --tun-port and the
    /// checksum options each tunnel type takes.
    fn tunnel(&self) -> Result<Tunnel, CommandError> {
        let kind = self.tun_type.unwrap_or_default();
        //                  tun-port        nocsum          csum            remcsum
        let rules = match kind {
            TunnelType::Ipip => [Rule::Illegal, Rule::Illegal, Rule::Illegal, Rule::Illegal],
            TunnelType::Gue => [
                Rule::Required,
                Rule::Optional,
                Rule::Optional,
                Rule::Optional,
            ],
            TunnelType::Gre => [Rule::Illegal, Rule::Optional, Rule::Optional, Rule::Illegal],
        };
        let classes = [
            Class::TunPort,
            Class::TunNocsum,
            Class::TunCsum,
            Class::TunRemcsum,
        ];
        let mut checksum_option: Option<&String> = None;
        for (class, rule) in classes.into_iter().zip(rules) {
            let given = self.seen.get(class);
            match (rule, given) {
                (Rule::Required, None) => {
                    return fail(format!("{} tunnels need --{}", kind.name(), class.name()))
                }
                (Rule::Illegal, Some(written)) => {
                    return fail(format!(
                        "option {written} is not valid for {} tunnels",
                        kind.name()
                    ))
                }
                // The checksum options exclude each other.
                (_, Some(written)) if class != Class::TunPort => {
                    if let Some(first) = checksum_option {
                        return fail(format!("options {first} and {written} exclude each other"));
                    }
                    checksum_option = Some(written);
                }
                _ => {}
            }
        }
        Ok(Tunnel {
            kind,
            port: if kind == TunnelType::Gue {
                self.tun_port
            } else {
                0
            },
            checksum: self.tun_checksum,
        })
    }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "IPv4",
        Family::Ipv6 => "IPv6",
    }
}

/// Which command an option is: `Some(Ok)` for a table change, `Some(Err)`
/// with what it does for ipvsadm's other commands, `None` for an option.
fn command_of(id: Id) -> Option<Result<Cmd, &'static str>> {
    Some(match id {
        Id::AddService => Ok(Cmd::AddService),
        Id::EditService => Ok(Cmd::EditService),
        Id::DeleteService => Ok(Cmd::DeleteService),
        Id::Clear => Ok(Cmd::Flush),
        Id::Zero => Ok(Cmd::Zero),
        Id::AddServer => Ok(Cmd::AddServer),
        Id::EditServer => Ok(Cmd::EditServer),
        Id::DeleteServer => Ok(Cmd::DeleteServer),
        Id::Set => Ok(Cmd::Set),
        Id::List => Ok(Cmd::List),
        Id::Save => Ok(Cmd::Save),
        Id::Help => Err("prints help"),
        Id::Version => Err("prints the version"),
        Id::Restore => Err("reads rules from stdin"),
        Id::StartDaemon | Id::StopDaemon => Err("controls the sync daemon"),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Values.

/// C's `strtol(s, &end, 10)` that must use all of `s`, as ipvsadm's
/// `string_to_number` asks: leading white space and a sign are allowed.
fn c_number(s: &str) -> Option<i64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Anything past i64 is ERANGE for strtol too.
    let magnitude: i64 = digits.parse().ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// A whole number in `min..=max`, read as ipvsadm's `string_to_number` does.
fn bounded(s: &str, min: u32, max: u32) -> Option<u32> {
    c_number(s)
        .filter(|n| (i64::from(min)..=i64::from(max)).contains(n))
        .and_then(|n| u32::try_from(n).ok())
}

/// `address[:port]` as ipvsadm's `parse_service` reads it, numeric only:
/// `10.0.0.1:80`, `10.0.0.1`, `[2001:db8::1]:80`, or a bare IPv6 address
/// (which then has no port: `2001:db8::1:80` is an address).
fn parse_addr(text: &str) -> Result<(IpAddr, Option<u16>), String> {
    const EXPECTED: &str = "expected address[:port], e.g. 10.0.0.1:80 or [2001:db8::1]:80";
    // ipvsadm refuses an all-digit word outright (a forgotten address).
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("missing address: {EXPECTED}"));
    }
    if let Some(inner) = text.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err(format!("missing ']' after the IPv6 address: {EXPECTED}"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!(
                "an IPv6 address in brackets needs a port, as in [{host}]:80"
            ));
        };
        let Ok(addr) = host.parse::<Ipv6Addr>() else {
            return Err(if host.parse::<Ipv4Addr>().is_ok() {
                format!("brackets are for IPv6 addresses; write {host}:{port}")
            } else {
                format!("invalid IPv6 address {host:?}")
            });
        };
        return Ok((IpAddr::V6(addr), Some(parse_port(port)?)));
    }
    if let Ok(addr) = text.parse::<Ipv6Addr>() {
        return Ok((IpAddr::V6(addr), None));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    let addr = parse_ipv4(host)?;
    let port = port.map(parse_port).transpose()?;
    Ok((IpAddr::V4(addr), port))
}

/// A dotted-quad IPv4 address. ipvsadm's `inet_aton` also takes forms such
/// as `10.1` or octal `010.0.0.1`, and then tries the resolver; we take the
/// one unambiguous form.
fn parse_ipv4(host: &str) -> Result<Ipv4Addr, String> {
    if let Ok(addr) = host.parse::<Ipv4Addr>() {
        return Ok(addr);
    }
    if host.contains(':') {
        return Err(format!(
            "invalid address {host:?}: write IPv6 addresses in brackets, as in [2001:db8::1]:80"
        ));
    }
    if host.bytes().any(|b| b.is_ascii_alphabetic() || b == b'-') {
        return Err(format!(
            "host name {host:?} is not resolved: give a numeric IPv4 or [IPv6] address"
        ));
    }
    Err(format!(
        "invalid IPv4 address {host:?}: expected four decimal numbers such as 10.0.0.1"
    ))
}

fn parse_port(text: &str) -> Result<u16, String> {
    if let Some(port) = bounded(text, 0, 65535) {
        return u16::try_from(port).map_err(|_| format!("invalid port {text:?}"));
    }
    if text.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Err(format!(
            "service name {text:?} is not resolved: give a numeric port (0 to 65535)"
        ));
    }
    Err(format!("invalid port {text:?} (expected 0 to 65535)"))
}

/// `-M`: a dotted IPv4 mask for IPv4 services, a prefix length for IPv6.
fn parse_netmask(family: Family, text: &str) -> Result<Netmask, String> {
    match family {
        Family::Ipv4 => match text.parse::<Ipv4Addr>() {
            Ok(mask) => Ok(Netmask::V4(mask)),
            Err(_) if bounded(text, 0, 128).is_some() => Err(format!(
                "an IPv4 service takes a dotted netmask such as 255.255.255.0, not a prefix \
                 length {text:?}"
            )),
            Err(_) => Err(format!(
                "invalid IPv4 netmask {text:?}: expected a dotted mask such as 255.255.255.0"
            )),
        },
        Family::Ipv6 => match bounded(text, 1, 128) {
            Some(prefix) => Ok(Netmask::V6(u8::try_from(prefix).unwrap_or(128))),
            None if text.parse::<Ipv4Addr>().is_ok() => Err(format!(
                "an IPv6 service takes a prefix length (1 to 128) as netmask, not {text:?}"
            )),
            None => Err(format!(
                "invalid IPv6 prefix length {text:?}: expected 1 to 128"
            )),
        },
    }
}

/// `-b`: comma-separated scheduler flags, checked against the scheduler (the
/// final one: ipvsadm reads -b last, so `-b sh-port -s sh` works).
fn parse_sched_flags(scheduler: &str, text: &str) -> Result<u32, String> {
    let mut bits = 0;
    // Like strtok: empty items are skipped.
    let mut any = false;
    for flag in text.split(',').filter(|f| !f.is_empty()) {
        any = true;
        let Some(SchedFlag {
            bit,
            scheduler: only_for,
            ..
        }) = sched_flag(flag)
        else {
            let names: Vec<&str> = SCHED_FLAGS.iter().map(|f| f.name).collect();
            let (last, rest) = names.split_last().unwrap_or((&"", &[]));
            return Err(format!(
                "invalid scheduler flag {flag:?} (expected {} or {last})",
                rest.join(", ")
            ));
        };
        if let Some(needed) = only_for {
            if scheduler != needed {
                return Err(format!(
                    "scheduler flag {flag} needs scheduler {needed} (-s {needed}), not \
                     {scheduler}"
                ));
            }
        }
        bits |= bit;
    }
    if !any {
        return Err("no scheduler flag given".to_string());
    }
    Ok(bits)
}

/// `--pe`: a persistence engine module name such as `sip`.
fn engine_name(text: &str) -> Result<String, String> {
    // The kernel keeps 15 characters plus the terminating NUL.
    const MAX_LEN: usize = 15;
    if text.is_empty() || text.len() > MAX_LEN {
        return Err(format!(
            "invalid persistence engine {text:?}: expected 1 to {MAX_LEN} characters"
        ));
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "invalid persistence engine {text:?}: expected lower-case letters, digits or '_', \
             such as sip"
        ));
    }
    Ok(text.to_string())
}
