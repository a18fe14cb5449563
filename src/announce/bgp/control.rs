//! A small client of BIRD's control socket (the text protocol `birdc`
//! speaks) and the parsers of the two replies the announcer reads: `show
//! protocols all` (sessions, exported routes) and `show bfd sessions`.
//!
//! The protocol: BIRD greets with `0001 BIRD x.y ready.`; each command is
//! one line; the reply is lines of a four-digit code followed by `-` (more
//! to come) or ` ` (the last line), and lines starting with a space that
//! continue the previous code. Codes 8xxx and 9xxx are errors. Nothing BIRD
//! sends may panic: a reply that does not parse is an error or, inside a
//! reply, a line that is skipped.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How long one exchange (connect, greeting, a command's whole reply) may
/// take: BIRD answers in microseconds; a BIRD that hangs must not hang the
/// announcer.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest reply read (a huge one means something is wrong: the
/// announcer never asks for route listings).
const MAX_REPLY: usize = 1 << 20;

/// One line of a reply, as BIRD sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `CODE-text` (`last: false`) or `CODE text` (`last: true`).
    Coded { code: u16, last: bool, text: String },
    /// ` text`: continues the previous code.
    More(String),
}

/// Parses one reply line (without its newline); `None` for a line that is
/// neither form.
pub fn parse_line(line: &str) -> Option<Line> {
    if let Some(text) = line.strip_prefix(' ') {
        return Some(Line::More(text.to_string()));
    }
    let bytes = line.as_bytes();
    if bytes.len() < 4 || !bytes[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code: u16 = line.get(..4)?.parse().ok()?;
    let last = match bytes.get(4) {
        None | Some(b' ') => true,
        Some(b'-') => false,
        Some(_) => return None,
    };
    Some(Line::Coded {
        code,
        last,
        text: line.get(5..).unwrap_or("").to_string(),
    })
}

/// A whole reply: each line's text with its code (continuations carry the
/// code of the line they continue).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub lines: Vec<(u16, String)>,
}

/// What went wrong talking to BIRD.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach BIRD's control socket {path}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("BIRD's control socket: {0}")]
    Io(#[from] io::Error),
    #[error("BIRD did not answer within {} s", EXCHANGE_TIMEOUT.as_secs())]
    Timeout,
    #[error("BIRD sent a line that is not of its protocol: {0:?}")]
    Garbage(String),
    #[error("BIRD refused {command:?}: {code} {text}")]
    Refused {
        command: String,
        code: u16,
        text: String,
    },
}

/// A connection to BIRD's control socket, greeted.
pub struct Control {
    reader: BufReader<UnixStream>,
}

impl Control {
    /// Connects and reads BIRD's greeting.
    pub async fn connect(socket: &Path) -> Result<Control, ControlError> {
        let stream = tokio::time::timeout(EXCHANGE_TIMEOUT, UnixStream::connect(socket))
            .await
            .map_err(|_| ControlError::Timeout)?
            .map_err(|source| ControlError::Connect {
                path: socket.display().to_string(),
                source,
            })?;
        let mut control = Control {
            reader: BufReader::new(stream),
        };
        control.read_reply("(greeting)").await?;
        Ok(control)
    }

    /// Sends `command` and reads its whole reply; an 8xxx/9xxx code is an
    /// error.
    pub async fn command(&mut self, command: &str) -> Result<Reply, ControlError> {
        let line = format!("{}\n", command.replace('\n', " "));
        tokio::time::timeout(
            EXCHANGE_TIMEOUT,
            self.reader.get_mut().write_all(line.as_bytes()),
        )
        .await
        .map_err(|_| ControlError::Timeout)??;
        self.read_reply(command).await
    }

    async fn read_reply(&mut self, command: &str) -> Result<Reply, ControlError> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, read_reply(&mut self.reader, command))
            .await
            .map_err(|_| ControlError::Timeout)?
    }
}

async fn read_reply(
    reader: &mut BufReader<UnixStream>,
    command: &str,
) -> Result<Reply, ControlError> {
    let mut reply = Reply::default();
    let mut code = None;
    let mut size = 0;
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let n = reader.read_until(b'\n', &mut raw).await?;
        if n == 0 {
            return Err(
                io::Error::new(io::ErrorKind::UnexpectedEof, "BIRD closed the socket").into(),
            );
        }
        size += n;
        if size > MAX_REPLY {
            return Err(ControlError::Garbage(format!(
                "a reply longer than {MAX_REPLY} bytes"
            )));
        }
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches(['\n', '\r']);
        match parse_line(text) {
            Some(Line::Coded {
                code: c,
                last,
                text,
            }) => {
                if c >= 8000 {
                    return Err(ControlError::Refused {
                        command: command.to_string(),
                        code: c,
                        text,
                    });
                }
                code = Some(c);
                reply.lines.push((c, text));
                if last {
                    return Ok(reply);
                }
            }
            Some(Line::More(text)) => match code {
                Some(c) => reply.lines.push((c, text)),
                None => return Err(ControlError::Garbage(text)),
            },
            None => return Err(ControlError::Garbage(text.to_string())),
        }
    }
}

