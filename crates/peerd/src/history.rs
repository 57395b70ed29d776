//! Conversation history: one append-only JSON-lines file per peer in
//! `<data-dir>/history/<name>.jsonl`.
//!
//! The driver appends records as the session asks and writes them with one
//! `write` per batch (group commit) *before* it transmits the receipts that
//! depend on them: once `write` returns the bytes are in the kernel, so a
//! `delivered` message survives a crash (kill -9) of the daemon. (They are
//! not fsynced: a power cut can lose the last moments; see the README.)
//!
//! Reading folds the lines: a message line, then state lines that upgrade
//! it. A torn last line (a crash mid-write) or any line that does not parse
//! is skipped, so a damaged file never stops the daemon.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use peerchat_core::Name;
use peerchat_core::session::{
    Direction, Id, MAX_UNDISPLAYED_BYTES, MAX_UNDISPLAYED_MESSAGES, Message, MessageState, Record,
};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One stored line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Message {
        id: String,
        dir: Dir,
        peer: String,
        text: String,
        at: i64,
        #[serde(default)]
        seq: u64,
        state: State,
    },
    State {
        id: String,
        state: State,
    },
}

/// Appends `record` to `out` as one [`Line`] and a newline: the JSON serde
/// would write (the reader parses it with serde), by hand because it is on
/// the hot path (two lines per message sent). A string needs escaping only
/// if it holds `"`, `\\` or a control character; chat text rarely does, and
/// then serde_json escapes it.
fn write_line(out: &mut Vec<u8>, record: &Record) {
    match record {
        Record::Message { peer, direction, message, state } => {
            out.extend_from_slice(b"{\"kind\":\"message\",\"id\":");
            write_str(out, &message.id);
            out.extend_from_slice(match direction {
                Direction::In => b",\"dir\":\"in\",\"peer\":",
                Direction::Out => b",\"dir\":\"out\",\"peer\":",
            });
            write_str(out, peer.as_str());
            out.extend_from_slice(b",\"text\":");
            write_str(out, &message.text);
            out.extend_from_slice(b",\"at\":");
            if message.sent_at_ms < 0 {
                out.push(b'-');
            }
            write_u64(out, message.sent_at_ms.unsigned_abs());
            out.extend_from_slice(b",\"seq\":");
            write_u64(out, message.seq);
            out.extend_from_slice(b",\"state\":");
            out.extend_from_slice(state_word(*state));
        }
        Record::State { id, state, .. } => {
            out.extend_from_slice(b"{\"kind\":\"state\",\"id\":");
            write_str(out, id);
            out.extend_from_slice(b",\"state\":");
            out.extend_from_slice(state_word(*state));
        }
    }
    out.extend_from_slice(b"}\n");
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing a str into a Vec cannot fail; keep the line valid anyway.
        out.extend_from_slice(b"\"\"");
    }
}

