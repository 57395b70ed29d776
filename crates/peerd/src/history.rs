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
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use peerchat_core::Name;
use peerchat_core::session::{
    Direction, Id, MAX_AWAITING_DISPLAY, MAX_SEEN_IDS, MAX_UNACKED, MAX_UNACKED_BYTES,
    MAX_UNDISPLAYED_BYTES, MAX_UNDISPLAYED_MESSAGES, Message, MessageState, Record,
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
        // Not a line of any conversation: see `History::append`.
        Record::Resumable { .. } => return,
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

impl From<Dir> for Direction {
    fn from(d: Dir) -> Direction {
        match d {
            Dir::In => Direction::In,
            Dir::Out => Direction::Out,
        }
    }
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
    /// `<data_dir>/conversation`: see [`Record::Resumable`].
    resumable_file: PathBuf,
    /// What that file should say, when it changed since the last flush.
    resumable: Option<Option<Name>>,
    files: HashMap<Name, File>,
    /// Peers whose file was opened for writing in this run: only the first
    /// open looks for a line an earlier run tore (see [`end_torn_line`]);
    /// a reopen must not end a line this run left half written.
    opened: HashSet<Name>,
    /// Lines waiting for the next flush, per peer: a list, not a map,
    /// because a batch is about one peer (two around a switch), and finding
    /// it must not make a lower-cased key per line.
    pending: Vec<(Name, Vec<u8>)>,
}

impl History {
    /// Opens (creating) `<data_dir>/history`.
    pub(crate) fn open(data_dir: &Path) -> Result<History, Error> {
        let dir = data_dir.join("history");
        crate::identity::ensure_private_dir(&dir)?;
        Ok(History {
            dir,
            resumable_file: resumable_path(data_dir),
            resumable: None,
            files: HashMap::new(),
            opened: HashSet::new(),
            pending: Vec::new(),
        })
    }

    /// The file of `peer`'s conversation. Names are safe file names by
    /// construction (see `peerchat_core::name`).
    pub(crate) fn path_of(dir: &Path, peer: &Name) -> PathBuf {
        file_in(&dir.join("history"), peer)
    }

    /// Queues a record for the next [`History::flush`].
    pub(crate) fn append(&mut self, record: &Record) {
        let peer = match record {
            Record::Message { peer, .. } | Record::State { peer, .. } => peer,
            Record::Resumable { peer } => {
                self.resumable = Some(peer.clone());
                return;
            }
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

    /// Marks `peer`'s file as the one changed last (creating it if need
    /// be), so that `history` with no name finds the conversation that
    /// started last after a restart too ([`last_peer`]), messages or none.
    /// Best effort: only that default depends on it.
    pub(crate) fn touch(&mut self, peer: &Name) {
        let path = file_in(&self.dir, peer);
        let touched = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        if let Err(e) = touched {
            tracing::debug!(path = %path.display(), error = %e, "cannot mark the history file");
        }
    }

    /// Writes everything queued: one write per peer file. A file that
    /// cannot take its lines does not keep the others from being written:
    /// the error names every peer whose lines still wait (and are tried
    /// again at the next flush).
    pub(crate) fn flush(&mut self) -> Result<(), Stuck> {
        if let Some(peer) = self.resumable.take() {
            // Only for resuming after a crash: a failure here costs that,
            // never a message, so it is not the flush's failure.
            if let Err(e) = write_resumable(&self.resumable_file, peer.as_ref()) {
                tracing::warn!(error = %e, "cannot note the conversation to resume after a crash");
            }
        }
        let mut stuck: Option<Stuck> = None;
        for (peer, buf) in self.pending.iter_mut() {
            if buf.is_empty() {
                continue;
            }
            let files = Files { dir: &self.dir, open: &mut self.files, opened: &mut self.opened };
            if let Err(error) = write_pending(files, peer, buf) {
                match &mut stuck {
                    Some(s) => s.peers.push(peer.clone()),
                    None => stuck = Some(Stuck { peers: vec![peer.clone()], error }),
                }
            }
        }
        if self.pending.len() > MAX_OPEN_FILES {
            // Lines that still wait stay.
            self.pending.retain(|(_, buf)| !buf.is_empty());
        }
        stuck.map_or(Ok(()), Err)
    }
}

/// Lines for some peers could not be written (see [`History::flush`]).
#[derive(Debug)]
pub(crate) struct Stuck {
    /// Every peer whose lines still wait.
    pub(crate) peers: Vec<Name>,
    /// The first failure.
    pub(crate) error: Error,
}

/// `peer`'s file in the history folder `dir`.
fn file_in(dir: &Path, peer: &Name) -> PathBuf {
    dir.join(format!("{}.jsonl", peer.key()))
}

/// [`History`]'s files, as [`write_pending`] needs them.
struct Files<'a> {
    dir: &'a Path,
    open: &'a mut HashMap<Name, File>,
    opened: &'a mut HashSet<Name>,
}

/// Appends `buf`, the lines waiting for `peer`, to its file (opened if
/// need be): what was written leaves `buf` even when a later part fails.
fn write_pending(files: Files<'_>, peer: &Name, buf: &mut Vec<u8>) -> Result<(), Error> {
    // The path is only for opening and for errors: not made per flush.
    let path = || file_in(files.dir, peer);
    let file = match files.open.get_mut(peer) {
        Some(f) => f,
        None => {
            // One conversation at a time: files of earlier peers are
            // closed rather than held open for the whole run.
            if files.open.len() >= MAX_OPEN_FILES {
                files.open.clear();
            }
            let mut f = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .mode(0o600)
                .open(path())
                .map_err(|e| Error::io(path(), "opening a history file", e))?;
            if !files.opened.contains(peer) {
                end_torn_line(&mut f)
                    .map_err(|e| Error::io(path(), "ending a torn history line", e))?;
                files.opened.insert(peer.clone());
            }
            files.open.entry(peer.clone()).or_insert(f)
        }
    };
    // What was written leaves the buffer even when a later part fails
    // (disk full): the retry goes on from there, so no line is written
    // twice and none torn in two.
    let mut written = 0;
    let result = loop {
        if written == buf.len() {
            break Ok(());
        }
        match file.write(&buf[written..]) {
            Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    buf.drain(..written);
    result.map_err(|e| Error::io(path(), "appending to a history file", e))
}

/// Ends the file's last line if a crash (or a full disk, then a stop) left
/// it torn, so that the next line written starts a line of its own: glued
/// to the fragment, it would be unreadable, and a message acknowledged or
/// waiting to be sent would be lost with it. The fragment stays, skipped
/// by every reader like any line that does not parse.
fn end_torn_line(file: &mut File) -> std::io::Result<()> {
    use std::io::Read;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        // Append mode: this lands at the end whatever the position.
        file.write_all(b"\n")?;
    }
    Ok(())
}

/// The most text one `history` answer carries: the newest entries that
/// fit, so that the answer stays well inside what chatctl accepts (64 MiB)
/// and peerd never holds more than this of a file while reading it.
pub(crate) const MAX_READ_TEXT_BYTES: usize = 32 * 1024 * 1024;

/// The newest entries of a conversation, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Read {
    pub(crate) entries: Vec<Entry>,
    /// Older entries left out, by the limit or by [`MAX_READ_TEXT_BYTES`].
    pub(crate) older: u64,
}

/// The newest `limit` entries of the conversation with `peer` that fit in
/// [`MAX_READ_TEXT_BYTES`], oldest first. A missing file is an empty
/// history. Blocking I/O.
pub(crate) fn read(data_dir: &Path, peer: &Name, limit: usize) -> Result<Read, Error> {
    let path = History::path_of(data_dir, peer);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::default()),
        Err(e) => return Err(Error::io(&path, "reading a history file", e)),
    };
    // The file grows with everything a peer ever sent: only the newest
    // entries are held while it is read.
    let window = Window { count: limit, text_bytes: MAX_READ_TEXT_BYTES };
    fold(BufReader::new(file), window).map_err(|e| Error::io(&path, "reading a history file", e))
}

