//! ipvsadm's option table and popt's rules for splitting command words into
//! options and arguments (ipvsadm 1.31 parses with popt 1.19). What the
//! options mean is `parse`'s business.

use super::CommandError;

/// Every option of ipvsadm's popt table, commands included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Id {
    AddService,
    EditService,
    DeleteService,
    Clear,
    List,
    Zero,
    AddServer,
    EditServer,
    DeleteServer,
    Set,
    Help,
    Version,
    Restore,
    Save,
    StartDaemon,
    StopDaemon,
    TcpService,
    UdpService,
    SctpService,
    FwmarkService,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Masquerading,
    Ipip,
    Gatewaying,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastInterface,
    Syncid,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    None,
    Required,
    /// popt's `POPT_ARGFLAG_OPTIONAL`: only `-p`.
    Optional,
}

struct Spec {
    long: &'static str,
    short: Option<char>,
    arg: Arg,
    id: Id,
}

const fn spec(long: &'static str, short: Option<char>, arg: Arg, id: Id) -> Spec {
    Spec {
        long,
        short,
        arg,
        id,
    }
}

/// ipvsadm 1.31's popt table, in its order (the first match wins, which only
/// matters for the two `list` entries).
const SPECS: &[Spec] = &[
    spec("add-service", Some('A'), Arg::None, Id::AddService),
    spec("edit-service", Some('E'), Arg::None, Id::EditService),
    spec("delete-service", Some('D'), Arg::None, Id::DeleteService),
    spec("clear", Some('C'), Arg::None, Id::Clear),
    spec("list", Some('L'), Arg::None, Id::List),
    spec("list", Some('l'), Arg::None, Id::List),
    spec("zero", Some('Z'), Arg::None, Id::Zero),
    spec("add-server", Some('a'), Arg::None, Id::AddServer),
    spec("edit-server", Some('e'), Arg::None, Id::EditServer),
    spec("delete-server", Some('d'), Arg::None, Id::DeleteServer),
    spec("set", None, Arg::None, Id::Set),
    spec("help", Some('h'), Arg::None, Id::Help),
    spec("version", Some('v'), Arg::None, Id::Version),
    spec("restore", Some('R'), Arg::None, Id::Restore),
    spec("save", Some('S'), Arg::None, Id::Save),
    spec("start-daemon", None, Arg::Required, Id::StartDaemon),
    spec("stop-daemon", None, Arg::Required, Id::StopDaemon),
    spec("tcp-service", Some('t'), Arg::Required, Id::TcpService),
    spec("udp-service", Some('u'), Arg::Required, Id::UdpService),
    spec("sctp-service", None, Arg::Required, Id::SctpService),
    spec(
        "fwmark-service",
        Some('f'),
        Arg::Required,
        Id::FwmarkService,
    ),
    spec("scheduler", Some('s'), Arg::Required, Id::Scheduler),
    spec("persistent", Some('p'), Arg::Optional, Id::Persistent),
    spec("netmask", Some('M'), Arg::Required, Id::Netmask),
    spec("real-server", Some('r'), Arg::Required, Id::RealServer),
    spec("masquerading", Some('m'), Arg::None, Id::Masquerading),
    spec("ipip", Some('i'), Arg::None, Id::Ipip),
    spec("gatewaying", Some('g'), Arg::None, Id::Gatewaying),
    spec("weight", Some('w'), Arg::Required, Id::Weight),
    spec("u-threshold", Some('x'), Arg::Required, Id::UThreshold),
    spec("l-threshold", Some('y'), Arg::Required, Id::LThreshold),
    spec("numeric", Some('n'), Arg::None, Id::Numeric),
    spec("connection", Some('c'), Arg::None, Id::Connection),
    spec("mcast-interface", None, Arg::Required, Id::McastInterface),
    spec("syncid", None, Arg::Required, Id::Syncid),
    spec("timeout", None, Arg::None, Id::Timeout),
    spec("daemon", None, Arg::None, Id::Daemon),
    spec("stats", None, Arg::None, Id::Stats),
    spec("rate", None, Arg::None, Id::Rate),
    spec("thresholds", None, Arg::None, Id::Thresholds),
    spec("persistent-conn", None, Arg::None, Id::PersistentConn),
    spec("nosort", None, Arg::None, Id::NoSort),
    spec("sort", None, Arg::None, Id::Sort),
    spec("exact", Some('X'), Arg::None, Id::Exact),
    spec("ipv6", Some('6'), Arg::None, Id::Ipv6),
    spec("ops", Some('o'), Arg::None, Id::Ops),
    spec("pe", None, Arg::Required, Id::Pe),
    spec("sched-flags", Some('b'), Arg::Required, Id::SchedFlags),
    spec("mcast-group", None, Arg::Required, Id::McastGroup),
    spec("mcast-port", None, Arg::Required, Id::McastPort),
    spec("mcast-ttl", None, Arg::Required, Id::McastTtl),
    spec("sync-maxlen", None, Arg::Required, Id::SyncMaxlen),
    spec("tun-info", None, Arg::None, Id::TunInfo),
    spec("tun-type", None, Arg::Required, Id::TunType),
    spec("tun-port", None, Arg::Required, Id::TunPort),
    spec("tun-nocsum", None, Arg::None, Id::TunNocsum),
    spec("tun-csum", None, Arg::None, Id::TunCsum),
    spec("tun-remcsum", None, Arg::None, Id::TunRemcsum),
];