/// Whether `bytes` holds a byte JSON escapes: `"`, `\\` or a control
/// character. Eight bytes at a time, because every message line checks its
/// id, peer and text. The usual bit tricks: in `x - 0x0101…`, a byte's top
/// bit comes out set where the byte was zero (or borrowed from one that
/// was), so "some byte of `x ^ c` is zero" tells whether `c` is in `x`, and
/// `x - 0x2020…` likewise finds a byte below 0x20. Bytes of 0x80 and above
/// (UTF-8 beyond ASCII) never need escaping and are masked out.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let ascii = !x & HIGH;
        let control = x.wrapping_sub(ONES * 0x20);
        let quote = (x ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
        let backslash = (x ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
        if (control | quote | backslash) & ascii != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `n` in decimal, two digits per step (`itoa`): `write!` through the
/// formatter was 4% of the sending daemon's instructions at full speed, and
/// a digit-at-a-time loop still 3% (two numbers per message line).
fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn state_word(state: MessageState) -> &'static [u8] {
    match state {
        MessageState::Sent => b"\"sent\"",
        MessageState::Delivered => b"\"delivered\"",
        MessageState::Displayed => b"\"displayed\"",
        MessageState::Failed => b"\"failed\"",
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Dir {
    In,
    Out,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum State {
    Sent,
    Delivered,
    Displayed,
    Failed,
}

impl From<MessageState> for State {
    fn from(s: MessageState) -> State {
        match s {
            MessageState::Sent => State::Sent,
            MessageState::Delivered => State::Delivered,
            MessageState::Displayed => State::Displayed,
            MessageState::Failed => State::Failed,
        }
    }
}

impl From<State> for MessageState {
    fn from(s: State) -> MessageState {
        match s {
            State::Sent => MessageState::Sent,
            State::Delivered => MessageState::Delivered,
            State::Displayed => MessageState::Displayed,
            State::Failed => MessageState::Failed,
        }
    }
}

/// A message as `history` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) direction: Direction,
    pub(crate) peer: String,
    pub(crate) text: String,
    pub(crate) at_ms: i64,
    pub(crate) seq: u64,
    pub(crate) state: MessageState,
}

impl Entry {
    fn message(self) -> Message {
        Message {
            id: self.id.into(),
            text: self.text.into(),
            sent_at_ms: self.at_ms,
            seq: self.seq.max(1),
        }
    }
}

/// History files kept open (and write buffers kept) at most.
const MAX_OPEN_FILES: usize = 4;

/// The writer side, owned by the driver.
#[derive(Debug)]
pub(crate) struct History {
    dir: PathBuf,
    files: HashMap<Name, File>,
    /// Lines waiting for the next flush, per peer: a list, not a map,
    /// because a batch is about one peer (two around a switch), and finding
    /// it must not make a lower-cased key per line.
    pending: Vec<(Name, Vec<u8>)>,
}

impl History {
    /// Opens (creating) `<data_dir>/history`.
    pub(crate) fn open(data_dir: &Path) -> Result<History, Error> {
        let dir = data_dir.join("history");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(&dir, "creating the history folder", e))?;
        Ok(History { dir, files: HashMap::new(), pending: Vec::new() })
    }

    /// The file of `peer`'s conversation. Names are safe file names by
    /// construction (see `peerchat_core::name`).
    pub(crate) fn path_of(dir: &Path, peer: &Name) -> PathBuf {
        dir.join("history").join(format!("{}.jsonl", peer.key()))
    }

    /// Queues a record for the next [`History::flush`].
    pub(crate) fn append(&mut self, record: &Record) {
        let peer = match record {
            Record::Message { peer, .. } | Record::State { peer, .. } => peer,
        };
        let index = match self.pending.iter().position(|(p, _)| p == peer) {
            Some(i) => i,
            None => {
                self.pending.push((peer.clone(), Vec::new()));
                self.pending.len() - 1
            }
        };
        write_line(&mut self.pending[index].1, record);
    }

    /// Writes everything queued: one write per peer file.
    pub(crate) fn flush(&mut self) -> Result<(), Error> {
        for (peer, buf) in self.pending.iter_mut() {
            if buf.is_empty() {
                continue;
            }
            // The path is only for opening and for errors: not made per flush.
            let path = || self.dir.join(format!("{}.jsonl", peer.key()));
            let file = match self.files.get_mut(peer) {
                Some(f) => f,
                None => {
                    // One conversation at a time: files of earlier peers
                    // are closed rather than held open for the whole run.
                    if self.files.len() >= MAX_OPEN_FILES {
                        self.files.clear();
                    }
                    let f = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path())
                        .map_err(|e| Error::io(path(), "opening a history file", e))?;
                    self.files.entry(peer.clone()).or_insert(f)
                }
            };
            file.write_all(buf).map_err(|e| Error::io(path(), "appending to a history file", e))?;
            buf.clear();
        }
        if self.pending.len() > MAX_OPEN_FILES {
            self.pending.clear();
        }
        Ok(())
    }
}

/// Reads the newest `limit` messages of the conversation with `peer`,
/// oldest first. A missing file is an empty history.
pub(crate) fn read(data_dir: &Path, peer: &Name, limit: usize) -> Result<Vec<Entry>, Error> {
    let path = History::path_of(data_dir, peer);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, "reading a history file", e)),
    };
    // The file grows with everything a peer ever sent: only the newest
    // `limit` entries are held while it is read.
    fold(BufReader::new(file), limit).map_err(|e| Error::io(&path, "reading a history file", e))
}

/// How much of the end of a history file is read to recover state: more
/// than the unacknowledged messages a conversation may hold.
const TAIL_BYTES: u64 = 4 * 1024 * 1024;

/// The newest entries of one history file (its last few MiB).
fn tail(path: &Path) -> Vec<Entry> {
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut reader = BufReader::new(file);
    if start > 0 {
        // Starting mid-file: the first line is a fragment.
        let mut skip = Vec::new();
        let _ = reader.read_until(b'\n', &mut skip);
    }
    fold(reader, usize::MAX).unwrap_or_default()
}

