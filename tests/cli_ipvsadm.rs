//! ipvsadm's command line against a real node (`-Ln`, `-S`, `-A --help`,
//! the refusals with their pointers, the limits), the messages of a CLI
//! pointed at something that is not a node's API (a closed port, the Raft
//! port, an HTML page), two nodes on one directory, and `--help`.

#[path = "cluster/harness.rs"]
mod harness;

use harness::Cluster;
use std::io::{Read, Write};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_ipvs-manager");

/// Runs the CLI with `args` (the server, when given, first), in an
/// environment without the client's variables.
fn run(server: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BINARY);
    cmd.env_remove("IPVS_MANAGER_SERVER")
        .env_remove("IPVS_MANAGER_TOKEN")
        .env_remove("IPVS_MANAGER_CA_FILE")
        .env("NO_COLOR", "1");
    if let Some(server) = server {
        cmd.args(["--server", server]);
    }
    cmd.args(args).output().expect("run ipvs-manager")
}

/// stdout of a command that must succeed.
fn ok(server: Option<&str>, args: &[&str]) -> String {
    let out = run(server, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a command that must fail; nothing on stdout.
fn fails(server: Option<&str>, args: &[&str]) -> String {
    let out = run(server, args);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_has(text: &str, words: &[&str]) {
    for word in words {
        assert!(text.contains(word), "{word:?} missing from:\n{text}");
    }
}

#[test]
fn ipvsadm_s_list_and_save_show_the_desired_state() {
    let cluster = Cluster::start(1);
    let server = format!("127.0.0.1:{}", cluster.nodes[0].http_port());
    let s = Some(server.as_str());
    ok(s, &["-A", "-t", "192.0.2.10:80", "-s", "wrr"]);
    // -a without -g/-m/-i: direct routing, as ipvsadm.
    ok(s, &["-a", "-t", "192.0.2.10:80", "-r", "198.51.100.11"]);
    ok(
        s,
        &[
            "-a",
            "-t",
            "192.0.2.10:80",
            "-r",
            "198.51.100.12:8080",
            "-m",
            "-w",
            "70000",
        ],
    );
    ok(
        s,
        &["-A", "-u", "192.0.2.53:53", "-p", "-M", "255.255.255.0"],
    );

    let listed = ok(s, &["list"]);
    assert_has(
        &listed,
        &[
            "TCP  192.0.2.10:80 wrr",
            "UDP  192.0.2.53:53 wlc persistent",
        ],
    );
    for spelling in [
        &["-Ln"][..],
        &["-L"],
        &["-l", "-n"],
        &["--list"],
        &["-L", "--sort"],
    ] {
        assert_eq!(ok(s, spelling), listed, "{spelling:?}");
    }
    assert_eq!(ok(s, &["-Ln", "--stats"]), ok(s, &["list", "--stats"]));
    assert_eq!(
        ok(s, &["-L", "--thresholds"]),
        ok(s, &["list", "--thresholds"])
    );

    // One service, as ipvsadm -Ln -t prints it: no version line.
    let one = ok(s, &["-Ln", "-t", "192.0.2.10:80"]);
    assert!(
        one.starts_with("Prot LocalAddress:Port Scheduler Flags\n"),
        "{one}"
    );
    assert_has(
        &one,
        &[
            "TCP  192.0.2.10:80 wrr",
            "198.51.100.11:80",
            "198.51.100.12:8080",
        ],
    );
    assert!(!one.contains("192.0.2.53"), "{one}");
    let missing = fails(s, &["-L", "-t", "192.0.2.99:80"]);
    assert_has(
        &missing,
        &["no service TCP 192.0.2.99:80", "No such service"],
    );

    let saved = ok(s, &["save"]);
    for spelling in [&["-S"][..], &["-Sn"], &["--save", "-n"], &["--save"]] {
        assert_eq!(ok(s, spelling), saved, "{spelling:?}");
    }
    // -a's default is -g; the weight above 65535 is the kernel's to take.
    assert_has(
        &saved,
        &[
            "-a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 1",
            "-a -t 192.0.2.10:80 -r 198.51.100.12:8080 -m -w 70000",
        ],
    );
    // The API's default is masq: one body without `forward`.
    let (status, body) = cluster.send_retrying(
        0,
        "POST",
        "/api/v1/services/tcp-192.0.2.10-80/servers",
        Some(&serde_json::json!({"address": "198.51.100.13"})),
    );
    assert_eq!(status, 201, "{body}");
    assert!(body.contains(r#""forward":"masq""#), "{body}");

    // ipvsadm's own refusals of list and save options.
    assert_has(&fails(s, &["-L", "-c", "--stats"]), &["-c", "--stats"]);
    assert_has(
        &fails(s, &["-S", "-t", "192.0.2.10:80"]),
        &["-t", "not valid with -S"],
    );
}

#[test]
fn limits_are_refused_naming_them() {
    let cluster = Cluster::start(1);
    let server = format!("127.0.0.1:{}", cluster.nodes[0].http_port());
    let s = Some(server.as_str());
    ok(s, &["-A", "-t", "192.0.2.10:80"]);
    let weight = fails(
        s,
        &[
            "-a",
            "-t",
            "192.0.2.10:80",
            "-r",
            "198.51.100.11",
            "-w",
            "2147483648",
        ],
    );
    assert_has(
        &weight,
        &["invalid weight \"2147483648\"", "0 to 2147483647"],
    );
    let threshold = fails(
        s,
        &[
            "-a",
            "-t",
            "192.0.2.10:80",
            "-r",
            "198.51.100.11",
            "-x",
            "2147483648",
        ],
    );
    assert_has(
        &threshold,
        &["0 to 2147483647 (the kernel's and ipvsadm's limit)"],
    );
    // The kernel takes a mask with holes; the cluster does not, saying why.
    let mask = fails(s, &["-A", "-t", "192.0.2.11:80", "-p", "-M", "255.0.255.0"]);
    assert_has(
        &mask,
        &["400 Bad Request", "255.0.255.0 has holes", "255.0.0.0 (/8)"],
    );
    assert!(!ok(s, &["-Sn"]).contains("192.0.2.11"));
}

#[test]
fn help_and_refusals_need_no_node() {
    // No node listens here: help and the refusals never connect.
    let nowhere = Some("127.0.0.1:9");
    for (args, words) in [
        (
            &["-A", "--help"][..],
            &["Usage: ipvs-manager -A|--add-service"][..],
        ),
        (
            &["-a", "-h"],
            &["direct routing; the default here", "default to masq"],
        ),
        (&["-at", "--help"], &["-a|--add-server"]),
        (
            &["-Ln", "--help"],
            &["-L|-l|--list", "/proc/net/ip_vs_conn"],
        ),
        (&["-S", "--help"], &["-S|--save"]),
        (&["-Z", "--help"], &["ipvsadm -Z"]),
    ] {
        assert_has(&ok(nowhere, args), words);
    }
    assert_eq!(ok(nowhere, &["-v"]), ok(nowhere, &["--version"]));
    for (args, words) in [
        (&["-R"][..], &["ipvs-manager restore", "--merge"][..]),
        (&["-Z"], &["ipvsadm -Z"]),
        (&["--set", "10", "10", "10"], &["ipvsadm --set"]),
        (&["--start-daemon", "master"], &["ipvsadm --start-daemon"]),
        (&["--stop-daemon", "backup"], &["sync daemon"]),
        (&["-L", "--timeout"], &["ipvsadm -L --timeout"]),
        (&["-L", "--daemon"], &["ipvsadm -L --daemon"]),
    ] {
        let err = fails(nowhere, args);
        assert_has(&err, words);
        assert!(!err.contains("cannot reach"), "{args:?} connected: {err}");
    }
    // -Lnc reads this host's kernel, never the node.
    let conns = run(nowhere, &["-Lnc"]);
    let stderr = String::from_utf8_lossy(&conns.stderr);
    if std::path::Path::new("/proc/net/ip_vs_conn").exists() {
        assert!(String::from_utf8_lossy(&conns.stdout).starts_with("IPVS connection entries\n"));
    } else {
        assert_has(&stderr, &["/proc/net/ip_vs_conn", "modprobe ip_vs"]);
    }
}

#[test]
fn a_cli_pointed_elsewhere_says_where_and_what_to_check() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("port").port();
    drop(closed);
    let server = format!("127.0.0.1:{port}");
    for args in [&["list"][..], &["-Ln"], &["-A", "-t", "192.0.2.10:80"]] {
        let err = fails(Some(&server), args);
        assert_has(
            &err,
            &[
                &format!("cannot reach http://127.0.0.1:{port} (Connection refused"),
                "no ipvs-manager API answers there",
                "--server or IPVS_MANAGER_SERVER (default http://127.0.0.1:2221)",
            ],
        );
    }
    // The same address from the environment.
    let out = Command::new(BINARY)
        .env("IPVS_MANAGER_SERVER", &server)
        .arg("save")
        .output()
        .expect("run");
    assert_has(
        &String::from_utf8_lossy(&out.stderr),
        &["IPVS_MANAGER_SERVER", &format!("127.0.0.1:{port}")],
    );

    // A node's Raft port: a bare 404.
    let cluster = Cluster::start(1);
    let raft = format!("127.0.0.1:{}", cluster.nodes[0].raft_port());
    for args in [&["list"][..], &["-Sn"], &["cluster", "status"]] {
        let err = fails(Some(&raft), args);
        assert_has(
            &err,
            &[
                &format!("http://{raft} answered 404 Not Found with an empty body"),
                "does not look like an ipvs-manager API",
                "SERVER_PORT",
                "not its RAFT_PORT",
            ],
        );
    }

    // A Raft port that wants the cluster secret answers 401 in the API's
    // JSON; it is named a Raft port all the same.
    let mut secret = Cluster::new(1);
    secret.nodes[0].env.push((
        "CLUSTER_SECRET".into(),
        "a-secret-of-more-than-32-characters".into(),
    ));
    secret.start_all();
    let raft = format!("127.0.0.1:{}", secret.nodes[0].raft_port());
    let err = fails(Some(&raft), &["-Ln"]);
    assert_has(
        &err,
        &[
            "401 Unauthorized: refused by the cluster secret",
            &format!("http://{raft} is a node's Raft port, not its API"),
            "SERVER_PORT",
        ],
    );

    // A node serving TLS with a certificate the CLI does not trust: the
    // address is right, the CA is missing.
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let (cert, key) = server_cert(&ca);
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert).expect("write");
    std::fs::write(&key_file, key).expect("write");
    let mut tls = Cluster::new(1);
    tls.nodes[0].scheme = "https";
    tls.nodes[0].env = vec![
        ("TLS_CERT_FILE".into(), cert_file.display().to_string()),
        ("TLS_KEY_FILE".into(), key_file.display().to_string()),
    ];
    tls.configure_client(None, Some(ca.pem().as_bytes()));
    tls.start_all();
    let url = tls.nodes[0].url("");
    let err = fails(Some(&url), &["list"]);
    assert_has(
        &err,
        &[
            &format!("cannot reach {url}"),
            "its TLS certificate is not trusted",
            "--ca-file (or IPVS_MANAGER_CA_FILE)",
        ],
    );

    // Some web server's page.
    let (page, _server) = html_server();
    let err = fails(Some(&page), &["list"]);
    assert_has(
        &err,
        &[
            "answered 200 OK with an HTML page",
            "does not look like an ipvs-manager API",
        ],
    );
}

/// A test CA.
fn ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ipvs-manager CLI test CA");
    let key = rcgen::KeyPair::generate().expect("key");
    rcgen::CertifiedIssuer::self_signed(params, key).expect("CA")
}

/// A certificate for 127.0.0.1 signed by `ca`, and its key (PEM).
fn server_cert(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let cert = params.signed_by(&key, ca).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

/// A server on loopback that answers every request with an HTML page;
/// its address, and the thread (which ends with the test process).
fn html_server() -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let thread = std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let page = "<!DOCTYPE html><html><body>It works!</body></html>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    (addr, thread)
}

#[test]
fn a_second_node_on_a_directory_names_the_one_holding_it() {
    let cluster = Cluster::start(1);
    let holder = cluster.nodes[0].pid().expect("running");
    let dir = &cluster.nodes[0].dir;
    let mut second = Command::new(BINARY)
        .env("RAFT_VOL_DIR", dir)
        .env("SERVER_PORT", "0")
        .env("RAFT_PORT", "0")
        .env("IPVS_KERNEL", "memory")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a second node");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = second.kill();
            panic!("the second node did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_has(
        &stderr,
        &[
            &format!(
                "another ipvs-manager process (pid {holder}) holds {}",
                dir.display()
            ),
            "give this node a RAFT_VOL_DIR of its own",
        ],
    );
    assert!(!stderr.contains("could not acquire lock"), "{stderr}");
    assert!(!stderr.contains("Os {"), "{stderr}");
    assert!(cluster.nodes[0].is_running());
}

#[test]
fn help_says_what_no_subcommand_does_and_groups_the_options() {
    for flag in ["--help", "-h"] {
        let help = ok(None, &[flag]);
        assert_has(
            &help,
            &[
                "With no subcommand it runs this host's cluster node, the daemon",
                "ipvs-manager -L|-l",
                "-a defaults to -g (direct routing)",
            ],
        );
        // The headings, not the mentions of them in the text above.
        let heading = |name: &str| {
            help.lines()
                .position(|l| l.starts_with(name) && l.ends_with(':'))
                .and_then(|line| help.find(help.lines().nth(line)?))
                .unwrap_or_else(|| panic!("{flag}: no heading {name}"))
        };
        let client = heading("Client options (");
        let node = heading("Node settings (no subcommand: run this host's cluster node)");
        let at = |option: &str| help.find(option).unwrap_or_else(|| panic!("{option}"));
        // The client's options under their heading, the node's under theirs.
        for option in [
            "--server <SERVER>",
            "--token <TOKEN>",
            "--ca-file <CA_FILE>",
        ] {
            assert!(client < at(option) && at(option) < node, "{flag}: {option}");
        }
        for option in [
            "--server-port",
            "--raft-vol-dir",
            "--raft-leader",
            "--ipvs-kernel",
        ] {
            assert!(at(option) > node, "{flag}: {option}");
        }
    }
}