/// One BGP protocol of `show protocols all`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// `Established`, `Active`, `Connect`, `Idle`… (`BGP state:`), or the
    /// protocol's state when BIRD gives no BGP state.
    pub state: String,
    /// The protocol's last state change, RFC 3339 (BIRD runs with TZ=UTC
    /// and `timeformat protocol iso long`).
    pub since: Option<String>,
    /// Routes exported now (`Routes: … exported`), when the channel is up.
    pub exported: Option<u64>,
}

/// The BGP protocols of a `show protocols all` reply, by name.
pub fn parse_protocols(reply: &Reply) -> BTreeMap<String, Session> {
    let mut sessions = BTreeMap::new();
    let mut current: Option<(String, Session)> = None;
    for (code, text) in &reply.lines {
        match code {
            // A protocol's summary line: name, proto, table, state, since
            // (two words in iso long), info.
            1002 => {
                if let Some((name, session)) = current.take() {
                    sessions.insert(name, session);
                }
                let words: Vec<&str> = text.split_whitespace().collect();
                if let [name, "BGP", _table, state, rest @ ..] = &words[..] {
                    let since = match rest {
                        [day, time, ..] => bird_time(day, time),
                        _ => None,
                    };
                    current = Some((
                        name.to_string(),
                        Session {
                            state: state.to_string(),
                            since,
                            exported: None,
                        },
                    ));
                }
            }
            _ => {
                let Some((_, session)) = current.as_mut() else {
                    continue;
                };
                let text = text.trim();
                if let Some(state) = text.strip_prefix("BGP state:") {
                    if let Some(state) = state.split_whitespace().next() {
                        session.state = state.to_string();
                    }
                } else if let Some(routes) = text.strip_prefix("Routes:") {
                    session.exported = routes.split(',').find_map(|part| {
                        part.trim()
                            .strip_suffix(" exported")
                            .and_then(|n| n.trim().parse().ok())
                    });
                }
            }
        }
    }
    if let Some((name, session)) = current {
        sessions.insert(name, session);
    }
    sessions
}