/// What a restarting daemon picks up from its history.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Received messages no display client has shown, oldest first: shown
    /// to the next display client, as SPEC §3 asks.
    pub(crate) unseen: Vec<(Name, Message)>,
    /// Our messages never acknowledged, per peer, oldest first: sent again
    /// with the next conversation with that peer, or failed.
    pub(crate) unacked: Vec<(Name, Vec<Message>)>,
}

/// Reads the end of every history file for what a restart must not lose.
pub(crate) fn recover(data_dir: &Path) -> Recovered {
    let mut out = Recovered::default();
    let Ok(files) = std::fs::read_dir(data_dir.join("history")) else {
        return out;
    };
    for path in files.filter_map(Result::ok).map(|e| e.path()) {
        let Some(peer) =
            path.file_stem().and_then(|s| s.to_str()).and_then(|s| Name::parse(s).ok())
        else {
            continue;
        };
        let mut unacked = Vec::new();
        for e in tail(&path) {
            match (e.direction, e.state) {
                (Direction::In, MessageState::Delivered) => {
                    if let Ok(from) = Name::parse(&e.peer) {
                        out.unseen.push((from, e.message()));
                    }
                }
                (Direction::Out, MessageState::Sent) => unacked.push(e.message()),
                _ => {}
            }
        }
        if !unacked.is_empty() {
            out.unacked.push((peer, unacked));
        }
        // Per file, so that many peers' backlogs are never all in memory.
        keep_newest_unseen(&mut out.unseen);
    }
    out.unseen.sort_by_key(|(_, m)| m.sent_at_ms);
    out
}

/// Trims `unseen` to the newest that the session would keep anyway (its
/// caps on messages waiting for a display client), oldest dropped first.
fn keep_newest_unseen(unseen: &mut Vec<(Name, Message)>) {
    let mut bytes: usize = unseen.iter().map(|(_, m)| m.text.len()).sum();
    if unseen.len() <= MAX_UNDISPLAYED_MESSAGES && bytes <= MAX_UNDISPLAYED_BYTES {
        return;
    }
    unseen.sort_by_key(|(_, m)| m.sent_at_ms);
    let mut first = 0;
    while unseen.len() - first > MAX_UNDISPLAYED_MESSAGES || bytes > MAX_UNDISPLAYED_BYTES {
        bytes -= unseen[first].1.text.len();
        first += 1;
    }
    unseen.drain(..first);
}

/// The ids of the messages received from `peer` lately (oldest first), and
/// whether each was shown: how a message sent again is recognised, also
/// after a restart.
pub(crate) fn recent_ids(data_dir: &Path, peer: &Name) -> Vec<(Id, bool)> {
    tail(&History::path_of(data_dir, peer))
        .into_iter()
        .filter(|e| e.direction == Direction::In)
        .map(|e| (e.id.into(), e.state == MessageState::Displayed))
        .collect()
}

/// Folds history lines into entries: message lines in order, state lines
/// applied to the message they name.
fn fold(reader: impl BufRead, keep: usize) -> std::io::Result<Vec<Entry>> {
    // The newest `keep` messages; `index` maps their ids to their number
    // among all messages read, `gone` holds the ids that left the window
    // from the front (so `gone.len()` of them): a message sent again after
    // a lost link is not a new entry, even once its first line has left.
    let mut entries: VecDeque<Entry> = VecDeque::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut gone: HashSet<String> = HashSet::new();
    for line in reader.split(b'\n') {
        let Ok(line) = serde_json::from_slice::<Line>(&line?) else {
            continue;
        };
        match line {
            Line::Message { id, dir, peer, text, at, seq, state } => {
                if keep == 0 || index.contains_key(&id) || gone.contains(&id) {
                    continue;
                }
                if entries.len() == keep
                    && let Some(old) = entries.pop_front()
                {
                    index.remove(&old.id);
                    gone.insert(old.id);
                }
                index.insert(id.clone(), gone.len() + entries.len());
                entries.push_back(Entry {
                    id,
                    direction: match dir {
                        Dir::In => Direction::In,
                        Dir::Out => Direction::Out,
                    },
                    peer,
                    text,
                    at_ms: at,
                    seq,
                    state: state.into(),
                });
            }
            Line::State { id, state } => {
                if let Some(e) =
                    index.get(&id).and_then(|&n| entries.get_mut(n.checked_sub(gone.len())?))
                {
                    e.state = upgrade(e.state, state.into());
                }
            }
        }
    }
    Ok(entries.into())
}

