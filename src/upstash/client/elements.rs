//! The elements of a JSON array as its bytes arrive, so that an answer as large as an account
//! (its database list) is parsed one element at a time and never held whole.
//!
//! serde_json parses from a complete slice or from a blocking reader, not from chunks that an
//! async body hands over; a blocking reader would need a thread per list. What is needed here is
//! small: find where each top-level element ends (tracking nesting and strings, with their
//! escapes) and hand its bytes to serde_json, which does all the real parsing. Syntax between
//! elements is checked only as far as that needs (a missing comma is not noticed); each
//! element is parsed strictly.

/// Splits one JSON array, fed in chunks, into the bytes of its top-level elements.
#[derive(Default)]
pub struct Elements {
    /// Nesting depth: 0 before the opening `[`, 1 between elements.
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The array's closing `]` has been seen.
    closed: bool,
    /// Bytes of the element being read.
    current: Vec<u8>,
}

/// What went wrong with the array's framing (the elements' own syntax is serde_json's).
pub type Error = String;

impl Elements {
    /// Feeds the next chunk, calling `each` with every element it completes, in order.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        each: &mut impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for &b in chunk {
            if self.closed {
                if !b.is_ascii_whitespace() {
                    return Err("data after the end of the array".into());
                }
                continue;
            }
            if self.in_string {
                self.current.push(b);
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match (self.depth, b) {
                (0, b'[') => self.depth = 1,
                (0, b) if b.is_ascii_whitespace() => {}
                (0, _) => return Err("the answer is not a JSON array".into()),
                // Between elements, or at the end of a scalar element.
                (1, b',') => self.emit(each)?,
                (1, b']') => {
                    self.emit(each)?;
                    self.depth = 0;
                    self.closed = true;
                }
                (1, b) if b.is_ascii_whitespace() => self.emit(each)?,
                (_, b'"') => {
                    self.current.push(b);
                    self.in_string = true;
                }
                (_, b'{' | b'[') => {
                    self.current.push(b);
                    self.depth += 1;
                }
                (_, b'}' | b']') => {
                    self.current.push(b);
                    self.depth -= 1;
                    if self.depth == 1 {
                        self.emit(each)?;
                    }
                }
                (_, b) => self.current.push(b),
            }
        }
        Ok(())
    }

    /// After the last chunk: whether the array was complete.
    pub fn finish(&self) -> Result<(), Error> {
        if self.closed {
            Ok(())
        } else {
            Err("the answer ended before its array did".into())
        }
    }

    fn emit(&mut self, each: &mut impl FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error> {
        if self.current.is_empty() {
            return Ok(());
        }
        let result = each(&self.current);
        self.current.clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The elements of `text` fed in chunks of `size` bytes, as text.
    fn split(text: &str, size: usize) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        let mut elements = Elements::default();
        for chunk in text.as_bytes().chunks(size) {
            elements.feed(chunk, &mut |e| {
                out.push(String::from_utf8(e.to_vec()).unwrap());
                Ok(())
            })?;
        }
        elements.finish()?;
        Ok(out)
    }

    #[test]
    fn elements_come_out_whole_however_the_bytes_are_cut() {
        let text = r#" [ {"a": [1, {"b": "]}"}], "c": "x\"y\\"}, 12, "s,t", true, [[]], null ] "#;
        let want = [
            r#"{"a": [1, {"b": "]}"}], "c": "x\"y\\"}"#,
            "12",
            r#""s,t""#,
            "true",
            "[[]]",
            "null",
        ];
        for size in [1, 2, 3, 7, 64, 1024] {
            assert_eq!(split(text, size).unwrap(), want, "chunks of {size}");
        }
        // Every element parses as serde_json parses the whole array.
        let whole: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        let parts: Vec<serde_json::Value> = split(text, 5)
            .unwrap()
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(parts, whole);
    }

    #[test]
    fn an_empty_array_has_no_elements() {
        assert_eq!(split("[]", 1).unwrap(), Vec::<String>::new());
        assert_eq!(split(" [ \n ] \n", 2).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn what_is_not_one_whole_array_is_an_error() {
        assert!(split(r#"{"error": "unauthorized"}"#, 4).is_err());
        assert!(split(r#"[{"a": 1}, {"b": "#, 4).is_err(), "cut short");
        assert!(split(r#"[1] [2]"#, 4).is_err(), "two arrays");
        assert!(split("", 4).is_err());
    }

    #[test]
    fn an_error_from_an_element_stops_the_split() {
        let mut elements = Elements::default();
        let mut seen = 0;
        let outcome = elements.feed(b"[1, 2, 3]", &mut |_| {
            seen += 1;
            if seen == 2 { Err("bad".into()) } else { Ok(()) }
        });
        assert_eq!(outcome, Err("bad".to_string()));
        assert_eq!(seen, 2);
    }
}