/// The option a word starts with, without reading its value or the rest
/// of a cluster: `--name[=value]`, or the first letter of `-abc`.
pub(super) fn leading_option(word: &str) -> Option<Id> {
    let spec = match word.strip_prefix("--") {
        Some(long) => {
            let name = long.split('=').next().unwrap_or(long);
            SPECS.iter().find(|s| s.long == name)
        }
        None => {
            let c = word.strip_prefix('-')?.chars().next()?;
            SPECS.iter().find(|s| s.short == Some(c))
        }
    };
    spec.map(|s| s.id)
}

/// One option as written, with its value.
#[derive(Debug)]
pub(super) struct Opt<'a> {
    pub(super) id: Id,
    /// How the user wrote it (`-t` or `--tcp-service`), for error messages.
    pub(super) name: String,
    pub(super) value: Option<&'a str>,
}

#[derive(Debug)]
pub(super) enum Word<'a> {
    Opt(Opt<'a>),
    /// A word that is not an option: `--set`'s timeouts, or a mistake.
    Arg(&'a str),
}

/// Splits words into options and arguments as popt 1.19 does for ipvsadm:
/// - `--name` or `--name=value` (exact names only, no abbreviations);
/// - `-abc` is a cluster of short options; the first one that takes a value
///   takes the rest of the word (`-t10.0.0.1:80`, `-p=60`);
/// - a required value is the next word whatever it looks like (`-s -p` gives
///   `-s` the value "-p"), but `-p`'s optional timeout is the next word only
///   if that word does not start with `-`;
/// - `-` alone and words not starting with `-` are arguments, and so is every
///   word after `--`.
pub(super) fn tokenize<'a>(args: &[&'a str]) -> Result<Vec<Word<'a>>, CommandError> {
    let mut words = Vec::new();
    let mut rest = args;
    let mut only_args = false;
    while let Some((&word, tail)) = rest.split_first() {
        rest = tail;
        if only_args || !word.starts_with('-') || word == "-" {
            words.push(Word::Arg(word));
        } else if word == "--" {
            only_args = true;
        } else if let Some(long) = word.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let Some(spec) = SPECS.iter().find(|s| s.long == name) else {
                return fail(format!("unknown option --{name}"));
            };
            let written = format!("--{name}");
            if spec.arg == Arg::None && inline.is_some() {
                return fail(format!("option {written} takes no value (in {word:?})"));
            }
            let value = take_value(spec, inline, &mut rest, &written)?;
            words.push(Word::Opt(Opt {
                id: spec.id,
                name: written,
                value,
            }));
        } else {
            let mut cluster = word.get(1..).unwrap_or_default();
            while let Some(c) = cluster.chars().next() {
                cluster = cluster.get(c.len_utf8()..).unwrap_or_default();
                let Some(spec) = SPECS.iter().find(|s| s.short == Some(c)) else {
                    return fail(format!("unknown option -{c} (in {word:?})"));
                };
                let written = format!("-{c}");
                if spec.arg == Arg::None {
                    if cluster.starts_with('=') {
                        return fail(format!("option {written} takes no value (in {word:?})"));
                    }
                    words.push(Word::Opt(Opt {
                        id: spec.id,
                        name: written,
                        value: None,
                    }));
                    continue;
                }
                // The rest of the cluster, if any, is the value ("=" dropped).
                let inline = if cluster.is_empty() {
                    None
                } else {
                    Some(cluster.strip_prefix('=').unwrap_or(cluster))
                };
                let value = take_value(spec, inline, &mut rest, &written)?;
                words.push(Word::Opt(Opt {
                    id: spec.id,
                    name: written,
                    value,
                }));
                break;
            }
        }
    }
    Ok(words)
}

/// The value of an option that takes one: written inline, or the next word.
fn take_value<'a>(
    spec: &Spec,
    inline: Option<&'a str>,
    rest: &mut &[&'a str],
    written: &str,
) -> Result<Option<&'a str>, CommandError> {
    if spec.arg == Arg::None {
        return Ok(None);
    }
    if let Some(v) = inline {
        return Ok(Some(v));
    }
    match rest.split_first() {
        Some((&next, tail)) if spec.arg == Arg::Required || !next.starts_with('-') => {
            *rest = tail;
            Ok(Some(next))
        }
        None if spec.arg == Arg::Required => fail(format!("option {written} needs a value")),
        _ => Ok(None),
    }
}

fn fail<T>(message: String) -> Result<T, CommandError> {
    Err(CommandError { message })
}