/// The peer whose history file changed last, if any.
pub(crate) fn last_peer(data_dir: &Path) -> Option<Name> {
    let entries = std::fs::read_dir(data_dir.join("history")).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let path = e.path();
            let name = Name::parse(path.file_stem()?.to_str()?).ok()?;
            let modified = e.metadata().ok()?.modified().ok()?;
            (path.extension()? == "jsonl").then_some((modified, name))
        })
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, name)| name)
}

/// States only move forward: sent → delivered → displayed, and failed only
/// replaces sent (a receipt that comes late still wins over failed).
fn upgrade(old: MessageState, new: MessageState) -> MessageState {
    match (old, new) {
        (MessageState::Sent, n) => n,
        (MessageState::Failed, MessageState::Delivered | MessageState::Displayed) => new,
        (MessageState::Delivered, MessageState::Displayed) => new,
        (o, _) => o,
    }
}

/// Convenience for tests and the sans-IO types.
#[cfg(test)]
pub(crate) fn message(id: &str, text: &str) -> Message {
    Message { id: id.into(), text: text.into(), sent_at_ms: 1_700_000_000_000, seq: 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).expect("valid")
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 1_700_000_000_000, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn needs_escape_finds_every_escaped_byte_at_every_position() {
        let naive = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        // Neighbours that could confuse the bit tricks: just above and
        // below the searched values, and bytes with the top bit set.
        let fillers = [b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xa2, 0xdc, 0xff];
        for len in 0..24 {
            for pos in 0..len {
                for c in 0..=255u8 {
                    for &fill in &fillers {
                        let mut bytes = vec![fill; len];
                        bytes[pos] = c;
                        assert_eq!(needs_escape(&bytes), naive(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }

    fn tmp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "peerd-history-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).expect("tmp");
        dir
    }

    #[test]
    fn appends_fold_into_entries_with_their_latest_state() {
        let dir = tmp();
        let mut h = History::open(&dir).expect("open");
        let bob = name("Bob");
        h.append(&Record::Message {
            peer: bob.clone(),
            direction: Direction::Out,
            message: message("a", "hi"),
            state: MessageState::Sent,
        });
        h.append(&Record::Message {
            peer: bob.clone(),
            direction: Direction::In,
            message: message("b", "hello"),
            state: MessageState::Delivered,
        });
        h.flush().expect("flush");
        h.append(&Record::State {
            peer: bob.clone(),
            id: "a".into(),
            state: MessageState::Delivered,
        });
        h.append(&Record::State {
            peer: bob.clone(),
            id: "a".into(),
            state: MessageState::Displayed,
        });
        h.append(&Record::State {
            peer: bob.clone(),
            id: "a".into(),
            state: MessageState::Delivered,
        });
        h.flush().expect("flush");
        let got = read(&dir, &name("bob"), 50).expect("read");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].text, "hi");
        assert_eq!(got[0].state, MessageState::Displayed);
        assert_eq!(got[0].peer, "Bob");
        assert_eq!(got[1].direction, Direction::In);
        assert_eq!(last_peer(&dir), Some(name("bob")));
        let recovered = recover(&dir);
        let unseen: Vec<_> =
            recovered.unseen.into_iter().map(|(from, m)| (from.to_string(), m.text)).collect();
        assert_eq!(unseen, [("Bob".to_owned(), "hello".into())]);
        assert!(recovered.unacked.is_empty(), "message a was delivered");
        assert_eq!(recent_ids(&dir, &bob), [("b".into(), false)]);
        let newest = read(&dir, &bob, 1).expect("read");
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].id, "b");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn recovery_keeps_only_the_newest_unseen_of_all_peers_within_the_caps() {
        let dir = tmp();
        let mut h = History::open(&dir).expect("open");
        let text = "x".repeat(peerchat_core::MAX_TEXT_BYTES);
        // Three peers, 2.5 MiB of unseen messages each, interleaved in time.
        let per_peer = 40;
        for i in 0..per_peer {
            for (p, peer) in ["ann", "bo", "cy"].into_iter().enumerate() {
                let at = 1_700_000_000_000 + 3 * i + p as i64;
                h.append(&Record::Message {
                    peer: name(peer),
                    direction: Direction::In,
                    message: Message {
                        id: format!("{peer}-{i}").into(),
                        text: text.as_str().into(),
                        sent_at_ms: at,
                        seq: 1,
                    },
                    state: MessageState::Delivered,
                });
            }
        }
        h.flush().expect("flush");
        let unseen = recover(&dir).unseen;
        let bytes: usize = unseen.iter().map(|(_, m)| m.text.len()).sum();
        assert!(bytes <= MAX_UNDISPLAYED_BYTES, "{bytes}");
        assert_eq!(unseen.len(), MAX_UNDISPLAYED_BYTES / text.len());
        let times: Vec<i64> = unseen.iter().map(|(_, m)| m.sent_at_ms).collect();
        assert!(times.is_sorted(), "oldest first");
        let newest = 1_700_000_000_000 + 3 * (per_peer - 1) + 2;
        let kept = i64::try_from(unseen.len()).expect("small");
        assert_eq!(times, ((newest - kept + 1)..=newest).collect::<Vec<_>>(), "the newest");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_bounded_fold_keeps_the_newest_with_their_states() {
        let bob = name("bob");
        let mut file = Vec::new();
        for id in ["a", "b", "c", "d"] {
            let record = Record::Message {
                peer: bob.clone(),
                direction: Direction::Out,
                message: message(id, id),
                state: MessageState::Sent,
            };
            write_line(&mut file, &record);
        }
        for (id, state) in [("a", MessageState::Delivered), ("c", MessageState::Displayed)] {
            write_line(&mut file, &Record::State { peer: bob.clone(), id: id.into(), state });
        }
        // "c" and "a" again (sent again after a lost link) are not new
        // entries, even "a", whose first line has left a window of two.
        write_line(
            &mut file,
            &Record::Message {
                peer: bob.clone(),
                direction: Direction::Out,
                message: message("a", "a"),
                state: MessageState::Sent,
            },
        );
        write_line(
            &mut file,
            &Record::Message {
                peer: bob.clone(),
                direction: Direction::Out,
                message: message("c", "c"),
                state: MessageState::Sent,
            },
        );
        let got = |keep| {
            fold(std::io::Cursor::new(&file), keep)
                .expect("read")
                .into_iter()
                .map(|e| (e.id, e.state))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            got(2),
            [("c".into(), MessageState::Displayed), ("d".into(), MessageState::Sent)]
        );
        assert_eq!(got(usize::MAX).len(), 4);
        assert_eq!(got(usize::MAX)[0], ("a".into(), MessageState::Delivered));
        assert!(got(0).is_empty());
    }

    #[test]
    fn hand_written_lines_parse_as_lines_whatever_the_text() {
        let texts =
            ["hi", "say \"hi\"", "back\\slash", "two\nlines\t\u{1}", "héllo 👋", "{\"kind\":1}"];
        for text in texts {
            let record = Record::Message {
                peer: name("Bob"),
                direction: Direction::In,
                message: Message { id: "i\"d".into(), text: text.into(), sent_at_ms: -5, seq: 7 },
                state: MessageState::Delivered,
            };
            let mut out = Vec::new();
            write_line(&mut out, &record);
            assert_eq!(out.last(), Some(&b'\n'));
            let line: Line = serde_json::from_slice(&out).expect("parses");
            let Line::Message { id, dir, peer, text: got, at, seq, state } = line else {
                panic!("not a message line: {}", String::from_utf8_lossy(&out));
            };
            assert_eq!(
                (id.as_str(), dir, peer.as_str(), got.as_str()),
                ("i\"d", Dir::In, "Bob", text)
            );
            assert_eq!((at, seq, state), (-5, 7, State::Delivered));
        }
        let mut out = Vec::new();
        let state = MessageState::Displayed;
        write_line(&mut out, &Record::State { peer: name("Bob"), id: "x".into(), state });
        let line: Line = serde_json::from_slice(&out).expect("parses");
        assert!(matches!(line, Line::State { id, state: State::Displayed } if id == "x"));
    }

    #[test]
    fn a_torn_or_foreign_line_is_skipped() {
        let dir = tmp();
        let mut h = History::open(&dir).expect("open");
        let bob = name("bob");
        h.append(&Record::Message {
            peer: bob.clone(),
            direction: Direction::In,
            message: message("a", "kept"),
            state: MessageState::Delivered,
        });
        h.flush().expect("flush");
        let path = History::path_of(&dir, &bob);
        let mut f = OpenOptions::new().append(true).open(&path).expect("reopen");
        f.write_all(b"garbage\n{\"kind\":\"message\",\"id\":\"x\",\"te").expect("write");
        assert_eq!(read(&dir, &bob, 50).expect("read").len(), 1);
        assert!(read(&dir, &name("nobody"), 50).expect("missing is empty").is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn states_only_move_forward() {
        use MessageState::*;
        assert_eq!(upgrade(Sent, Failed), Failed);
        assert_eq!(upgrade(Failed, Delivered), Delivered);
        assert_eq!(upgrade(Displayed, Delivered), Displayed);
        assert_eq!(upgrade(Delivered, Failed), Delivered);
    }
}
