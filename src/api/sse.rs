//! Reading server-sent events (the `text/event-stream` format of the HTML
//! standard), the wire format of the API's watches: the CLI's `list
//! --watch` and the tests read them with [`Parser`]. Pure: bytes in, events
//! out, whatever the chunking.

/// One event: its `event:` (`message` when absent), its `id:`, its
/// `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: String,
    pub id: Option<String>,
    pub data: String,
}

/// A line longer than this is refused: no event of the API comes near it
/// (a list of 5,000 services of 10 servers each is about 5 MiB).
pub const MAX_LINE: usize = 64 * 1024 * 1024;

/// A line of the stream was longer than [`MAX_LINE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream line longer than {MAX_LINE} bytes")]
pub struct LineTooLong;

/// Collects the bytes of an event stream as they come.
#[derive(Debug, Default)]
pub struct Parser {
    /// The start of a line whose end has not come yet.
    partial: Vec<u8>,
    kind: Option<String>,
    id: Option<String>,
    data: Option<String>,
    /// The previous chunk ended with `\r`: a `\n` first in the next one
    /// belongs to that line end.
    after_cr: bool,
}

impl Parser {
    /// The events `bytes` completes, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, LineTooLong> {
        let mut events = Vec::new();
        let mut bytes = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = bytes.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&bytes[..end]);
            let crlf = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if crlf {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        if self.partial.len() + bytes.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        self.partial.extend_from_slice(bytes);
        Ok(events)
    }

    /// One whole line; a blank one ends an event.
    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let kind = self.kind.take();
            let id = self.id.take();
            let data = self.data.take()?;
            return Some(Event {
                kind: kind.unwrap_or_else(|| "message".to_string()),
                id,
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.kind = Some(value.to_string()),
            "id" => self.id = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            // `retry:` is for browsers; unknown fields are ignored.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, id: Option<&str>, data: &str) -> Event {
        Event {
            kind: kind.into(),
            id: id.map(str::to_string),
            data: data.into(),
        }
    }

    #[test]
    fn events_come_whole_however_the_bytes_are_cut() {
        let stream = "retry: 1000\n\n: a comment\nevent: change\nid: 7\ndata: {\"a\":1}\n\n\
                      data: one\r\ndata: two\r\n\r\nevent: progress\rid: 9\rdata:9\r\r";
        let want = vec![
            event("change", Some("7"), "{\"a\":1}"),
            event("message", None, "one\ntwo"),
            event("progress", Some("9"), "9"),
        ];
        for size in 1..=stream.len() {
            let mut parser = Parser::default();
            let mut got = Vec::new();
            for chunk in stream.as_bytes().chunks(size) {
                got.extend(parser.feed(chunk).unwrap());
            }
            assert_eq!(got, want, "chunks of {size}");
        }
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = Parser::default();
        let chunk = vec![b'x'; 1024 * 1024];
        let mut refused = false;
        for _ in 0..=(MAX_LINE / chunk.len()) {
            if parser.feed(&chunk).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }
}
