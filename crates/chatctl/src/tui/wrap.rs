//! Breaking styled text into screen rows of a given width.
//!
//! The TUI wraps the conversation itself rather than leaving it to
//! ratatui's `Paragraph`: which rows an entry lands on decides which
//! received messages are on screen, and that is what MarkDisplayed reports.
//! One function computes the rows for both the drawing and that decision,
//! so the two cannot disagree.
//!
//! Words move to the next row whole when they fit there; longer words are
//! broken wherever the row ends. Widths are display columns
//! (`unicode-width`), so wide characters never straddle the edge.

use ratatui::style::Style;
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthChar;

/// One piece of text with its style.
pub(crate) type Segment = (String, Style);

/// Lays `segments` out in rows at most `width` columns wide. Rows after the
/// first start with `indent` spaces (at most half the width). A `\n` in the
/// text starts a new row. There is always at least one row.
pub(crate) fn wrap(segments: &[Segment], width: usize, indent: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let indent = indent.min(width / 2);
    let mut rows = Rows { width, indent, done: Vec::new(), spans: Vec::new(), col: 0 };
    for (text, style) in segments {
        for token in tokens(text) {
            rows.place(token, *style);
        }
    }
    rows.finish()
}

/// A run of text that wraps as a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Space(&'a str),
    Newline,
}

fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut space: Option<bool> = None;
    for (i, c) in text.char_indices() {
        if c == '\n' {
            push_run(&mut out, &text[start..i], space);
            out.push(Token::Newline);
            start = i + 1;
            space = None;
            continue;
        }
        let is_space = c.is_whitespace();
        if space.is_some_and(|s| s != is_space) {
            push_run(&mut out, &text[start..i], space);
            start = i;
        }
        space = Some(is_space);
    }
    push_run(&mut out, &text[start..], space);
    out
}

fn push_run<'a>(out: &mut Vec<Token<'a>>, run: &'a str, space: Option<bool>) {
    match space {
        _ if run.is_empty() => {}
        Some(true) => out.push(Token::Space(run)),
        _ => out.push(Token::Word(run)),
    }
}

/// Display width of one char; tabs and other controls count as a space
/// (they are drawn as one).
fn char_width(c: char) -> usize {
    if c.is_control() { 1 } else { c.width().unwrap_or(0) }
}

fn str_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// The rows being built.
struct Rows {
    width: usize,
    indent: usize,
    done: Vec<Line<'static>>,
    spans: Vec<Span<'static>>,
    col: usize,
}

impl Rows {
    fn place(&mut self, token: Token<'_>, style: Style) {
        match token {
            Token::Newline => self.break_row(),
            Token::Space(s) => {
                let w = str_width(s);
                if self.col + w <= self.width {
                    self.push(s, style, w);
                } else {
                    // Spaces at the edge vanish into the break.
                    self.break_row();
                }
            }
            Token::Word(s) => {
                let w = str_width(s);
                if self.col + w <= self.width {
                    self.push(s, style, w);
                } else if w <= self.width - self.indent && self.col > self.indent {
                    self.break_row();
                    self.push(s, style, w);
                } else {
                    self.push_broken(s, style);
                }
            }
        }
    }

    /// A word too long for any row: as much as fits on each.
    fn push_broken(&mut self, s: &str, style: Style) {
        let mut start = 0;
        let mut used = 0;
        for (i, c) in s.char_indices() {
            let w = char_width(c);
            if self.col + used + w > self.width && (self.col + used) > self.indent {
                self.push(&s[start..i], style, used);
                self.break_row();
                start = i;
                used = 0;
            }
            used += w;
        }
        self.push(&s[start..], style, used);
    }

    fn push(&mut self, s: &str, style: Style, w: usize) {
        if s.is_empty() {
            return;
        }
        let text: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        match self.spans.last_mut() {
            Some(last) if last.style == style => last.content.to_mut().push_str(&text),
            _ => self.spans.push(Span::styled(text, style)),
        }
        self.col += w;
    }

    fn break_row(&mut self) {
        // Spaces before a break would only pad the row.
        while let Some(last) = self.spans.last_mut() {
            let kept = last.content.trim_end().len();
            if kept > 0 {
                last.content.to_mut().truncate(kept);
                break;
            }
            self.spans.pop();
        }
        let spans = std::mem::take(&mut self.spans);
        self.done.push(Line::from(spans));
        if self.indent > 0 {
            self.spans.push(Span::raw(" ".repeat(self.indent)));
        }
        self.col = self.indent;
    }

    fn finish(mut self) -> Vec<Line<'static>> {
        self.done.push(Line::from(self.spans));
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::style::Color;

    fn plain(text: &str, width: usize, indent: usize) -> Vec<String> {
        wrap(&[(text.to_owned(), Style::default())], width, indent)
            .iter()
            .map(|line| line.to_string())
            .collect()
    }

    #[test]
    fn short_text_is_one_row() {
        assert_eq!(plain("hello world", 20, 0), ["hello world"]);
        assert_eq!(plain("", 20, 0), [""]);
    }

    #[test]
    fn words_move_to_the_next_row_whole() {
        assert_eq!(plain("the quick brown fox", 10, 0), ["the quick", "brown fox"]);
        assert_eq!(plain("the quick brown fox", 10, 2), ["the quick", "  brown", "  fox"]);
    }

    #[test]
    fn long_words_are_broken_at_the_edge() {
        assert_eq!(plain("abcdefghijkl", 5, 0), ["abcde", "fghij", "kl"]);
        assert_eq!(plain("xy abcdefghij", 5, 1), ["xy ab", " cdef", " ghij"]);
    }

    #[test]
    fn wide_chars_never_straddle_the_edge() {
        // Each 漢 is 2 columns: 5 columns hold two.
        assert_eq!(plain("漢漢漢漢漢", 5, 0), ["漢漢", "漢漢", "漢"]);
        for row in plain("ab漢字かなカナ😀😀 x", 5, 0) {
            assert!(str_width(&row) <= 5, "{row:?}");
        }
    }

    #[test]
    fn newlines_and_tabs() {
        assert_eq!(plain("one\ntwo", 20, 2), ["one", "  two"]);
        assert_eq!(plain("a\tb", 20, 0), ["a b"]);
    }

    #[test]
    fn styles_are_kept_per_segment() {
        let red = Style::default().fg(Color::Red);
        let rows = wrap(&[("10:00 ".into(), Style::default()), ("error: x".into(), red)], 40, 0);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].spans.len(), 2);
        assert_eq!(rows[0].spans[1].style, red);
        assert_eq!(rows[0].spans[1].content, "error: x");
    }

    #[test]
    fn a_zero_width_still_makes_progress() {
        assert_eq!(plain("abc", 0, 0), ["a", "b", "c"]);
    }
}