/// BFD session states of a `show bfd sessions` reply, by neighbour.
pub fn parse_bfd(reply: &Reply) -> BTreeMap<IpAddr, String> {
    reply
        .lines
        .iter()
        .filter_map(|(_, text)| {
            let words: Vec<&str> = text.split_whitespace().collect();
            match words[..] {
                [address, _interface, state, ..] => {
                    Some((address.parse().ok()?, state.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

/// `2026-12-07 03:40:47` or `2026-12-07 03:40:47.123` (UTC) as RFC 3339;
/// `None` for anything else.
fn bird_time(day: &str, time: &str) -> Option<String> {
    let seconds = time.split('.').next()?;
    let text = format!("{day}T{seconds}Z");
    humantime::parse_rfc3339(&text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str) -> Reply {
        let mut reply = Reply::default();
        let mut code = 0;
        for line in text.lines() {
            match parse_line(line).unwrap() {
                Line::Coded { code: c, text, .. } => {
                    code = c;
                    reply.lines.push((c, text));
                }
                Line::More(text) => reply.lines.push((code, text)),
            }
        }
        reply
    }

    #[test]
    fn lines_are_coded_or_continue() {
        assert_eq!(
            parse_line("0001 BIRD 2.0.12 ready."),
            Some(Line::Coded {
                code: 1,
                last: true,
                text: "BIRD 2.0.12 ready.".into()
            })
        );
        assert_eq!(
            parse_line("1002-r1  BGP"),
            Some(Line::Coded {
                code: 1002,
                last: false,
                text: "r1  BGP".into()
            })
        );
        assert_eq!(
            parse_line("0000"),
            Some(Line::Coded {
                code: 0,
                last: true,
                text: String::new()
            })
        );
        assert_eq!(parse_line(" more"), Some(Line::More("more".into())));
        for garbage in [
            "",
            "12",
            "abcd-x",
            "1234x",
            "12é4 x",
            "\u{0}\u{0}\u{0}\u{0}",
        ] {
            assert_eq!(parse_line(garbage), None, "{garbage:?}");
        }
    }

    /// `show protocols all` as BIRD 2.0.12 printed it (trimmed), with
    /// `timeformat protocol iso long`.
    const PROTOCOLS: &str = "\
2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     2026-12-07 03:40:43  
1006-
1002-vips4      Kernel     master4    up     2026-12-07 03:40:43  
1006-  Channel ipv4
     State:          UP
     Routes:         2 imported, 0 exported, 2 preferred
1002-peer1      BGP        ---        up     2026-12-07 03:40:47  Established   
1006-  BGP state:          Established
     Neighbor address: 10.90.0.1
     Neighbor AS:      65000
   Channel ipv4
     State:          UP
     Routes:         0 imported, 2 exported, 0 preferred
     BGP Next hop:   10.90.0.2
 
1002-peer2      BGP        ---        start  2026-12-07 03:40:43  Active        Socket: Connection refused
1006-  BGP state:          Active
     Neighbor address: 10.90.0.9
     Connect delay:    0.797/5
   Channel ipv4
     State:          DOWN
0000 
";

    #[test]
    fn protocols_give_each_sessions_state_and_exports() {
        let sessions = parse_protocols(&reply(PROTOCOLS));
        assert_eq!(sessions.len(), 2, "{sessions:?}");
        assert_eq!(
            sessions["peer1"],
            Session {
                state: "Established".into(),
                since: Some("2026-12-07T03:40:47Z".into()),
                exported: Some(2),
            }
        );
        assert_eq!(
            sessions["peer2"],
            Session {
                state: "Active".into(),
                since: Some("2026-12-07T03:40:43Z".into()),
                exported: None,
            }
        );
    }

    #[test]
    fn bfd_sessions_by_neighbour() {
        let text = "\
1020-bfd1:
 IP address                Interface  State      Since         Interval  Timeout
 10.90.0.1                 bxl        Up         2026-12-07 03:40:44    0.100    0.300
 2001:db8::1               ---        Down       2026-12-07 03:40:44    1.000    0.000
0000 
";
        let bfd = parse_bfd(&reply(text));
        assert_eq!(bfd.len(), 2);
        assert_eq!(bfd[&"10.90.0.1".parse::<IpAddr>().unwrap()], "Up");
        assert_eq!(bfd[&"2001:db8::1".parse::<IpAddr>().unwrap()], "Down");
    }

    #[test]
    fn garbage_in_a_reply_is_skipped_not_fatal() {
        let odd = Reply {
            lines: vec![
                (1002, "peer1 BGP".into()),
                (1002, "peer2 BGP --- up not-a-date 99:99:99".into()),
                (1006, "Routes: many exported".into()),
                (1006, "BGP state:".into()),
                (1002, "".into()),
                (1002, "peer3 BGP --- up 2026-13-45 03:40:47".into()),
                (
                    1006,
                    "Routes: 1 imported, 18446744073709551616 exported".into(),
                ),
                (1020, "not-an-address eth0 Up".into()),
                (1020, "\u{fffd}\u{fffd}".into()),
            ],
        };
        let sessions = parse_protocols(&odd);
        assert_eq!(sessions["peer2"].since, None);
        assert_eq!(sessions["peer2"].exported, None);
        assert_eq!(sessions["peer2"].state, "up");
        assert_eq!(sessions["peer3"].since, None);
        assert_eq!(sessions["peer3"].exported, None);
        assert!(!sessions.contains_key("peer1"));
        assert!(parse_bfd(&odd).is_empty());
    }

    /// A fake BIRD on a socket: the client reads whole replies, reports
    /// refusals and garbage as errors, and never hangs on a silent peer.
    #[tokio::test]
    async fn the_client_speaks_the_protocol_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bird.ctl");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let script: [&[u8]; 3] = [
                b"1002-peer1 BGP --- up 2026-12-07 03:40:47 Established\n 1006 x\n0000 \n",
                b"9001 syntax error, unexpected CF_SYM_UNDEFINED\n",
                b"\xff\xfegarbage\n",
            ];
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"0001 BIRD 2.0.12 ready.\n").await.unwrap();
            let mut buf = [0u8; 256];
            for answer in script {
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(answer).await.unwrap();
            }
            // Then silence on an open socket.
            let _ = s.read(&mut buf).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let mut control = Control::connect(&path).await.unwrap();
        let reply = control.command("show protocols all").await.unwrap();
        assert_eq!(reply.lines.len(), 3);
        assert_eq!(reply.lines[1], (1002, "1006 x".into()));
        let refused = control.command("bogus").await.unwrap_err();
        assert!(
            matches!(refused, ControlError::Refused { code: 9001, .. }),
            "{refused}"
        );
        let garbage = control.command("show status").await.unwrap_err();
        assert!(matches!(garbage, ControlError::Garbage(_)), "{garbage}");
        tokio::time::pause();
        let silent = control.command("show status").await.unwrap_err();
        assert!(matches!(silent, ControlError::Timeout), "{silent}");
        server.abort();
        let missing = Control::connect(&dir.path().join("none"))
            .await
            .err()
            .unwrap();
        assert!(matches!(missing, ControlError::Connect { .. }), "{missing}");
    }
}
