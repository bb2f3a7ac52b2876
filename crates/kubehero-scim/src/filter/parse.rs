//! The recursive-descent parser behind [`Filter::parse`], [`AttrPath::parse`] and [`crate::path`].
//!
//! It reads bytes through `get` and never indexes; the limits are checked here ([`MAX_FILTER_LEN`] in
//! `Parser::new`, [`MAX_DEPTH`] in `enter`).

use std::str::FromStr;

use serde_json::Number;

use super::{AttrPath, CompValue, CompareOp, Filter, FilterError, MAX_DEPTH, MAX_FILTER_LEN};

/// Recursive-descent parser over the bytes of a `&str`. Shared with [`crate::path`].
pub(crate) struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.' | b'$')
}

/// Shortens user input quoted back in an error message.
fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(32).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

impl<'a> Parser<'a> {
    pub(crate) fn new(src: &'a str) -> Result<Self, FilterError> {
        if src.len() > MAX_FILTER_LEN {
            return Err(FilterError {
                position: MAX_FILTER_LEN,
                message: format!("input is {} bytes, longer than the limit of {MAX_FILTER_LEN}", src.len()),
            });
        }
        Ok(Self { src, pos: 0, depth: 0 })
    }

    pub(crate) fn fail<T>(&self, position: usize, message: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError { position, message: message.into() })
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    /// Steps over one ASCII byte the caller has just peeked.
    pub(crate) fn skip_byte(&mut self) {
        self.pos += 1;
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    pub(crate) fn expect_end(&self, what: &str) -> Result<(), FilterError> {
        match self.src.get(self.pos..) {
            Some(rest) if !rest.is_empty() => {
                self.fail(self.pos, format!("unexpected `{}` after the {what}", excerpt(rest)))
            }
            _ => Ok(()),
        }
    }

    /// Skips ASCII whitespace; says whether there was any.
    pub(crate) fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn word_end(&self) -> usize {
        let mut end = self.pos;
        while self.src.as_bytes().get(end).copied().is_some_and(is_word_byte) {
            end += 1;
        }
        end
    }

    /// The run of word bytes at the cursor (possibly empty), without consuming it.
    fn word(&self) -> (&'a str, usize) {
        let end = self.word_end();
        (self.src.get(self.pos..end).unwrap_or(""), end)
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let (word, end) = self.word();
        if word.eq_ignore_ascii_case(keyword) {
            self.pos = end;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<(), FilterError> {
        if self.depth >= MAX_DEPTH {
            return self.fail(self.pos, format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.depth += 1;
        Ok(())
    }

    fn expect_byte(&mut self, byte: u8, message: &str) -> Result<(), FilterError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(self.pos, message)
        }
    }

    /// The whole input as one filter, surrounding whitespace allowed.
    pub(crate) fn parse_complete_filter(&mut self) -> Result<Filter, FilterError> {
        self.skip_ws();
        if self.at_end() {
            return self.fail(self.pos, "empty filter");
        }
        let filter = self.parse_or(false)?;
        self.skip_ws();
        self.expect_end("filter")?;
        Ok(filter)
    }

    /// `or` has the lowest precedence.
    fn parse_or(&mut self, in_value_path: bool) -> Result<Filter, FilterError> {
        let mut left = self.parse_and(in_value_path)?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if !self.eat_keyword("or") {
                self.pos = save;
                return Ok(left);
            }
            let right = self.parse_and(in_value_path)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
    }

    fn parse_and(&mut self, in_value_path: bool) -> Result<Filter, FilterError> {
        let mut left = self.parse_unary(in_value_path)?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if !self.eat_keyword("and") {
                self.pos = save;
                return Ok(left);
            }
            let right = self.parse_unary(in_value_path)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
    }

    /// `not (…)`, `(…)` or an attribute expression.
    fn parse_unary(&mut self, in_value_path: bool) -> Result<Filter, FilterError> {
        self.skip_ws();
        match self.peek() {
            None => self.fail(self.pos, "expected an attribute path, `(` or `not`, found the end of the input"),
            Some(b'(') => self.parse_group(in_value_path),
            Some(b) if b.is_ascii_alphabetic() || b == b'$' => {
                let (word, end) = self.word();
                if word.eq_ignore_ascii_case("not") {
                    let not_at = self.pos;
                    self.pos = end;
                    self.skip_ws();
                    if self.peek() != Some(b'(') {
                        return self.fail(not_at, "`not` must be followed by a parenthesised filter: `not (…)`");
                    }
                    return Ok(Filter::Not(Box::new(self.parse_group(in_value_path)?)));
                }
                self.parse_attr_exp(in_value_path)
            }
            Some(_) => {
                let rest = self.src.get(self.pos..).unwrap_or("");
                self.fail(self.pos, format!("expected an attribute path, `(` or `not`, found `{}`", excerpt(rest)))
            }
        }
    }

    fn parse_group(&mut self, in_value_path: bool) -> Result<Filter, FilterError> {
        self.enter()?;
        self.expect_byte(b'(', "expected `(`")?;
        let inner = self.parse_or(in_value_path)?;
        self.skip_ws();
        self.expect_byte(b')', "expected `)` to close the group")?;
        self.depth -= 1;
        Ok(inner)
    }

    /// `[ valFilter ]` at the cursor.
    pub(crate) fn parse_bracket(&mut self) -> Result<Filter, FilterError> {
        self.enter()?;
        self.expect_byte(b'[', "expected `[`")?;
        let inner = self.parse_or(true)?;
        self.skip_ws();
        self.expect_byte(b']', "expected `]` to close the value filter")?;
        self.depth -= 1;
        Ok(inner)
    }

    fn parse_attr_exp(&mut self, in_value_path: bool) -> Result<Filter, FilterError> {
        let path = self.parse_attr_path()?;
        if self.peek() == Some(b'[') {
            if in_value_path {
                return self.fail(self.pos, "value filters cannot be nested");
            }
            let filter = Box::new(self.parse_bracket()?);
            if self.peek() == Some(b'.') {
                return self.fail(self.pos, "a sub-attribute after `]` is only valid in a PATCH path");
            }
            return Ok(Filter::ValuePath { path, filter });
        }
        if !self.skip_ws() {
            return self.fail(self.pos, format!("expected an operator after `{}`", excerpt(&path.to_string())));
        }
        let op_at = self.pos;
        let (word, end) = self.word();
        if word.is_empty() {
            return self.fail(op_at, "expected an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)");
        }
        if word.eq_ignore_ascii_case("pr") {
            self.pos = end;
            return Ok(Filter::Present(path));
        }
        let Some(op) = CompareOp::from_keyword(word) else {
            return self.fail(op_at, format!("unknown operator `{}`", excerpt(word)));
        };
        self.pos = end;
        if !self.skip_ws() {
            return self.fail(self.pos, format!("expected a value after `{op}`"));
        }
        let value = self.parse_comp_value()?;
        Ok(Filter::Compare { path, op, value })
    }

    /// `[URI ":"] ATTRNAME ["." subAttr]` at the cursor.
    pub(crate) fn parse_attr_path(&mut self) -> Result<AttrPath, FilterError> {
        let start = self.pos;
        let (text, end) = self.word();
        if text.is_empty() {
            return self.fail(start, "expected an attribute path");
        }
        self.pos = end;
        let (uri, rest, rest_at) = match text.rsplit_once(':') {
            Some((uri, rest)) => {
                if uri.is_empty() {
                    return self.fail(start, "empty schema URI before `:`");
                }
                (Some(uri.to_owned()), rest, start + uri.len() + 1)
            }
            None => (None, text, start),
        };
        let (name, sub_attr) = match rest.split_once('.') {
            Some((name, sub)) => {
                self.check_name(sub, rest_at + name.len() + 1)?;
                (name, Some(sub.to_owned()))
            }
            None => (rest, None),
        };
        self.check_name(name, rest_at)?;
        Ok(AttrPath { uri, name: name.to_owned(), sub_attr })
    }

    /// `ATTRNAME = ALPHA *(nameChar)`; a leading `$` is tolerated for `$ref`.
    pub(crate) fn check_name(&self, name: &str, at: usize) -> Result<(), FilterError> {
        let mut bytes = name.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'$');
        if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            Ok(())
        } else {
            self.fail(at, format!("`{}` is not a valid attribute name", excerpt(name)))
        }
    }

    /// A sub-attribute name at the cursor (after `].` in a PATCH path).
    pub(crate) fn parse_name(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        let (word, end) = self.word();
        self.check_name(word, start)?;
        self.pos = end;
        Ok(word.to_owned())
    }

    fn parse_comp_value(&mut self) -> Result<CompValue, FilterError> {
        match self.peek() {
            None => self.fail(self.pos, "missing value"),
            Some(b'"') => self.parse_string().map(CompValue::String),
            Some(b) if b == b'-' || b.is_ascii_digit() => self.parse_number().map(CompValue::Number),
            Some(_) => {
                let at = self.pos;
                let (word, end) = self.word();
                let value = if word.eq_ignore_ascii_case("true") {
                    CompValue::Bool(true)
                } else if word.eq_ignore_ascii_case("false") {
                    CompValue::Bool(false)
                } else if word.eq_ignore_ascii_case("null") {
                    CompValue::Null
                } else {
                    return self.fail(at, "expected a value: a string, a number, true, false or null");
                };
                self.pos = end;
                Ok(value)
            }
        }
    }

    fn eat_digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A JSON number (RFC 8259 §6).
    fn parse_number(&mut self) -> Result<Number, FilterError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.eat_digits();
            }
            _ => return self.fail(start, "invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.eat_digits() == 0 {
                return self.fail(self.pos, "invalid number: expected digits after `.`");
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.eat_digits() == 0 {
                return self.fail(self.pos, "invalid number: expected digits in the exponent");
            }
        }
        if self.peek().is_some_and(is_word_byte) {
            return self.fail(self.pos, "invalid number");
        }
        let text = self.src.get(start..self.pos).unwrap_or("");
        Number::from_str(text).or_else(|_| self.fail(start, "number out of range"))
    }

    /// A JSON string (RFC 8259 §7); the cursor is on the opening quote.
    fn parse_string(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.src.get(self.pos..).and_then(|rest| rest.chars().next()) else {
                return self.fail(start, "unterminated string");
            };
            match c {
                '"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                '\\' => {
                    self.pos += 1;
                    out.push(self.parse_escape()?);
                }
                c if u32::from(c) < 0x20 => {
                    return self.fail(self.pos, "control character in a string: escape it");
                }
                c => {
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// The escape after a `\`.
    fn parse_escape(&mut self) -> Result<char, FilterError> {
        let at = self.pos;
        let Some(b) = self.peek() else {
            return self.fail(at, "unterminated string");
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.parse_unicode_escape(at),
            _ => return self.fail(at, "invalid escape in a string"),
        };
        Ok(c)
    }

    fn parse_unicode_escape(&mut self, at: usize) -> Result<char, FilterError> {
        let high = self.hex4()?;
        let code = match high {
            0xD800..=0xDBFF => {
                if self.src.get(self.pos..).is_some_and(|rest| rest.starts_with("\\u")) {
                    self.pos += 2;
                    let low = self.hex4()?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return self.fail(at, "a high surrogate must be followed by a low surrogate");
                    }
                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    return self.fail(at, "unpaired surrogate in a \\u escape");
                }
            }
            0xDC00..=0xDFFF => return self.fail(at, "unpaired surrogate in a \\u escape"),
            code => code,
        };
        match char::from_u32(code) {
            Some(c) => Ok(c),
            None => self.fail(at, "invalid \\u escape"),
        }
    }

    fn hex4(&mut self) -> Result<u32, FilterError> {
        let mut code = 0u32;
        for _ in 0..4 {
            let Some(digit) = self.peek().and_then(|b| char::from(b).to_digit(16)) else {
                return self.fail(self.pos, "a \\u escape needs four hex digits");
            };
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }
}
