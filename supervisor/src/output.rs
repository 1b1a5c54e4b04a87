//! governor's own output: lines on stderr that can never end governor, and the escaping of
//! text a person reads.
//!
//! `eprintln!` panics when stderr fails, and an agent can make it fail: a pipe closed by the
//! reader (`governor run ... 2>&1 | head`, EPIPE), or the terminal governor shares with the
//! agent, which the agent may set non-blocking (the flag is on the shared open file
//! description) and stop with `TCXONC`/`TCOOFF` (EAGAIN). A supervisor that panics on its own
//! diagnostics frees its agent, so every line goes through [`say`]: a line that cannot be
//! written is dropped and counted, never fatal.

use std::{
    borrow::Cow,
    io::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

/// Lines of governor's own stderr that could not be written.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Writes one line on stderr; a failure (EPIPE, EAGAIN, EIO, ...) drops the line and counts it.
/// One `write` of the whole line, so lines of the daemon's tasks do not interleave.
pub fn say(args: std::fmt::Arguments<'_>) {
    let mut line = args.to_string();
    line.push('\n');
    // std's stderr is unbuffered: write_all retries on EINTR and short writes only.
    let mut stderr = std::io::stderr().lock();
    if stderr.write_all(line.as_bytes()).is_err() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many lines [`say`] could not write so far.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// `eprintln!` that never panics: see the module's documentation.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::say(format_args!($($arg)*))
    };
}

/// Text for a terminal: control characters (C0, DEL, C1) and backslashes are written as
/// escapes, so an agent-chosen path cannot forge a row with a newline or a tab, nor send
/// terminal escape sequences to the person reading. JSON output is not escaped this way
/// (serde_json escapes control characters itself and the values stay exact).
pub fn escape(text: &str) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() || c == '\\';
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\t' => escaped.push_str("\\t"),
            '\r' => escaped.push_str("\\r"),
            '\x1b' => escaped.push_str("\\e"),
            c if c.is_control() => escaped.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// JSON text for a terminal: `json` (serialized) with DEL and the C1 controls written as
/// `\u00XX` escapes, which serde_json leaves raw (it escapes only C0). The value is the
/// same JSON; a terminal reading an agent-chosen path in it sees no 8-bit CSI (U+009B).
/// Such characters can only be inside strings, where the escape is what they mean.
pub fn json_text(json: String) -> String {
    if !json.chars().any(|c| ('\u{7f}'..='\u{9f}').contains(&c)) {
        return json;
    }
    let mut escaped = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if ('\u{7f}'..='\u{9f}').contains(&c) {
            escaped.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_for_a_terminal_escapes_del_and_c1_and_keeps_the_value() {
        let value = serde_json::json!({ "path": "a\u{9b}31mb\u{7f}\n\u{1b}é" });
        let text = json_text(value.to_string());
        assert!(!text.chars().any(|c| c.is_control()), "{text}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).ok(), Some(value));
        assert_eq!(json_text("{\"a\":1}".into()), "{\"a\":1}");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("/tmp/plain file"), "/tmp/plain file");
        assert_eq!(escape("a\nb\tc\x1b[31md\\e"), "a\\nb\\tc\\e[31md\\\\e");
        assert_eq!(escape("\u{7f}\u{9b}x\u{0}"), "\\x7f\\x9bx\\x00");
        assert!(!escape("évident ✓").contains('\\'));
    }
}
