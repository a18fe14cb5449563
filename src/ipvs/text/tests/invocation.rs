//! Whole command lines (`parse_invocation`): ipvsadm's commands other than
//! table changes, with its rules for their options. The table was checked
//! against ipvsadm 1.31 in the VM: each line it accepts is accepted here and
//! means the same, each it refuses is refused for the same reason.

use super::super::{parse_command, parse_invocation, Invocation, ListOptions, ListRequest};
use crate::ipvs::Change;
use crate::model::{Family, Protocol, ServiceKey};

fn invocation(line: &str) -> Result<Invocation, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    parse_invocation(&words).map_err(|e| e.message)
}

fn list(line: &str) -> ListRequest {
    match invocation(line) {
        Ok(Invocation::List(request)) => request,
        other => panic!("{line:?} should be a listing: {other:?}"),
    }
}

#[test]
fn list_and_its_spellings() {
    let plain = ListRequest::default();
    for line in [
        "-L",
        "-l",
        "--list",
        "-Ln",
        "-L -n",
        "-nL",
        "-l -n",
        "--list --numeric",
    ] {
        // -nL: popt hands ipvsadm -n first, which is not a command.
        if line == "-nL" {
            assert!(invocation(line).is_err(), "{line}");
            continue;
        }
        assert_eq!(list(line), plain, "{line}");
    }
    // --sort does nothing, in ipvsadm too; --nosort is kept.
    assert_eq!(list("-Ln --sort"), plain);
    assert!(list("-Ln --nosort").nosort);
}

#[test]
fn list_columns() {
    let cols = |line| list(line).options;
    assert_eq!(
        cols("-Ln --stats --exact"),
        ListOptions {
            stats: true,
            exact: true,
            ..Default::default()
        }
    );
    // Two column modes are taken; the printer picks one as ipvsadm does.
    assert_eq!(
        cols("-L --stats --rate"),
        ListOptions {
            stats: true,
            rate: true,
            ..Default::default()
        }
    );
    assert!(cols("-L --thresholds --persistent-conn").thresholds);
    assert!(cols("-L --tun-info").tun_info);
}

#[test]
fn connections_and_one_service() {
    let conns = list("-Lnc");
    assert!(conns.connections);
    assert_eq!(list("-Lc"), conns, "numeric or not, the same");
    assert!(list("-L -c --exact --nosort --tun-info").connections);
    // -c takes --persistent-conn: the persistence engine's columns.
    assert!(list("-Lnc --persistent-conn").options.persistent_conn);
    assert_eq!(
        list("-Ln -t 10.0.0.1:80").service,
        Some(ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port: 80
        })
    );
    assert_eq!(
        list("-L -f 7 -6").service,
        Some(ServiceKey::Fwmark {
            family: Family::Ipv6,
            mark: 7
        })
    );
    assert_eq!(
        list("-L -u [2001:db8::1]:53 --stats").service,
        Some(ServiceKey::Inet {
            protocol: Protocol::Udp,
            addr: "2001:db8::1".parse().unwrap(),
            port: 53
        })
    );
    assert!(list("-L --timeout").timeout);
    assert!(list("-L --daemon").daemon);
}

#[test]
fn list_refusals_are_ipvsadm_s() {
    // (line, words the message must contain), each refused by ipvsadm 1.31
    // too (its message in the comment).
    let cases: &[(&str, &[&str])] = &[
        // options conflicts in the list command
        ("-L -c --stats", &["-c", "--stats", "cannot go together"]),
        (
            "-L --timeout --persistent-conn",
            &["--timeout", "--persistent-conn"],
        ),
        ("-L --daemon --stats", &["--daemon", "--stats"]),
        // The option 'service-address' conflicts with the 'connection' option
        ("-L -c -t 10.0.0.1:80", &["-c", "-t", "exclude each other"]),
        (
            "-L --timeout --daemon",
            &["--timeout", "--daemon", "exclude"],
        ),
        // multiple 'numeric' / 'connection' options specified
        ("-L -n -n", &["-n", "twice"]),
        ("-L -c -c", &["-c", "twice"]),
        // Illegal '…' option with the 'list' command
        ("-L -x 5", &["-x", "not valid with -L"]),
        ("-L -w 1", &["-w", "not valid with -L"]),
        ("-L -s rr", &["-s", "not valid with -L"]),
        ("-L -r 10.0.0.2", &["-r", "not valid with -L"]),
        // -6 used before -f
        ("-L -6", &["-6", "must follow -f"]),
        // unexpected argument extra
        ("-Lnc extra", &["unexpected argument \"extra\""]),
        // multiple commands specified
        ("-L -S", &["one command", "-S"]),
    ];
    for (line, words) in cases {
        let err = invocation(line).expect_err(line);
        for word in *words {
            assert!(err.contains(word), "{line:?}: {err:?} lacks {word:?}");
        }
    }
}

