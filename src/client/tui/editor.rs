//! The input line: editing keys, history and Tab completion, on plain data.
//!
//! Positions are counted in characters, never bytes, so no key can split a
//! character in two.

/// How many sent lines Up and Down can bring back: plenty for a chat, and a
/// bound on memory.
pub const HISTORY_LINES: usize = 500;

/// The line being typed.
///
/// Promises:
/// 1. The cursor is always between 0 and the line's length (in characters).
/// 2. Nothing enters the history unless [`Editor::take`] is asked to keep it
///    (a password never is).
/// 3. Browsing the history never loses the line being typed: going down past
///    the newest entry brings it back.
#[derive(Debug, Default, Clone)]
pub struct Editor {
    chars: Vec<char>,
    cursor: usize,
    history: Vec<String>,
    /// While browsing: the index in `history` shown now.
    browsing: Option<usize>,
    /// The line that was being typed when browsing began.
    draft: String,
    completion: Option<Completion>,
}

/// A Tab completion in progress: further Tabs cycle through the candidates.
#[derive(Debug, Clone)]
struct Completion {
    /// Where the completed word starts.
    start: usize,
    /// How many characters the current candidate (and its suffix) takes.
    inserted: usize,
    candidates: Vec<String>,
    index: usize,
}

impl Editor {
    /// The line as typed.
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    /// The line's characters.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Where the cursor is, in characters from the start.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Whether nothing is typed.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Forgets the line (not the history).
    pub fn clear(&mut self) {
        self.chars.clear();
        self.cursor = 0;
        self.browsing = None;
        self.completion = None;
    }

    /// Replaces the line, cursor at its end.
    pub fn set_text(&mut self, text: &str) {
        self.chars = text.chars().collect();
        self.cursor = self.chars.len();
        self.completion = None;
    }

    /// Types one character at the cursor.
    pub fn insert(&mut self, c: char) {
        self.completion = None;
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
    }

    /// Types several characters (a paste); line breaks become spaces, other
    /// control characters are dropped.
    pub fn insert_str(&mut self, text: &str) {
        for c in text.chars() {
            match c {
                '\n' | '\r' | '\t' => self.insert(' '),
                c if c.is_control() => {}
                c => self.insert(c),
            }
        }
    }

    /// Left arrow.
    pub fn left(&mut self) {
        self.completion = None;
        self.cursor = self.cursor.saturating_sub(1);
    }

    /// Right arrow.
    pub fn right(&mut self) {
        self.completion = None;
        self.cursor = (self.cursor + 1).min(self.chars.len());
    }

    /// Home (or Ctrl-A).
    pub fn home(&mut self) {
        self.completion = None;
        self.cursor = 0;
    }

    /// End (or Ctrl-E).
    pub fn end(&mut self) {
        self.completion = None;
        self.cursor = self.chars.len();
    }

    /// Backspace: deletes the character before the cursor.
    pub fn backspace(&mut self) {
        self.completion = None;
        if self.cursor > 0 {
            self.cursor -= 1;
            self.chars.remove(self.cursor);
        }
    }

    /// Delete: deletes the character under the cursor.
    pub fn delete(&mut self) {
        self.completion = None;
        if self.cursor < self.chars.len() {
            self.chars.remove(self.cursor);
        }
    }

    /// Ctrl-W: deletes the word before the cursor, and the spaces after it.
    pub fn delete_word(&mut self) {
        self.completion = None;
        let mut start = self.cursor;
        while start > 0 && self.chars[start - 1].is_whitespace() {
            start -= 1;
        }
        while start > 0 && !self.chars[start - 1].is_whitespace() {
            start -= 1;
        }
        self.chars.drain(start..self.cursor);
        self.cursor = start;
    }

    /// Ctrl-U: deletes everything before the cursor.
    pub fn delete_to_start(&mut self) {
        self.completion = None;
        self.chars.drain(..self.cursor);
        self.cursor = 0;
    }

