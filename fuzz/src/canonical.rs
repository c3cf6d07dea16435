//! An independent reading of the spec's canonical JSON rules, to hold
//! printed text to them: object keys sorted by code point and unique, no
//! whitespace outside strings, integers only and within
//! `[-(2^53)+1, 2^53-1]`, UTF-8 rather than `\u` escapes (bar the control
//! characters, which JSON cannot carry raw).

/// Largest integer canonical JSON carries (`2^53 - 1`).
const MAX_SAFE: i64 = (1 << 53) - 1;

/// Panics, naming the rule, unless `text` is one canonical JSON value and
/// nothing else.
pub fn assert_canonical(text: &str) {
    let mut reader = Reader {
        text: text.as_bytes(),
        at: 0,
    };
    reader.value();
    assert_eq!(reader.at, text.len(), "text after the value");
}

struct Reader<'a> {
    text: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> u8 {
        *self
            .text
            .get(self.at)
            .unwrap_or_else(|| panic!("text ends early at {}", self.at))
    }

    fn next(&mut self) -> u8 {
        let byte = self.peek();
        self.at += 1;
        byte
    }

    fn expect(&mut self, byte: u8) {
        let found = self.next();
        assert_eq!(
            found,
            byte,
            "expected {:?} at {}",
            char::from(byte),
            self.at - 1
        );
    }

    fn value(&mut self) {
        match self.peek() {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => drop(self.string()),
            b'-' | b'0'..=b'9' => self.integer(),
            _ => self.literal(),
        }
    }

    fn object(&mut self) {
        self.expect(b'{');
        let mut previous: Option<String> = None;
        if self.peek() == b'}' {
            self.at += 1;
            return;
        }
        loop {
            let key = self.string();
            if let Some(previous) = &previous {
                assert!(*previous < key, "keys out of code point order or repeated");
            }
            previous = Some(key);
            self.expect(b':');
            self.value();
            match self.next() {
                b',' => {}
                b'}' => return,
                other => panic!("unexpected {:?} in an object", char::from(other)),
            }
        }
    }

    fn array(&mut self) {
        self.expect(b'[');
        if self.peek() == b']' {
            self.at += 1;
            return;
        }
        loop {
            self.value();
            match self.next() {
                b',' => {}
                b']' => return,
                other => panic!("unexpected {:?} in an array", char::from(other)),
            }
        }
    }

    /// A string, decoded; only the escapes JSON requires are allowed.
    fn string(&mut self) -> String {
        self.expect(b'"');
        let start = self.at;
        let mut decoded = Vec::new();
        loop {
            match self.next() {
                b'"' => break,
                b'\\' => match self.next() {
                    b'"' => decoded.push(b'"'),
                    b'\\' => decoded.push(b'\\'),
                    b'b' => decoded.push(0x08),
                    b'f' => decoded.push(0x0c),
                    b'n' => decoded.push(b'\n'),
                    b'r' => decoded.push(b'\r'),
                    b't' => decoded.push(b'\t'),
                    b'u' => {
                        let hex = &self.text[self.at..self.at + 4];
                        self.at += 4;
                        let hex = std::str::from_utf8(hex).expect("ASCII escape");
                        let code = u8::from_str_radix(hex, 16)
                            .unwrap_or_else(|_| panic!("\\u escape of a non-control character"));
                        assert!(code < 0x20, "\\u escape of a non-control character");
                        assert!(
                            !b"\x08\x0c\n\r\t".contains(&code),
                            "\\u escape where a short escape exists"
                        );
                        decoded.push(code);
                    }
                    other => panic!("needless escape \\{}", char::from(other)),
                },
                byte => {
                    assert!(byte >= 0x20, "raw control character in a string at {start}");
                    decoded.push(byte);
                }
            }
        }
        String::from_utf8(decoded).expect("strings are UTF-8")
    }

    fn integer(&mut self) {
        let start = self.at;
        if self.peek() == b'-' {
            self.at += 1;
        }
        while self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = std::str::from_utf8(&self.text[start..self.at]).expect("ASCII digits");
        assert_ne!(digits, "-0", "negative zero");
        let unsigned = digits.trim_start_matches('-');
        assert!(!unsigned.is_empty(), "a minus sign alone");
        assert!(
            unsigned == "0" || !unsigned.starts_with('0'),
            "leading zero"
        );
        let value: i64 = digits.parse().expect("integer fits i64");
        assert!(
            (-MAX_SAFE..=MAX_SAFE).contains(&value),
            "integer out of range"
        );
        assert!(
            !matches!(self.text.get(self.at), Some(b'.' | b'e' | b'E')),
            "fraction or exponent"
        );
    }

    fn literal(&mut self) {
        for literal in [&b"true"[..], b"false", b"null"] {
            if self.text[self.at..].starts_with(literal) {
                self.at += literal.len();
                return;
            }
        }
        panic!("unexpected {:?} at {}", char::from(self.peek()), self.at);
    }
}
