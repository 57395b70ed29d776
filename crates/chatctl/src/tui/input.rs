//! The input line at the bottom of the TUI and the recall of earlier lines.
//!
//! The text is a `String` with the cursor as a byte offset that always sits
//! on a char boundary, so every edit is a plain `String` operation and
//! multi-byte text (é, 😀, 漢字) can never be split. Where the cursor is
//! *drawn* is another matter: wide characters take two columns and combining
//! marks none, so columns come from `unicode-width`, never from byte or char
//! counts.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// The line being typed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Input {
    text: String,
    /// Byte offset into `text`, on a char boundary.
    cursor: usize,
}

impl Input {
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Replaces the whole line (history recall), cursor at the end.
    pub(crate) fn set(&mut self, text: &str) {
        self.text = text.to_owned();
        self.cursor = self.text.len();
    }

    /// Empties the line and returns what it held (Enter).
    pub(crate) fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    pub(crate) fn insert(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Inserts pasted text; line breaks become spaces (one line, one message).
    pub(crate) fn insert_str(&mut self, s: &str) {
        // A pasted text's lines, joined by one space each (a CRLF is one
        // line end); the line end a paste often carries last is dropped.
        let s = s.trim_end_matches(['\n', '\r']);
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                self.insert(' ');
            }
            for c in line.strip_suffix('\r').unwrap_or(line).chars() {
                self.insert(if c == '\r' { ' ' } else { c });
            }
        }
    }

    /// Deletes the char before the cursor.
    pub(crate) fn backspace(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
            self.text.remove(self.cursor);
        }
    }

    /// Deletes the char under the cursor.
    pub(crate) fn delete(&mut self) {
        if self.cursor < self.text.len() {
            self.text.remove(self.cursor);
        }
    }

    pub(crate) fn left(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
        }
    }

    pub(crate) fn right(&mut self) {
        if let Some(c) = self.text[self.cursor..].chars().next() {
            self.cursor += c.len_utf8();
        }
    }

    pub(crate) fn home(&mut self) {
        self.cursor = 0;
    }

    pub(crate) fn end(&mut self) {
        self.cursor = self.text.len();
    }

    /// Ctrl-U: deletes from the start of the line to the cursor.
    pub(crate) fn kill_to_start(&mut self) {
        self.text.drain(..self.cursor);
        self.cursor = 0;
    }

    /// Ctrl-K: deletes from the cursor to the end of the line.
    pub(crate) fn kill_to_end(&mut self) {
        self.text.truncate(self.cursor);
    }

    /// Ctrl-W: deletes the word before the cursor (and the spaces after it).
    pub(crate) fn delete_word_back(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end();
        let start = trimmed.rfind(char::is_whitespace).map_or(0, |i| {
            // Just past that whitespace char.
            i + trimmed[i..].chars().next().map_or(1, char::len_utf8)
        });
        self.text.drain(start..self.cursor);
        self.cursor = start;
    }

    /// The column of the cursor from the start of the line.
    pub(crate) fn cursor_column(&self) -> usize {
        self.text[..self.cursor].width()
    }

    /// What to draw in a field `width` columns wide, and the cursor's column
    /// in it: the line scrolls sideways so that the cursor stays in view,
    /// with a column to spare for it at the end.
    pub(crate) fn window(&self, width: usize) -> (&str, usize) {
        if width == 0 {
            return ("", 0);
        }
        let column = self.cursor_column();
        let mut start = 0;
        let mut skipped = 0;
        // Drop chars from the left until the cursor fits.
        for c in self.text.chars() {
            if column - skipped < width {
                break;
            }
            skipped += c.width().unwrap_or(0);
            start += c.len_utf8();
        }
        let mut end = start;
        let mut used = 0;
        for c in self.text[start..].chars() {
            let w = c.width().unwrap_or(0);
            if used + w > width {
                break;
            }
            used += w;
            end += c.len_utf8();
        }
        (&self.text[start..end], column - skipped)
    }
}

/// How many earlier lines Up can bring back.
const HISTORY_CAP: usize = 500;

/// The lines entered before (Up/Down), oldest first.
#[derive(Debug, Default)]
pub(crate) struct History {
    lines: Vec<String>,
    /// The line shown now while browsing; `None` when not browsing.
    pos: Option<usize>,
    /// What was being typed when browsing started, restored past the newest.
    draft: String,
}

impl History {
    /// Remembers an entered line (not blank, not the same as the last one)
    /// and stops browsing.
    pub(crate) fn record(&mut self, line: &str) {
        self.pos = None;
        self.draft.clear();
        if line.trim().is_empty() || self.lines.last().is_some_and(|last| last == line) {
            return;
        }
        if self.lines.len() == HISTORY_CAP {
            self.lines.remove(0);
        }
        self.lines.push(line.to_owned());
    }