/// How much of the end of a history file a restart reads for what it must
/// not lose: room for the most of our messages that may wait for
/// `delivered` ([`MAX_UNACKED`], [`MAX_UNACKED_BYTES`] of text) even if
/// every byte of their text was escaped to six (`\u0001`), each line's
/// other fields, and more besides. (4 MiB lost all but the last 63 of 500
/// unacknowledged 64 KiB messages.) Only what waits is kept while reading.
const RECOVERY_TAIL_BYTES: u64 = 256 * 1024 * 1024;

/// A reader over the last `bytes` of the file at `path`, from the first
/// whole line; `None` if it cannot be read.
fn tail_reader(path: &Path, bytes: u64) -> Option<BufReader<File>> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(bytes);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut reader = BufReader::new(file);
    if start > 0 {
        // Starting mid-file: the first line is a fragment.
        let mut skip = Vec::new();
        let _ = reader.read_until(b'\n', &mut skip);
    }
    Some(reader)
}

fn resumable_path(data_dir: &Path) -> PathBuf {
    data_dir.join("conversation")
}

/// Notes `peer` as the conversation to redial after a crash (written aside
/// and renamed, so a crash leaves the old note or the new one), or removes
/// the note.
fn write_resumable(path: &Path, peer: Option<&Name>) -> Result<(), Error> {
    let Some(peer) = peer else {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(path, "removing the conversation note", e))
            }
            _ => Ok(()),
        };
    };
    let aside = path.with_extension("new");
    std::fs::write(&aside, format!("{peer}\n"))
        .map_err(|e| Error::io(&aside, "writing the conversation note", e))?;
    std::fs::rename(&aside, path).map_err(|e| Error::io(path, "writing the conversation note", e))
}

