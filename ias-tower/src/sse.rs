//! Server-sent events, read as the bytes pass by.
//!
//! The scanner sees the stream in whatever chunks the upstream sends and
//! hands over the `data` of each complete event (its `data:` lines joined
//! by `\n`). Other fields (`event:`, `id:`, `retry:`) and comments are
//! skipped. Lines end with `\n` or `\r\n`. An event larger than
//! [`MAX_EVENT_BYTES`] is skipped whole.

/// The largest event the scanner holds; a larger one is skipped.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// Collects events from a stream's bytes.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    /// The current line, up to its end.
    line: Vec<u8>,
    /// The current event's data so far.
    data: Vec<u8>,
    /// Whether the current event has a `data` field.
    has_data: bool,
    /// The current event grew too large: skip it until its end.
    skipping: bool,
}

impl Scanner {
    /// Reads `chunk`; calls `event` with the data of each event it completes.
    pub fn feed(&mut self, mut chunk: &[u8], event: &mut impl FnMut(&[u8])) {
        while let Some(end) = chunk.iter().position(|b| *b == b'\n') {
            self.push(&chunk[..end]);
            self.end_line(event);
            chunk = &chunk[end + 1..];
        }
        self.push(chunk);
    }

    /// The stream ended: an event not followed by a blank line still counts.
    pub fn finish(&mut self, event: &mut impl FnMut(&[u8])) {
        if !self.line.is_empty() {
            self.end_line(event);
        }
        self.dispatch(event);
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.skipping {
            return;
        }
        if self.line.len() + self.data.len() + bytes.len() > MAX_EVENT_BYTES {
            tracing::warn!(
                limit = MAX_EVENT_BYTES,
                "a stream event is too large to read; its usage is not seen"
            );
            self.skipping = true;
            self.line.clear();
            self.data.clear();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self, event: &mut impl FnMut(&[u8])) {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            self.dispatch(event);
        } else if !self.skipping {
            self.field(&line);
        }
        line.clear();
        self.line = line;
    }

    fn field(&mut self, line: &[u8]) {
        let Some(value) = line.strip_prefix(b"data") else {
            return;
        };
        let value = match value {
            [] => value,
            [b':', b' ', rest @ ..] | [b':', rest @ ..] => rest,
            // Another field whose name starts with "data".
            _ => return,
        };
        if self.has_data {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
    }

    fn dispatch(&mut self, event: &mut impl FnMut(&[u8])) {
        if self.has_data && !self.skipping {
            event(&self.data);
        }
        self.data.clear();
        self.has_data = false;
        self.skipping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut scanner = Scanner::default();
        let mut seen = Vec::new();
        let mut collect = |data: &[u8]| seen.push(String::from_utf8_lossy(data).into_owned());
        for chunk in chunks {
            scanner.feed(chunk, &mut collect);
        }
        scanner.finish(&mut collect);
        seen
    }

    #[test]
    fn events_split_anywhere_are_put_back_together() {
        let stream = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        let whole = events(&[stream]);
        assert_eq!(whole, [r#"{"a":1}"#, r#"{"b":2}"#, "[DONE]"]);
        for cut in 0..stream.len() {
            let (left, right) = stream.split_at(cut);
            assert_eq!(events(&[left, right]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events(&bytes), whole);
    }

    #[test]
    fn other_fields_and_comments_are_skipped() {
        let stream =
            b": keep-alive\r\nevent: response.completed\r\nid: 7\r\ndata:{\"x\":1}\r\n\r\n";
        assert_eq!(events(&[stream]), [r#"{"x":1}"#]);
        let lookalike = b"database: nope\ndata: yes\n\n";
        assert_eq!(events(&[lookalike]), ["yes"]);
    }

    #[test]
    fn data_lines_are_joined_and_a_last_event_needs_no_blank_line() {
        assert_eq!(events(&[b"data: a\ndata: b\n\n"]), ["a\nb"]);
        assert_eq!(events(&[b"data: last"]), ["last"]);
        assert!(events(&[b"event: ping\n\n\n"]).is_empty());
    }

    #[test]
    fn an_event_too_large_is_skipped_and_the_next_is_read() {
        let mut big = b"data: ".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_EVENT_BYTES + 1));
        big.extend_from_slice(b"\n\ndata: small\n\n");
        assert_eq!(events(&[&big]), ["small"]);
    }
}
