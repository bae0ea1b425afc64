//! Stage output made safe for prun's terminal (SPEC 7): a log line is shown as text,
//! never as commands to the terminal.
//!
//! - Carriage returns: a progress line (`10%\r50%\r100%`) shows its latest state
//!   (`100%`), not every frame over the prefix. A trailing `\r` (CRLF) is dropped.
//! - Escape sequences: CSI, OSC, DCS and the short `ESC x` forms are removed, so a
//!   stage cannot move the cursor, clear the screen or break the board. SGR (colors,
//!   `ESC [ … m`) passes on a color terminal, and a line that set any is reset at its
//!   end so the color never leaks into prun's next line.
//! - Other control characters (C0 but tab, DEL, C1 such as U+009B, an 8-bit CSI) are
//!   removed; invalid UTF-8 becomes U+FFFD.
//!
//! `--log-dir` files keep the raw bytes: only the terminal copy is cleaned.

use std::borrow::Cow;

/// The displayable text of one log line (without its newline).
pub fn clean_line(line: &[u8], color: bool) -> Cow<'_, str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if is_plain(line)
        && let Ok(s) = std::str::from_utf8(line)
    {
        return Cow::Borrowed(s);
    }
    Cow::Owned(clean_slow(line, color))
}

/// No control byte, no DEL, no possible C1 (UTF-8 lead byte 0xC2): nothing to do.
fn is_plain(line: &[u8]) -> bool {
    !line
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f || b == 0xc2)
}

fn clean_slow(line: &[u8], color: bool) -> String {
    // The latest state of a carriage-return progress line: the last non-empty frame.
    let frame = line
        .split(|&b| b == b'\r')
        .rfind(|f| !f.is_empty())
        .unwrap_or(&[]);
    let text = String::from_utf8_lossy(frame);
    let mut out = String::with_capacity(text.len());
    let mut colored = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    // CSI: parameters 0x30-0x3F, intermediates 0x20-0x2F, a final
                    // byte 0x40-0x7E.
                    let mut seq = String::from("\x1b[");
                    let mut fin = None;
                    for c in chars.by_ref() {
                        seq.push(c);
                        if ('\x40'..='\x7e').contains(&c) {
                            fin = Some(c);
                            break;
                        }
                        if !('\x20'..='\x3f').contains(&c) {
                            break;
                        }
                    }
                    let sgr = fin == Some('m')
                        && seq[2..seq.len() - 1]
                            .chars()
                            .all(|c| c.is_ascii_digit() || c == ';' || c == ':');
                    if sgr && color {
                        out.push_str(&seq);
                        colored = true;
                    }
                }
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || c == '\u{9c}' {
                            break;
                        }
                        if c == '\x1b' {
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                // nF: intermediates then a final byte (`ESC ( B`); Fp/Fe/Fs: one byte
                // (`ESC 7`, `ESC c`).
                Some(c) if ('\x20'..='\x2f').contains(&c) => {
                    while let Some(&n) = chars.peek() {
                        chars.next();
                        if !('\x20'..='\x2f').contains(&n) {
                            break;
                        }
                    }
                }
                Some(_) | None => {}
            },
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    if colored {
        out.push_str("\x1b[0m");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str, color: bool) -> String {
        clean_line(s.as_bytes(), color).into_owned()
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            clean_line(b"ate bun 3\twell", false),
            Cow::Borrowed("ate bun 3\twell")
        ));
        assert_eq!(clean("crlf\r", false), "crlf");
    }

    #[test]
    fn carriage_returns_show_the_latest_state() {
        assert_eq!(clean("10%\r50%\r100%", false), "100%");
        assert_eq!(clean("10%\r50%\r100%\r", false), "100%");
        assert_eq!(clean("\rdone", false), "done");
    }

    #[test]
    fn cursor_and_screen_commands_are_removed() {
        assert_eq!(clean("\x1b[2J\x1b[Hwiped", true), "wiped");
        assert_eq!(clean("a\x1b[3Ab\x1b[10;5Hc\x1b[Kd", true), "abcd");
        assert_eq!(clean("\x1b]0;title\x07text", true), "text");
        assert_eq!(
            clean("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", true),
            "link"
        );
        assert_eq!(clean("\x1b7save\x1b8\x1bc\x1b(Bx", true), "savex");
        assert_eq!(
            clean("back\x08\x08space\x07bell\x7f", true),
            "backspacebell"
        );
        assert_eq!(clean("c1\u{9b}2Jcsi", true), "c12Jcsi");
        assert_eq!(clean("\x1b[?1049hscreen\x1b[?25l", true), "screen");
        assert_eq!(clean("trailing\x1b", true), "trailing");
        assert_eq!(clean("\x1bP1$r\x1b\\dcs", true), "dcs");
    }

    #[test]
    fn colors_pass_only_on_a_color_terminal_and_are_reset() {
        assert_eq!(
            clean("\x1b[31mred\x1b[0m text", true),
            "\x1b[31mred\x1b[0m text\x1b[0m"
        );
        assert_eq!(clean("\x1b[1;38;5;208mx", false), "x");
        assert_eq!(clean("\x1b[31mred", true), "\x1b[31mred\x1b[0m");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(clean_line(b"a\xffb", false), "a\u{fffd}b");
    }
}
