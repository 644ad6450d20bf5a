//! A Server-Sent Events decoder (the WHATWG rules the API's stream uses:
//! `data:` lines joined by newlines, `id:`, comments and other fields
//! ignored, an event dispatched at a blank line), fed chunks as they arrive.
//! Small enough that a crate would add more than it saves.

/// One event: its `id` (the API's cursor) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Decoder {
    buffer: String,
    data: Vec<String>,
    id: Option<String>,
}

impl Decoder {
    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &str) -> Vec<Event> {
        self.buffer.push_str(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find('\n') {
            let line: String = self.buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(Event {
                        id: self.id.take(),
                        data: self.data.join("\n"),
                    });
                    self.data.clear();
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "data" => self.data.push(value.to_owned()),
                "id" => self.id = Some(value.to_owned()),
                _ => {} // comments (keep-alives), event, retry
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_keep_alives_are_skipped() {
        let mut d = Decoder::default();
        assert!(d.push(": keep-alive\n\nid: 1-2\nda").is_empty());
        let events = d.push("ta: {\"a\":1}\n\nid: 3\ndata: x\ndata: y\n\n");
        assert_eq!(
            events,
            vec![
                Event {
                    id: Some("1-2".into()),
                    data: "{\"a\":1}".into()
                },
                Event {
                    id: Some("3".into()),
                    data: "x\ny".into()
                }
            ]
        );
    }
}