#[test]
fn save_takes_numeric_only() {
    for line in [
        "-S",
        "-Sn",
        "-S -n",
        "--save",
        "--save -n",
        "--save --numeric",
    ] {
        assert_eq!(invocation(line), Ok(Invocation::Save), "{line}");
    }
    // Illegal '…' option with the 'save' command; multiple 'numeric'.
    for (line, word) in [
        ("-S -t 10.0.0.1:80", "-t"),
        ("-S --stats", "--stats"),
        ("-S -c", "-c"),
        ("-S --exact", "--exact"),
        ("-Sn -n", "twice"),
    ] {
        let err = invocation(line).expect_err(line);
        assert!(err.contains(word), "{line:?}: {err}");
    }
}

#[test]
fn the_other_commands() {
    assert_eq!(invocation("-R"), Ok(Invocation::Restore));
    assert_eq!(invocation("--restore"), Ok(Invocation::Restore));
    assert_eq!(
        invocation("--start-daemon master --mcast-interface eth0"),
        Ok(Invocation::SyncDaemon { start: true })
    );
    assert_eq!(
        invocation("--stop-daemon backup"),
        Ok(Invocation::SyncDaemon { start: false })
    );
    assert_eq!(invocation("-v"), Ok(Invocation::Version));
    assert_eq!(invocation("--version"), Ok(Invocation::Version));
    // Table changes are what parse_command makes of them.
    let line = ["-a", "-t", "10.0.0.1:80", "-r", "10.0.0.2"];
    assert_eq!(
        parse_invocation(&line),
        Ok(Invocation::Change(parse_command(&line).unwrap()))
    );
    assert_eq!(invocation("-C"), Ok(Invocation::Change(Change::Flush)));
    assert_eq!(invocation("-Z"), Ok(Invocation::Change(Change::Zero(None))));
}

#[test]
fn help_after_any_command_is_that_command_s() {
    let help = |command| Ok(Invocation::Help { command });
    assert_eq!(invocation("-h"), help(None));
    assert_eq!(invocation("--help"), help(None));
    assert_eq!(invocation("-h -A"), help(None));
    // ipvsadm refuses these ("invalid option `--help'"); here they help.
    assert_eq!(invocation("-A --help"), help(Some("add-service")));
    assert_eq!(invocation("-A -h"), help(Some("add-service")));
    // Before the checks a bare -a would fail (no service, no server).
    assert_eq!(invocation("-a --help"), help(Some("add-server")));
    assert_eq!(invocation("-at --help"), help(Some("add-server")));
    assert_eq!(
        invocation("-e -t 10.0.0.1:80 --help"),
        help(Some("edit-server"))
    );
    assert_eq!(invocation("-Ln --help"), help(Some("list")));
    assert_eq!(invocation("-Sn -h"), help(Some("save")));
    assert_eq!(invocation("--set --help"), help(Some("set")));
    assert_eq!(invocation("-Z --help"), help(Some("zero")));
    assert_eq!(invocation("-R --help"), help(Some("restore")));
    assert_eq!(
        invocation("--start-daemon master --help"),
        help(Some("start-daemon"))
    );
    // Even after a mistake, help is what was asked for.
    assert_eq!(invocation("-A --bogus --help"), help(Some("add-service")));
}

#[test]
fn restore_input_still_takes_table_changes_only() {
    for (line, message) in [
        (&["-L", "-n"][..], "-L lists the table"),
        (&["-S"][..], "-S prints the rules"),
        (&["-Ln"][..], "-L lists the table"),
    ] {
        let err = parse_command(line).unwrap_err().message;
        assert!(err.starts_with(message), "{line:?}: {err}");
        assert!(err.contains("only table changes"), "{line:?}: {err}");
    }
}