/// The conversation an earlier run noted to redial (see
/// [`Record::Resumable`]), if it left one: it stopped without ending it.
fn read_resumable(data_dir: &Path) -> Option<Name> {
    let text = std::fs::read_to_string(resumable_path(data_dir)).ok()?;
    Name::parse(text.trim()).ok()
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
    /// Ids of our messages delivered but not yet reported displayed, per
    /// peer, oldest first: the peer's `displayed` receipt for them may
    /// still come (it waits for a conversation), and is believed. At most
    /// `MAX_AWAITING_DISPLAY` in all (the newest of each file while there
    /// is room).
    pub(crate) delivered_unshown: Vec<(Name, Vec<Id>)>,
    /// The conversation we were the dialer of when the earlier run
    /// stopped without ending it: redialed at once.
    pub(crate) resumable: Option<Name>,
}

/// Reads the end of every history file for what a restart must not lose.
pub(crate) fn recover(data_dir: &Path) -> Recovered {
    let mut out = Recovered { resumable: read_resumable(data_dir), ..Recovered::default() };
    let mut unshown_held = 0;
    let Ok(files) = std::fs::read_dir(data_dir.join("history")) else {
        return out;
    };
    for path in files.filter_map(Result::ok).map(|e| e.path()) {
        let Some(peer) =
            path.file_stem().and_then(|s| s.to_str()).and_then(|s| Name::parse(s).ok())
        else {
            continue;
        };
        let Some(reader) = tail_reader(&path, RECOVERY_TAIL_BYTES) else {
            continue;
        };
        let Outstanding { unseen, unacked, delivered_unshown } = outstanding(reader);
        for e in unseen {
            if let Ok(from) = Name::parse(&e.peer) {
                out.unseen.push((from, e.message()));
            }
        }
        // At most as many in all as the session takes: the newest of each
        // file while there is room.
        let room = MAX_AWAITING_DISPLAY.saturating_sub(unshown_held);
        let skip = delivered_unshown.len().saturating_sub(room);
        let ids: Vec<Id> = delivered_unshown.into_iter().skip(skip).map(Id::from).collect();
        if !ids.is_empty() {
            unshown_held += ids.len();
            out.delivered_unshown.push((peer.clone(), ids));
        }
        let unacked: Vec<Message> = unacked.into_iter().map(Entry::message).collect();
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
///
/// What a peer sends again is what it holds unacknowledged: at most
/// [`MAX_UNACKED`] messages, and of those we can have stored only the
/// newest, since receipts go out in order and a lost link loses the last of
/// them. So the newest [`MAX_SEEN_IDS`] (twice that) received ids cover
/// it, however many bytes they take: the file is read backwards until it
/// has them (one group commit alone can be 32 MiB of text), at most
/// [`RECOVERY_TAIL_BYTES`] of it.
pub(crate) fn recent_ids(data_dir: &Path, peer: &Name) -> Vec<(Id, bool)> {
    let Ok(file) = File::open(History::path_of(data_dir, peer)) else {
        return Vec::new();
    };
    newest_received(file, MAX_SEEN_IDS, RECOVERY_TAIL_BYTES).unwrap_or_default()
}

/// A stored line as [`recent_ids`] needs it: its text is skipped, not kept.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum IdLine {
    Message { id: String, dir: Dir, state: State },
    State { id: String, state: State },
}

/// Displayed marks held at most while reading back for [`recent_ids`].
const MAX_DISPLAYED_HELD: usize = 4 * MAX_SEEN_IDS;

/// How much is read at a time, from the end backwards.
const BACKWARDS_CHUNK: usize = 1024 * 1024;

/// The newest `want` received ids in `file` (oldest first) with whether
/// each was shown, reading at most the last `max_bytes` of it.
fn newest_received(
    mut file: File,
    want: usize,
    max_bytes: u64,
) -> std::io::Result<Vec<(Id, bool)>> {
    use std::io::Read;
    let len = file.metadata()?.len();
    let floor = len.saturating_sub(max_bytes);
    let mut newest_first: Vec<(Id, bool)> = Vec::new();
    // Ids a later line marked displayed: met before their message line.
    let mut displayed: HashSet<String> = HashSet::new();
    // The start of the line the later chunk began inside.
    let mut carry: Vec<u8> = Vec::new();
    let mut end = len;
    while end > floor && newest_first.len() < want {
        let start = end.saturating_sub(BACKWARDS_CHUNK as u64).max(floor);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&carry);
        // The first piece may be a line that began before `start`: kept
        // for the next chunk, or, at the floor mid-file, a fragment.
        let first_end = chunk.iter().position(|&b| b == b'\n');
        let whole_from = match first_end {
            Some(i) if start > 0 => i + 1,
            Some(_) => 0,
            None if start > 0 => chunk.len(),
            None => 0,
        };
        for line in chunk[whole_from..].split(|&b| b == b'\n').rev() {
            match serde_json::from_slice::<IdLine>(line) {
                Ok(IdLine::State { id, state: State::Displayed }) => {
                    // Bounded like the rest: a file of little else than
                    // state lines ends the look back here.
                    if displayed.len() >= MAX_DISPLAYED_HELD {
                        end = floor;
                        break;
                    }
                    displayed.insert(id);
                }
                Ok(IdLine::Message { id, dir: Dir::In, state }) => {
                    let shown = matches!(state, State::Displayed) || displayed.contains(&id);
                    newest_first.push((id.into(), shown));
                    if newest_first.len() >= want {
                        break;
                    }
                }
                _ => {}
            }
        }
        if end == floor {
            break;
        }
        chunk.truncate(whole_from);
        carry = chunk;
        end = start;
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// What a restart must pick up from one file, oldest first: received
/// messages no display client has shown (the newest within the session's
/// caps for them), and ours never acknowledged (within its caps for
/// those). Holds only those while reading, whatever the file's size.
fn outstanding(reader: impl BufRead) -> Outstanding {
    let mut unseen = Waiting::new(MAX_UNDISPLAYED_MESSAGES, MAX_UNDISPLAYED_BYTES);
    let mut unacked = Waiting::new(MAX_UNACKED, MAX_UNACKED_BYTES);
    // Ids only (no text): what a `displayed` receipt may still name.
    let mut unshown = Waiting::new(MAX_AWAITING_DISPLAY, usize::MAX);
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        let Ok(line) = serde_json::from_slice::<Line>(&line) else {
            continue;
        };
        match line {
            Line::Message { id, dir, peer, text, at, seq, state } => {
                let now = MessageState::from(state);
                if dir == Dir::Out && matches!(now, MessageState::Sent | MessageState::Delivered) {
                    let (direction, text) = (dir.into(), String::new());
                    let (id, peer) = (id.clone(), peer.clone());
                    unshown.add(Entry { id, direction, peer, text, at_ms: at, seq, state: now });
                }
                let waiting = match (dir, now) {
                    (Dir::In, MessageState::Delivered) => &mut unseen,
                    (Dir::Out, MessageState::Sent) => &mut unacked,
                    _ => continue,
                };
                let (direction, state) = (dir.into(), state.into());
                waiting.add(Entry { id, direction, peer, text, at_ms: at, seq, state });
            }
            Line::State { id, state } => match MessageState::from(state) {
                MessageState::Displayed => {
                    unseen.settle(&id);
                    unacked.settle(&id);
                    unshown.settle(&id);
                }
                MessageState::Delivered => unacked.settle(&id),
                MessageState::Failed => {
                    unacked.settle(&id);
                    unshown.settle(&id);
                }
                _ => {}
            },
        }
    }
    let unacked = unacked.into_entries();
    // Those sent again come back with the conversation's own bookkeeping.
    let resent: HashSet<&str> = unacked.iter().map(|e| e.id.as_str()).collect();
    let unshown = unshown.into_entries().into_iter().map(|e| e.id);
    let delivered_unshown = unshown.filter(|id| !resent.contains(id.as_str())).collect();
    Outstanding { unseen: unseen.into_entries(), unacked, delivered_unshown }
}

/// What [`outstanding`] finds in one file, each oldest first.
struct Outstanding {
    /// Received messages no display client has shown.
    unseen: Vec<Entry>,
    /// Ours never acknowledged.
    unacked: Vec<Entry>,
    /// Ids of ours delivered and not yet reported displayed.
    delivered_unshown: Vec<String>,
}

/// Entries waiting for something (a display, a receipt), in the order
/// read, at most `max_count` of them and `max_bytes` of text: the oldest
/// go first when more come.
struct Waiting {
    /// Ids in the order read; some may have been settled since (dropped
    /// from here lazily).
    order: VecDeque<String>,
    by_id: HashMap<String, Entry>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl Waiting {
    fn new(max_count: usize, max_bytes: usize) -> Waiting {
        Waiting { order: VecDeque::new(), by_id: HashMap::new(), bytes: 0, max_count, max_bytes }
    }

    fn add(&mut self, entry: Entry) {
        if self.by_id.contains_key(&entry.id) {
            return;
        }
        self.bytes += entry.text.len();
        self.order.push_back(entry.id.clone());
        self.by_id.insert(entry.id.clone(), entry);
        while self.by_id.len() > self.max_count || self.bytes > self.max_bytes {
            let Some(oldest) = self.order.pop_front() else { break };
            self.settle(&oldest);
        }
    }

    fn settle(&mut self, id: &str) {
        if let Some(entry) = self.by_id.remove(id) {
            self.bytes -= entry.text.len();
        }
        // Settled ids leave `order` lazily; keep it within twice the rest.
        if self.order.len() > 2 * self.by_id.len() + 1024 {
            let by_id = &self.by_id;
            self.order.retain(|id| by_id.contains_key(id));
        }
    }

    fn into_entries(mut self) -> Vec<Entry> {
        self.order.iter().filter_map(|id| self.by_id.remove(id)).collect()
    }
}

/// Which entries a fold keeps: the newest `count` whose text fits in
/// `text_bytes`.
#[derive(Debug, Clone, Copy)]
struct Window {
    count: usize,
    text_bytes: usize,
}

/// Ids that left a fold's window remembered, newest: enough to recognise
/// a message stored again (the sender resends only what it had not heard
/// acknowledged, at most [`MAX_UNACKED`], and that soon after).
const GONE_REMEMBERED: usize = MAX_UNACKED;

/// Folds history lines into entries: message lines in order, state lines
/// applied to the message they name.
fn fold(reader: impl BufRead, window: Window) -> std::io::Result<Read> {
    // The newest messages within `window`; `index` maps their ids to their
    // number among all messages read (`left` of which have left the
    // window), `gone` the newest ids that left it: a message stored again
    // is not a new entry, even once its first line has left.
    let mut entries: VecDeque<Entry> = VecDeque::new();
    let mut text_bytes = 0usize;
    let mut index: HashMap<String, u64> = HashMap::new();
    let mut left: u64 = 0;
    let mut gone: HashSet<String> = HashSet::new();
    let mut gone_order: VecDeque<String> = VecDeque::new();
    for line in reader.split(b'\n') {
        let Ok(line) = serde_json::from_slice::<Line>(&line?) else {
            continue;
        };
        match line {
            Line::Message { id, dir, peer, text, at, seq, state } => {
                if index.contains_key(&id) || gone.contains(&id) {
                    continue;
                }
                index.insert(id.clone(), left + entries.len() as u64);
                text_bytes += text.len();
                entries.push_back(Entry {
                    id,
                    direction: dir.into(),
                    peer,
                    text,
                    at_ms: at,
                    seq,
                    state: state.into(),
                });
                while entries.len() > window.count || text_bytes > window.text_bytes {
                    let Some(old) = entries.pop_front() else { break };
                    text_bytes -= old.text.len();
                    index.remove(&old.id);
                    left += 1;
                    if gone_order.len() == GONE_REMEMBERED
                        && let Some(forgotten) = gone_order.pop_front()
                    {
                        gone.remove(&forgotten);
                    }
                    gone.insert(old.id.clone());
                    gone_order.push_back(old.id);
                }
            }
            Line::State { id, state } => {
                let at = index.get(&id).and_then(|&n| usize::try_from(n.checked_sub(left)?).ok());
                if let Some(e) = at.and_then(|i| entries.get_mut(i)) {
                    e.state = upgrade(e.state, state.into());
                }
            }
        }
    }
    Ok(Read { entries: entries.into(), older: left })
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

    /// The note of the conversation to redial after a crash: written
    /// beside the history, read back by the next start, gone once ended.
    #[test]
    fn the_conversation_note_survives_a_crash_and_goes_when_it_ends() {
        let dir = tmp();
        let bob = Name::parse("Bob").expect("valid");
        let mut h = History::open(&dir).expect("open");
        h.append(&Record::Resumable { peer: Some(bob.clone()) });
        h.flush().expect("flush");
        assert_eq!(recover(&dir).resumable, Some(bob));
        assert!(recover(&dir).unacked.is_empty(), "the note is no history");
        h.append(&Record::Resumable { peer: None });
        h.flush().expect("flush");
        assert_eq!(recover(&dir).resumable, None);
        assert!(!resumable_path(&dir).exists());
        // A damaged note is no conversation.
        std::fs::write(resumable_path(&dir), "not a name!\n").expect("write");
        assert_eq!(recover(&dir).resumable, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn received(h: &mut History, peer: &Name, id: &str, text: &str) {
        h.append(&Record::Message {
            peer: peer.clone(),
            direction: Direction::In,
            message: message(id, text),
            state: MessageState::Delivered,
        });
    }

    /// A crash mid-write leaves a torn last line; the next run's first line
    /// must not be glued to it (it would be unreadable, and with it a
    /// message acknowledged or waiting to be sent).
    #[test]
    fn a_torn_last_line_does_not_swallow_the_next_runs_first_line() {
        let dir = tmp();
        let bob = name("bob");
        let mut h = History::open(&dir).expect("open");
        received(&mut h, &bob, "a", "before the crash");
        h.flush().expect("flush");
        drop(h);
        let path = History::path_of(&dir, &bob);
        let mut file = OpenOptions::new().append(true).open(&path).expect("the file");
        file.write_all(br#"{"kind":"message","id":"torn","dir":"in","pe"#).expect("tear");
        drop(file);

        let mut h = History::open(&dir).expect("open again");
        received(&mut h, &bob, "b", "after the restart");
        h.flush().expect("flush");
        let ids: Vec<String> =
            read(&dir, &bob, 50).expect("read").entries.into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(recent_ids(&dir, &bob), [("a".into(), false), ("b".into(), false)]);
        // A file that ends whole gets no empty line.
        drop(h);
        let before = std::fs::read(&path).expect("read");
        let mut h = History::open(&dir).expect("open a third time");
        received(&mut h, &bob, "c", "again");
        h.flush().expect("flush");
        let after = std::fs::read(&path).expect("read");
        assert!(!after[before.len()..].starts_with(b"\n"), "an empty line was added");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A line this run left half written (a full disk) is finished by the
    /// retry, also when the file was closed and opened again meanwhile:
    /// only the first open of a run ends a torn line.
    #[test]
    fn a_reopen_in_the_same_run_does_not_cut_a_half_written_line() {
        let dir = tmp();
        let bob = name("bob");
        let mut h = History::open(&dir).expect("open");
        received(&mut h, &bob, "a", "first");
        h.flush().expect("flush");
        // The first half of a line reached the file; the rest waits.
        let mut line = Vec::new();
        write_line(
            &mut line,
            &Record::Message {
                peer: bob.clone(),
                direction: Direction::In,
                message: message("b", "second"),
                state: MessageState::Delivered,
            },
        );
        let (half, rest) = line.split_at(20);
        let path = History::path_of(&dir, &bob);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(half))
            .expect("half");
        // Other peers' files push bob's out of the open ones.
        for other in ["carol", "dave", "erin", "frank"] {
            received(&mut h, &name(other), "x", "hi");
        }
        h.flush().expect("flush the others");
        assert!(!h.files.contains_key(&bob), "bob's file was closed");
        h.pending.push((bob.clone(), rest.to_vec()));
        h.flush().expect("the rest");
        let ids: Vec<String> =
            read(&dir, &bob, 10).expect("read").entries.into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["a", "b"]);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// One group commit can hold far more than a few MiB of received text;
    /// every id of it must be recognised when the peer sends it again.
    #[test]
    fn recent_ids_reach_back_by_count_not_by_a_few_mib() {
        let dir = tmp();
        let bob = name("bob");
        let mut h = History::open(&dir).expect("open");
        let text = "x".repeat(peerchat_core::MAX_TEXT_BYTES);
        let n = 150; // 9.4 MiB, across many chunks, lines across their edges
        for i in 0..n {
            received(&mut h, &bob, &format!("m{i:03}"), &text);
        }
        h.append(&Record::Message {
            peer: bob.clone(),
            direction: Direction::Out,
            message: message("ours", "a reply"),
            state: MessageState::Sent,
        });
        h.append(&Record::State {
            peer: bob.clone(),
            id: "m007".into(),
            state: MessageState::Displayed,
        });
        h.flush().expect("flush");
        let ids = recent_ids(&dir, &bob);
        let want: Vec<(Id, bool)> = (0..n).map(|i| (format!("m{i:03}").into(), i == 7)).collect();
        assert_eq!(ids, want);

        // At most `want` of the newest; at most `max_bytes`, from a whole line.
        let file = || File::open(History::path_of(&dir, &bob)).expect("the file");
        let newest = newest_received(file(), 3, u64::MAX).expect("read");
        let ids: Vec<String> = newest.into_iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(ids, ["m147", "m148", "m149"]);
        let line = text.len() as u64 + 200;
        let newest = newest_received(file(), usize::MAX, 2 * line + 1000).expect("read");
        let ids: Vec<String> = newest.into_iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(ids, ["m148", "m149"], "the cut line is left out");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// One peer's file that cannot be written does not keep the others'
    /// lines from theirs; its own lines wait and go once it can.
    #[test]
    fn a_file_that_cannot_be_written_holds_up_only_its_own_lines() {
        let dir = tmp();
        let mut h = History::open(&dir).expect("open");
        let (bob, carol) = (name("bob"), name("carol"));
        // A folder where carol's file should be.
        std::fs::create_dir_all(History::path_of(&dir, &carol)).expect("a folder in the way");
        received(&mut h, &carol, "c1", "for carol's file");
        received(&mut h, &bob, "b1", "for bob's file");
        let stuck = h.flush().expect_err("carol's file cannot be opened");
        assert_eq!(stuck.peers, std::slice::from_ref(&carol));
        let ids = |peer: &Name| -> Vec<String> {
            read(&dir, peer, 10).expect("read").entries.into_iter().map(|e| e.id).collect()
        };
        assert_eq!(ids(&bob), ["b1"]);
        received(&mut h, &bob, "b2", "more for bob");
        assert_eq!(h.flush().expect_err("still stuck").peers, std::slice::from_ref(&carol));
        assert_eq!(ids(&bob), ["b1", "b2"]);
        std::fs::remove_dir(History::path_of(&dir, &carol)).expect("out of the way");
        h.flush().expect("carol's lines go now");
        assert_eq!(ids(&carol), ["c1"]);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// `history` with no name after a restart: the conversation that
    /// started last, though nothing was said in it.
    #[test]
    fn the_last_conversation_is_the_last_peer_without_a_message() {
        let dir = tmp();
        let mut h = History::open(&dir).expect("open");
        received(&mut h, &name("carol"), "c", "hi");
        h.flush().expect("flush");
        let carol = History::path_of(&dir, &name("carol"));
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        File::options()
            .append(true)
            .open(&carol)
            .and_then(|f| f.set_modified(long_ago))
            .expect("age");
        assert_eq!(last_peer(&dir), Some(name("carol")));
        h.touch(&name("bob"));
        assert_eq!(last_peer(&dir), Some(name("bob")));
        assert_eq!(read(&dir, &name("bob"), 10).expect("read").entries.len(), 0);
        std::fs::remove_dir_all(&dir).ok();
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
        let got = read(&dir, &name("bob"), 50).expect("read").entries;
        // Private, whatever the umask: the folder 0700, the file 0600.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("there").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("history")), 0o700);
        assert_eq!(mode(&History::path_of(&dir, &bob)), 0o600);
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
        let newest = read(&dir, &bob, 1).expect("read").entries;
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].id, "b");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A `displayed` receipt may come long after `delivered` (the peer's
    /// user looks later, and the receipt waits for a conversation): our
    /// restart must still believe it for the messages delivered before.
    #[test]
    fn recovery_finds_ours_delivered_and_not_yet_displayed() {
        let dir = tmp();
        let mut h = History::open(&dir).expect("open");
        let bob = name("bob");
        let sent = |h: &mut History, id: &str| {
            h.append(&Record::Message {
                peer: bob.clone(),
                direction: Direction::Out,
                message: message(id, "hi"),
                state: MessageState::Sent,
            });
        };
        let state = |h: &mut History, id: &str, state: MessageState| {
            h.append(&Record::State { peer: bob.clone(), id: id.into(), state });
        };
        for id in ["delivered", "displayed", "unacked", "failed", "shown-at-once"] {
            sent(&mut h, id);
        }
        state(&mut h, "delivered", MessageState::Delivered);
        state(&mut h, "displayed", MessageState::Delivered);
        state(&mut h, "displayed", MessageState::Displayed);
        state(&mut h, "failed", MessageState::Failed);
        state(&mut h, "shown-at-once", MessageState::Displayed);
        received(&mut h, &bob, "theirs", "hello");
        h.flush().expect("flush");
        let recovered = recover(&dir);
        let unshown: Vec<(String, Vec<String>)> = recovered
            .delivered_unshown
            .into_iter()
            .map(|(peer, ids)| (peer.to_string(), ids.iter().map(ToString::to_string).collect()))
            .collect();
        assert_eq!(unshown, [("bob".to_owned(), vec!["delivered".to_owned()])]);
        let unacked: Vec<&str> = recovered.unacked[0].1.iter().map(|m| &*m.id).collect();
        assert_eq!(unacked, ["unacked"], "sent again, so not among the unshown");
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
    fn recovery_finds_every_unacknowledged_message_the_session_may_hold() {
        let dir = tmp();
        let mut h = History::open(&dir).expect("open");
        let bob = name("bob");
        let text = "x".repeat(peerchat_core::MAX_TEXT_BYTES);
        let n = MAX_UNACKED_BYTES / text.len() - 12; // 500: 4 MiB held 63
        for i in 0..n {
            h.append(&Record::Message {
                peer: bob.clone(),
                direction: Direction::Out,
                message: Message {
                    id: format!("m{i}").into(),
                    text: text.as_str().into(),
                    sent_at_ms: i as i64,
                    seq: i as u64 + 1,
                },
                state: MessageState::Sent,
            });
            // Every tenth was acknowledged; and bob's answers come between.
            if i % 10 == 0 {
                let id = format!("m{i}").into();
                h.append(&Record::State { peer: bob.clone(), id, state: MessageState::Delivered });
                h.append(&Record::Message {
                    peer: bob.clone(),
                    direction: Direction::In,
                    message: message(&format!("r{i}"), "ok"),
                    state: MessageState::Delivered,
                });
                let id = format!("r{i}").into();
                h.append(&Record::State { peer: bob.clone(), id, state: MessageState::Displayed });
            }
        }
        h.flush().expect("flush");
        let recovered = recover(&dir);
        assert!(recovered.unseen.is_empty(), "every answer was shown");
        let [(peer, unacked)] = &recovered.unacked[..] else {
            panic!("one peer's unacknowledged: {:?}", recovered.unacked.len());
        };
        assert_eq!(peer, &bob);
        let ids: Vec<String> = unacked.iter().map(|m| m.id.to_string()).collect();
        let want: Vec<String> = (0..n).filter(|i| i % 10 != 0).map(|i| format!("m{i}")).collect();
        assert_eq!(ids, want, "all of them, oldest first");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_read_holds_the_newest_that_fit_and_counts_the_older() {
        let bob = name("bob");
        let mut file = Vec::new();
        for (id, text) in [("a", "1234"), ("b", "12345678"), ("c", "12"), ("d", "1234")] {
            let message = message(id, text);
            let record = Record::Message {
                peer: bob.clone(),
                direction: Direction::In,
                message,
                state: MessageState::Delivered,
            };
            write_line(&mut file, &record);
        }
        let read = |count, text_bytes| {
            let read =
                fold(std::io::Cursor::new(&file), Window { count, text_bytes }).expect("read");
            (read.entries.into_iter().map(|e| e.id).collect::<Vec<_>>(), read.older)
        };
        assert_eq!(read(10, 6), (vec!["c".to_owned(), "d".to_owned()], 2));
        assert_eq!(read(10, 14), (vec!["b".to_owned(), "c".to_owned(), "d".to_owned()], 1));
        assert_eq!(read(1, 100), (vec!["d".to_owned()], 3));
        assert_eq!(read(10, 100).1, 0);
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
            fold(std::io::Cursor::new(&file), Window { count: keep, text_bytes: usize::MAX })
                .expect("read")
                .entries
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
        assert_eq!(read(&dir, &bob, 50).expect("read").entries.len(), 1);
        assert!(read(&dir, &name("nobody"), 50).expect("missing is empty").entries.is_empty());
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
