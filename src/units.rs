//! How sizes, durations and times are written for people and for the database: one formatter
//! each, so every command prints a figure the same way; and [`printable`], how text from
//! untrusted files reaches a terminal.

use std::borrow::Cow;

/// Bytes per GiB.
const GIB: f64 = (1u64 << 30) as f64;

/// Bytes as a number of GiB (for column-aligned output that formats the number itself).
pub fn gib_value(bytes: u64) -> f64 {
    bytes as f64 / GIB
}

/// `1.23 GiB`.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", gib_value(bytes))
}

/// `1.23 GiB`, or `-` when unknown (a NULL column).
pub fn gib_or_dash(bytes: Option<i64>) -> String {
    bytes.map_or("-".into(), |b| gib(b.max(0) as u64))
}

/// Bytes as a short figure: MiB below 1 GiB, GiB above.
pub fn human_bytes(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        gib(bytes)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// `1h02m03s`.
pub fn duration_text(seconds: f64) -> String {
    let seconds = seconds.max(0.0).round() as u64;
    format!(
        "{}h{:02}m{:02}s",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Bytes as lowercase hex (digests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Current UTC time as ISO-8601 text with milliseconds, the format of every time column.
pub fn now_text() -> String {
    time_text(chrono::Utc::now())
}

/// A UTC time the way the database stores it.
pub fn time_text(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Whether [`printable`] keeps line breaks and tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Keep `\n` and `\t` (a message that may span lines); every other control is escaped.
    Keep,
    /// Escape `\n` and `\t` too (a field of a line-oriented output: one value, one line).
    Escape,
}

/// Whether `c` would act on a terminal (or reorder text) instead of being shown: C0 controls,
/// DEL, C1 controls, and the bidirectional embeddings, overrides and isolates (U+202A–U+202E,
/// U+2066–U+2069) that make text read differently from its bytes.
fn is_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text from a file the tool does not trust (question ids, error messages, category and model
/// names) made safe to print on a terminal: every control character is replaced by a visible
/// escape (`\x1b`, `\r`, `\u{9b}`, `\u{202e}`), so none can move the cursor, clear the screen,
/// retitle the window or reverse the text that follows. `lines` says whether `\n` and `\t` stay.
/// Borrows when there is nothing to replace (the usual case).
pub fn printable(text: &str, lines: Lines) -> Cow<'_, str> {
    let escaped = |c: char| is_control(c) && !(lines == Lines::Keep && matches!(c, '\n' | '\t'));
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !escaped(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_terminal_controls_and_bidi_overrides() {
        // Plain text, Korean included, is borrowed unchanged.
        assert!(matches!(
            printable("질문 q1 · 정답", Lines::Escape),
            Cow::Borrowed("질문 q1 · 정답")
        ));
        let hostile =
            "a\u{1b}[2J\u{1b}]0;title\u{7}b\u{9b}31m\u{7f}\rc\u{202e}fdp.exe\u{2066}d\u{2069}";
        let shown = printable(hostile, Lines::Escape);
        assert_eq!(
            shown,
            "a\\x1b[2J\\x1b]0;title\\x07b\\u{9b}31m\\x7f\\rc\\u{202e}fdp.exe\\u{2066}d\\u{2069}"
        );
        assert!(!shown.chars().any(is_control));
        // Line breaks and tabs stay only where the text may span lines.
        assert_eq!(printable("a\nb\tc\r", Lines::Keep), "a\nb\tc\\r");
        assert_eq!(printable("a\nb\tc", Lines::Escape), "a\\nb\\tc");
        // Other format characters that do not reorder text (ZWJ, LRM) are left alone.
        assert_eq!(
            printable("a\u{200d}\u{200e}b", Lines::Escape),
            "a\u{200d}\u{200e}b"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(gib(3 << 29), "1.50 GiB");
        assert_eq!(gib_or_dash(None), "-");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
        assert_eq!(duration_text(3723.4), "1h02m03s");
        let time = chrono::DateTime::from_timestamp(0, 5_000_000).unwrap();
        assert_eq!(time_text(time), "1970-01-01T00:00:00.005Z");
    }
}