    /// Up: the line before the one shown (the newest at first), put into
    /// `input`. Stays on the oldest.
    pub(crate) fn previous(&mut self, input: &mut Input) {
        let pos = match self.pos {
            None if self.lines.is_empty() => return,
            None => {
                self.draft = input.text().to_owned();
                self.lines.len() - 1
            }
            Some(pos) => pos.saturating_sub(1),
        };
        self.pos = Some(pos);
        input.set(&self.lines[pos]);
    }

    /// Down: the line after the one shown; past the newest, the draft.
    pub(crate) fn next(&mut self, input: &mut Input) {
        let Some(pos) = self.pos else { return };
        if pos + 1 < self.lines.len() {
            self.pos = Some(pos + 1);
            input.set(&self.lines[pos + 1]);
        } else {
            self.pos = None;
            input.set(&std::mem::take(&mut self.draft));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> Input {
        let mut input = Input::default();
        for c in s.chars() {
            input.insert(c);
        }
        input
    }

    #[test]
    fn multi_byte_text_is_edited_by_whole_chars() {
        let mut input = typed("héllo 😀");
        assert_eq!(input.text(), "héllo 😀");
        input.backspace();
        assert_eq!(input.text(), "héllo ");
        input.home();
        input.right();
        input.right();
        input.backspace();
        assert_eq!(input.text(), "hllo ");
        input.insert('é');
        input.insert('漢');
        assert_eq!(input.text(), "hé漢llo ");
        input.left();
        input.delete();
        assert_eq!(input.text(), "héllo ");
        input.end();
        input.delete();
        input.right();
        assert_eq!(input.take(), "héllo ");
        assert!(input.is_empty());
        input.left();
        input.backspace();
        assert_eq!(input.cursor_column(), 0);
    }

    #[test]
    fn the_cursor_column_counts_display_width() {
        let mut input = typed("a漢😀é");
        // a=1, 漢=2, 😀=2, é=1
        assert_eq!(input.cursor_column(), 6);
        input.left();
        assert_eq!(input.cursor_column(), 5);
        input.left();
        assert_eq!(input.cursor_column(), 3);
        // A combining accent takes no column.
        let input = typed("e\u{301}");
        assert_eq!(input.cursor_column(), 1);
    }

    #[test]
    fn a_long_line_scrolls_to_keep_the_cursor_in_view() {
        let mut input = typed("0123456789");
        assert_eq!(input.window(20), ("0123456789", 10));
        assert_eq!(input.window(5), ("6789", 4));
        input.home();
        assert_eq!(input.window(5), ("01234", 0));
        let wide = typed("漢字漢字");
        let (shown, col) = wide.window(5);
        assert_eq!((shown, col), ("漢字", 4));
        assert_eq!(Input::default().window(0), ("", 0));
    }

    #[test]
    fn line_editing_keys() {
        let mut input = typed("hello big world");
        input.delete_word_back();
        assert_eq!(input.text(), "hello big ");
        input.delete_word_back();
        assert_eq!(input.text(), "hello ");
        input.insert_str("a\nb");
        assert_eq!(input.text(), "hello a b");
        // A CRLF paste with a line end last: one space a line end, no tail.
        input.insert_str(" c\r\nd\r\n");
        assert_eq!(input.text(), "hello a b c d");
        input.home();
        input.right();
        input.kill_to_end();
        assert_eq!(input.text(), "h");
        let mut input = typed("grüße welt");
        input.left();
        input.left();
        input.kill_to_start();
        assert_eq!(input.text(), "lt");
        assert_eq!(input.cursor_column(), 0);
        let mut input = typed("日本 語");
        input.delete_word_back();
        assert_eq!(input.text(), "日本 ");
    }

    #[test]
    fn history_recalls_earlier_lines_and_restores_the_draft() {
        let mut history = History::default();
        let mut input = Input::default();
        history.previous(&mut input);
        assert!(input.is_empty(), "nothing to recall yet");
        for line in ["first", "second", "second", "  ", "/connect bob"] {
            history.record(line);
        }
        input.insert_str("draft");
        history.previous(&mut input);
        assert_eq!(input.text(), "/connect bob");
        history.previous(&mut input);
        assert_eq!(input.text(), "second", "repeats are kept once");
        history.previous(&mut input);
        assert_eq!(input.text(), "first");
        history.previous(&mut input);
        assert_eq!(input.text(), "first", "stays on the oldest");
        history.next(&mut input);
        history.next(&mut input);
        assert_eq!(input.text(), "/connect bob");
        history.next(&mut input);
        assert_eq!(input.text(), "draft");
        history.next(&mut input);
        assert_eq!(input.text(), "draft");
    }

    #[test]
    fn history_is_bounded() {
        let mut history = History::default();
        for i in 0..HISTORY_CAP + 10 {
            history.record(&i.to_string());
        }
        assert_eq!(history.lines.len(), HISTORY_CAP);
        assert_eq!(history.lines[0], "10");
    }
}