    /// Takes the line for sending, leaving the editor empty. With `keep`
    /// the line joins the history (unless it repeats the last entry).
    pub fn take(&mut self, keep: bool) -> String {
        let line = self.text();
        self.clear();
        self.draft.clear();
        if keep && !line.trim().is_empty() && self.history.last() != Some(&line) {
            if self.history.len() == HISTORY_LINES {
                self.history.remove(0);
            }
            self.history.push(line.clone());
        }
        line
    }

    /// Up: the previous line of the history.
    pub fn history_up(&mut self) {
        self.completion = None;
        let index = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.text();
                self.history.len() - 1
            }
            Some(0) => return,
            Some(i) => i - 1,
        };
        self.browsing = Some(index);
        let line = self.history[index].clone();
        self.set_text(&line);
    }

    /// Down: the next line of the history, then the line being typed.
    pub fn history_down(&mut self) {
        self.completion = None;
        let Some(i) = self.browsing else {
            return;
        };
        if i + 1 < self.history.len() {
            self.browsing = Some(i + 1);
            let line = self.history[i + 1].clone();
            self.set_text(&line);
        } else {
            self.browsing = None;
            let draft = std::mem::take(&mut self.draft);
            self.set_text(&draft);
        }
    }

    /// Tab: completes the word before the cursor. The first word of a line
    /// that starts with `/` is completed from `commands`; any other word
    /// from `names`. Matching ignores case. A name completed at the start
    /// of the line gets `": "` after it (the way to address someone); other
    /// completions a space. Pressed again, Tab moves to the next candidate
    /// (`backwards`: the previous one). Returns whether anything matched.
    pub fn complete(&mut self, commands: &[String], names: &[String], backwards: bool) -> bool {
        if let Some(mut completion) = self.completion.take() {
            let count = completion.candidates.len();
            completion.index = if backwards {
                (completion.index + count - 1) % count
            } else {
                (completion.index + 1) % count
            };
            self.put(&mut completion);
            self.completion = Some(completion);
            return true;
        }
        let mut start = self.cursor;
        while start > 0 && !self.chars[start - 1].is_whitespace() {
            start -= 1;
        }
        let word: String = self.chars[start..self.cursor].iter().collect();
        let word = word.to_lowercase();
        let (pool, suffix) = if start == 0 && word.starts_with('/') {
            (commands, " ")
        } else if start == 0 {
            (names, ": ")
        } else {
            (names, " ")
        };
        let mut candidates: Vec<String> = pool
            .iter()
            .filter(|c| c.to_lowercase().starts_with(&word))
            .map(|c| format!("{c}{suffix}"))
            .collect();
        candidates.sort_by_key(|c| c.to_lowercase());
        candidates.dedup();
        if candidates.is_empty() {
            return false;
        }
        let mut completion = Completion {
            start,
            inserted: self.cursor - start,
            candidates,
            index: if backwards { usize::MAX } else { 0 },
        };
        if backwards {
            completion.index = completion.candidates.len() - 1;
        }
        self.put(&mut completion);
        self.completion = Some(completion);
        true
    }

    /// Puts a completion's current candidate in place of the previous one.
    fn put(&mut self, completion: &mut Completion) {
        let candidate: Vec<char> = completion.candidates[completion.index].chars().collect();
        let end = completion.start + completion.inserted;
        self.chars
            .splice(completion.start..end, candidate.iter().copied());
        completion.inserted = candidate.len();
        self.cursor = completion.start + candidate.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> Editor {
        let mut editor = Editor::default();
        editor.insert_str(text);
        editor
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn cursor_keys_move_within_the_line_and_typing_inserts_there() {
        let mut editor = typed("hllo");
        editor.home();
        editor.right();
        editor.insert('e');
        assert_eq!(editor.text(), "hello");
        editor.end();
        editor.right();
        assert_eq!(editor.cursor(), 5);
        editor.home();
        editor.left();
        assert_eq!(editor.cursor(), 0);
    }

    #[test]
    fn ctrl_w_deletes_the_word_before_the_cursor() {
        let mut editor = typed("hello big  world");
        editor.delete_word();
        assert_eq!(editor.text(), "hello big  ");
        editor.delete_word();
        assert_eq!(editor.text(), "hello ");
        editor.delete_word();
        editor.delete_word();
        assert_eq!(editor.text(), "");
    }

    #[test]
    fn ctrl_u_deletes_up_to_the_cursor_only() {
        let mut editor = typed("hello world");
        for _ in 0..5 {
            editor.left();
        }
        editor.delete_to_start();
        assert_eq!(editor.text(), "world");
        assert_eq!(editor.cursor(), 0);
    }

    #[test]
    fn wide_and_accented_characters_are_never_split() {
        let mut editor = typed("héllo 日本");
        editor.backspace();
        assert_eq!(editor.text(), "héllo 日");
        editor.home();
        editor.right();
        editor.delete();
        assert_eq!(editor.text(), "hllo 日");
    }

    #[test]
    fn up_and_down_browse_history_and_bring_back_the_draft() {
        let mut editor = Editor::default();
        editor.insert_str("first");
        editor.take(true);
        editor.insert_str("second");
        editor.take(true);
        editor.insert_str("half typed");
        editor.history_up();
        assert_eq!(editor.text(), "second");
        editor.history_up();
        assert_eq!(editor.text(), "first");
        editor.history_up();
        assert_eq!(editor.text(), "first");
        editor.history_down();
        assert_eq!(editor.text(), "second");
        editor.history_down();
        assert_eq!(editor.text(), "half typed");
    }

    #[test]
    fn a_line_taken_without_keeping_never_comes_back() {
        let mut editor = Editor::default();
        editor.insert_str("hunter2");
        assert_eq!(editor.take(false), "hunter2");
        editor.history_up();
        assert_eq!(editor.text(), "");
    }

    #[test]
    fn tab_completes_commands_at_the_start_of_the_line() {
        let commands = strings(&["/join", "/list", "/leave"]);
        let mut editor = typed("/jo");
        assert!(editor.complete(&commands, &[], false));
        assert_eq!(editor.text(), "/join ");
        let mut editor = typed("/l");
        editor.complete(&commands, &[], false);
        assert_eq!(editor.text(), "/leave ");
        editor.complete(&commands, &[], false);
        assert_eq!(editor.text(), "/list ");
        editor.complete(&commands, &[], false);
        assert_eq!(editor.text(), "/leave ");
    }

    #[test]
    fn tab_completes_names_ignoring_case_and_addresses_at_line_start() {
        let names = strings(&["Alice", "bob", "albert"]);
        let mut editor = typed("al");
        editor.complete(&[], &names, false);
        assert_eq!(editor.text(), "albert: ");
        editor.complete(&[], &names, false);
        assert_eq!(editor.text(), "Alice: ");
        let mut editor = typed("/msg B");
        editor.complete(&strings(&["/msg"]), &names, false);
        assert_eq!(editor.text(), "/msg bob ");
        let mut editor = typed("zed");
        assert!(!editor.complete(&[], &names, false));
        assert_eq!(editor.text(), "zed");
    }

    #[test]
    fn completion_in_the_middle_of_a_line_keeps_what_follows() {
        let names = strings(&["alice"]);
        let mut editor = typed("hi al, how are you");
        for _ in 0.." , how are you".len() - 1 {
            editor.left();
        }
        editor.complete(&[], &names, false);
        assert_eq!(editor.text(), "hi alice , how are you");
    }

    #[test]
    fn pasted_line_breaks_become_spaces() {
        let editor = typed("one\ntwo\x1b");
        assert_eq!(editor.text(), "one two");
    }
}
